"""The typed state the lifespan yields: what every request may use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.pregel import Pregel

from rillet_runtime.admission import Admission
from rillet_runtime.auth import Authenticator
from rillet_runtime.settings import Settings
from rillet_runtime.state.limits import Limiter
from rillet_runtime.state.run_log import RunLog
from rillet_runtime.state.runs import RunRegistry


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
    run_log: RunLog | None  # set when runs are resumable (Redis state)


class LifespanState(TypedDict):
    runtime: Runtime
