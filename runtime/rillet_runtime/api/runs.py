"""`GET /v1/runs/{run_id}/stream`: rejoin a run from any worker (resumable streams)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path
from sse_starlette import EventSourceResponse

from rillet_runtime.api.deps import RuntimeDep
from rillet_runtime.api.errors import ApiError
from rillet_runtime.api.sse import sse_events

router = APIRouter(prefix="/v1", tags=["runs"])

LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", pattern=r"^\d{1,9}$")]


@router.get("/runs/{run_id}/stream", responses={200: {"content": {"text/event-stream": {}}}})
async def resume_stream(
    run_id: Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$")],
    runtime: RuntimeDep,
    last_event_id: LastEventId = None,
) -> EventSourceResponse:
    """Replay a run's events after `Last-Event-ID`, then follow it live, from any worker."""
    if runtime.run_log is None:
        raise ApiError(404, "resume_unavailable", "resumable streams need the Redis state store")
    events = await runtime.run_log.follow(run_id, int(last_event_id or 0))
    if events is None:
        raise ApiError(
            404, "run_not_found", f"run {run_id!r} is unknown or expired", param="run_id"
        )
    return EventSourceResponse(
        sse_events(events), ping=runtime.settings.streaming.heartbeat_seconds, sep="\n"
    )
