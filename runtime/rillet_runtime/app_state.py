"""The typed state the lifespan yields: what every request may use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.pregel import Pregel

from rillet_runtime.admission import Admission
from rillet_runtime.auth import Authenticator
from rillet_runtime.settings import Settings
from rillet_runtime.state.caches import ResponseCache
from rillet_runtime.state.limits import Limiter
from rillet_runtime.state.run_log import RunLog
from rillet_runtime.state.runs import RunRegistry
from rillet_runtime.state.threads import ThreadStore


@dataclass(frozen=True)
class Runtime:
    """Built once per worker process by the lifespan."""

    settings: Settings
    admission: Admission
    authenticator: Authenticator
    graph: Pregel[Any, Any, Any, Any]
    checkpointer: BaseCheckpointSaver[Any]
    limiter: Limiter
    runs: RunRegistry
    run_log: RunLog  # on Redis (shared by every worker) or in the worker
    threads: ThreadStore
    response_cache: ResponseCache | None = None  # what a thread's delete clears of it

    @property
    def resumable(self) -> bool:
        """Native streams are logged for resuming from any worker (Redis state)."""
        return self.run_log.shared and self.settings.streaming.resumable


class LifespanState(TypedDict):
    runtime: Runtime
