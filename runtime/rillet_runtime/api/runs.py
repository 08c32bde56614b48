"""The runs of the native API: rejoin one from any worker (resumable streams), or cancel
one. A run belongs to the principal that started it; anyone else gets 404."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from sse_starlette import EventSourceResponse

from rillet_runtime.api.deps import (
    PrincipalDep,
    RuntimeDep,
    admit_follower,
    get_principal,
)
from rillet_runtime.api.errors import ERROR_RESPONSES, ApiError
from rillet_runtime.api.sse import ClosingEventSourceResponse, sse_events
from rillet_runtime.app_state import Runtime
from rillet_runtime.auth import Principal

router = APIRouter(
    prefix="/v1", tags=["runs"], dependencies=[Depends(get_principal)], responses=ERROR_RESPONSES
)

RunIdPath = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$")]
LastEventId = Annotated[str, Header(alias="Last-Event-ID", pattern=r"^\d{0,9}$")]


async def _own_run(runtime: Runtime, principal: Principal, run_id: str) -> None:
    if await runtime.runs.owner(run_id) != principal.key:
        raise ApiError(
            404, "run_not_found", f"run {run_id!r} is unknown or expired", param="run_id"
        )


@router.get("/runs/{run_id}/stream", responses={200: {"content": {"text/event-stream": {}}}})
async def resume_stream(
    run_id: RunIdPath,
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    last_event_id: LastEventId = "",
) -> EventSourceResponse:
    """Replay a run's events after `Last-Event-ID`, then follow it live, from any worker."""
    if not runtime.resumable:
        raise ApiError(404, "resume_unavailable", "resumable streams need the Redis state store")
    await _own_run(runtime, principal, run_id)
    events = await runtime.run_log.follow(run_id, int(last_event_id or 0))
    if events is None:
        raise ApiError(
            404, "run_not_found", f"run {run_id!r} is unknown or expired", param="run_id"
        )
    followed = await admit_follower(runtime, request, principal, events)
    heartbeat = runtime.settings.streaming.heartbeat_seconds
    return ClosingEventSourceResponse(sse_events(followed.events), followed.close, heartbeat)


@router.post("/runs/{run_id}/cancel", status_code=202)
async def cancel_run(run_id: RunIdPath, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    """Stop a run of yours, on whichever worker runs it; its stream ends with `run_cancelled`.
    Accepted, not awaited: the run stops within about a second."""
    await _own_run(runtime, principal, run_id)
    await runtime.runs.request_cancel(run_id)
    return Response(status_code=202)
