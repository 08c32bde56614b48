"""What every chat endpoint depends on: the worker's runtime, admission, a new run, and
collecting a run into one answer for the non-streaming endpoints."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from langchain_core.runnables import RunnableConfig

from rillet_runtime.admission import StreamSlot
from rillet_runtime.api.errors import ApiError
from rillet_runtime.app_state import Runtime
from rillet_runtime.events import RunEvent
from rillet_runtime.llm.timing import LLMStageTimer
from rillet_runtime.metrics import REQUESTS
from rillet_runtime.streaming import RunRequest, run_events

# Error codes of a failed run, as the status of a non-streaming answer.
_STATUS_BY_CODE = {
    "provider_unavailable": 503,
    "state_unavailable": 503,
    "provider_rate_limited": 503,
    "provider_timeout": 504,
    "stream_timeout": 504,
    "provider_error": 502,
}


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def admit_stream(runtime: Runtime, endpoint: str) -> StreamSlot:
    """A slot for one more stream, or 503 with Retry-After: never a hung connection."""
    admission = runtime.admission
    retry_after = {"Retry-After": str(runtime.settings.server.retry_after_seconds)}
    if admission.draining:
        REQUESTS.labels(endpoint, "rejected_draining").inc()
        raise ApiError(
            503, "draining", "this instance is shutting down; retry", headers=retry_after
        )
    slot = admission.admit()
    if slot is None:
        REQUESTS.labels(endpoint, "rejected_capacity").inc()
        raise ApiError(
            503, "over_capacity", "too many concurrent streams; retry", headers=retry_after
        )
    return slot


def new_run(
    runtime: Runtime, graph_input: Any, thread_id: str, endpoint: str, tenant: str | None = None
) -> RunRequest:
    run_id = uuid.uuid4()
    config: RunnableConfig = {
        # run_id in `configurable` too: checkpoint metadata records it (delete_for_runs).
        "configurable": {"thread_id": thread_id, "tenant": tenant, "run_id": str(run_id)},
        "run_id": run_id,
        "callbacks": [LLMStageTimer()],
    }
    return RunRequest(
        graph=runtime.graph,
        graph_input=graph_input,
        config=config,
        thread_id=thread_id,
        run_id=str(run_id),
        endpoint=endpoint,
    )


def events_for(runtime: Runtime, run: RunRequest, slot: StreamSlot) -> AsyncIterator[RunEvent]:
    settings = runtime.settings
    return run_events(run, settings.streaming, settings.server.max_stream_seconds, slot)


@dataclass
class CollectedRun:
    """A whole run gathered for the non-streaming endpoints."""

    run_id: str = ""
    thread_id: str = ""
    chunks: list[str] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    done: dict[str, Any] = field(default_factory=dict)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def answer(self) -> str:
        return "".join(self.chunks)


async def collect(events: AsyncIterator[RunEvent]) -> CollectedRun:
    collected = CollectedRun()
    async for event in events:
        match event.event:
            case "metadata":
                collected.run_id = event.data["run_id"]
                collected.thread_id = event.data["thread_id"]
            case "token":
                collected.chunks.append(event.data["text"])
            case "sources":
                collected.sources = event.data["sources"]
            case "done":
                collected.done = event.data
            case "error":
                status = _STATUS_BY_CODE.get(event.data["code"], 500)
                raise ApiError(status, event.data["code"], event.data["message"])
    return collected
