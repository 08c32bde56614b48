"""Runs of LangGraph's API: streamed, waited for, or in the background; listed, joined,
rejoined and cancelled.

Every run goes through the native API's machinery (`running.start`: the worker's stream
cap, the principal's limits, the thread's lease with the multitask strategy; the streaming
core with its bounded queue and coalescing) and is published to the run log, so a client
that lost its connection rejoins it from any worker (Redis) and a background run has
somewhere to write.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import anyio
import redis
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from sse_starlette import EventSourceResponse

from rillet_runtime.api.deps import (
    PrincipalDep,
    RuntimeDep,
    admit_follower,
    admit_stream,
    get_principal,
)
from rillet_runtime.api.errors import ERROR_RESPONSES, ApiError, require_json
from rillet_runtime.api.langgraph.models import THREAD_ID_PATTERN, RunCreate
from rillet_runtime.api.langgraph.running import (
    finish,
    grace_for,
    prepare,
    publish,
    response_headers,
    shown_thread,
    start,
)
from rillet_runtime.api.langgraph.shapes import run_json
from rillet_runtime.api.langgraph.threads import own_thread
from rillet_runtime.api.sse import (
    ClosingEventSourceResponse,
    ClosingStreamingResponse,
    closer,
    from_origin,
    sse_events,
)
from rillet_runtime.app_state import Runtime
from rillet_runtime.auth import Principal
from rillet_runtime.events import RunEvent, dumps_data
from rillet_runtime.state.threads import RunRecord, RunStatus, now_iso

router = APIRouter(
    tags=["langgraph: runs"], dependencies=[Depends(get_principal)], responses=ERROR_RESPONSES
)
ThreadIdPath = Annotated[str, Path(pattern=THREAD_ID_PATTERN)]
RunIdPath = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$")]
LastEventId = Annotated[str, Header(alias="Last-Event-ID", pattern=r"^(-1|\d{1,9})?$")]
json_body = [Depends(require_json)]

ACTIVE: frozenset[RunStatus] = frozenset({"pending", "running"})
KEEPALIVE_SECONDS = 5.0  # a waiting JSON answer sends a newline this often (valid JSON)
SILENT_SECONDS = 5.0  # a running run's publisher beats each second; its key lives 3 s


# --- answers ------------------------------------------------------------------------------


def _error_result(error: dict[str, Any]) -> dict[str, Any]:
    return {"__error__": {"error": error["error"], "message": error["message"]}}


async def _result_of_events(origin: asyncio.Queue[RunEvent | None]) -> Any:
    """What `wait` answers: the last values (with `__interrupt__` at an interrupt), or
    `__error__`."""
    result: Any = {}
    while (event := await origin.get()) is not None:
        if event.event == "values":
            result = event.data
        elif event.event == "error":
            return _error_result(event.data)
    return result


async def _result_of_thread(
    runtime: Runtime, principal: Principal, thread_id: str, run: RunRecord
) -> Any:
    """What `join` answers once the run is over: the thread's values as it left them."""
    record, snapshot = await own_thread(runtime, principal, thread_id)
    if run.status == "error" and record.error is not None:
        return _error_result(record.error)
    values = snapshot.values if isinstance(snapshot.values, dict) else {}
    if snapshot.interrupts:
        interrupts = [{"value": i.value, "id": i.id} for i in snapshot.interrupts]
        return {**values, "__interrupt__": interrupts}
    return values


def _json_when_ready(
    result: Callable[[], Awaitable[Any]],
    headers: dict[str, str],
    detach: Callable[[], None] | None = None,
) -> ClosingStreamingResponse:
    """One JSON document, preceded by a newline every few seconds while it is computed
    (what LangGraph's server does, so proxies do not cut a long wait). `detach` runs when
    the response ends, however it ends."""

    async def body() -> AsyncIterator[bytes]:
        task = asyncio.ensure_future(result())
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=KEEPALIVE_SECONDS)
                if done:
                    yield dumps_data(task.result())
                    return
                yield b"\n"
        finally:
            task.cancel()

    return ClosingStreamingResponse(body(), closer(detach or _nothing), headers)


def _nothing() -> None:
    return None


async def _own_run(
    runtime: Runtime, principal: Principal, thread_id: str, run_id: str
) -> RunRecord:
    run = await runtime.threads.get_run(principal.key, thread_id, run_id)
    if run is None:
        raise ApiError(404, "run_not_found", f"Run {run_id} not found", param="run_id")
    return run


async def _when_over(
    runtime: Runtime, principal: Principal, thread_id: str, run_id: str
) -> RunRecord:
    """The run's record once it has ended (any worker may run it: its record is shared).
    A record that says running while nobody publishes the run (its worker died before it
    could write the end) is the run interrupted, and written so."""
    pause, silent_since = 0.05, None
    while (run := await _own_run(runtime, principal, thread_id, run_id)).status in ACTIVE:
        if run.status == "running" and not await runtime.run_log.alive(run_id):
            silent_since = silent_since or time.monotonic()
            if time.monotonic() - silent_since > SILENT_SECONDS:
                run.status, run.updated_at = "interrupted", now_iso()
                await runtime.threads.put_run(principal.key, run)
                return run
        else:
            silent_since = None
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)
    return run


async def _joined(runtime: Runtime, principal: Principal, thread_id: str, run_id: str) -> Any:
    """What `join` answers; a run forgotten meanwhile (rolled back) is an `__error__`."""
    try:
        run = await _when_over(runtime, principal, thread_id, run_id)
    except ApiError as gone:
        return _error_result({"error": gone.code, "message": str(gone.detail)})
    return await _result_of_thread(runtime, principal, thread_id, run)


# --- routes ----------------------------------------------------------------------------------


async def _stream(
    request: Request,
    runtime: Runtime,
    principal: Principal,
    body: RunCreate,
    thread_id: str | None,
) -> EventSourceResponse:
    prepared = await prepare(runtime, principal, body, thread_id, "langgraph_stream")
    started = await start(runtime, principal, prepared, request.is_disconnected)
    origin, detach = publish(runtime, started, grace_for(runtime, body))
    headers = response_headers(shown_thread(prepared), started.request.run_id, "/stream")
    heartbeat = runtime.settings.streaming.heartbeat_seconds
    return ClosingEventSourceResponse(
        from_origin(origin, detach), closer(detach), heartbeat, headers
    )


@router.post("/threads/{thread_id}/runs/stream", dependencies=json_body)
async def stream_run(
    thread_id: ThreadIdPath,
    body: RunCreate,
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
) -> EventSourceResponse:
    """Run on the thread and stream it: `metadata`, one event per stream mode's chunk
    (`mode|namespace` inside subgraphs), then `end` or `error`."""
    return await _stream(request, runtime, principal, body, thread_id)


@router.post("/runs/stream", dependencies=json_body)
async def stream_threadless_run(
    body: RunCreate, request: Request, runtime: RuntimeDep, principal: PrincipalDep
) -> EventSourceResponse:
    """Run on a new thread of its own, deleted after (`on_completion: keep` keeps it)."""
    return await _stream(request, runtime, principal, body, None)


async def _wait(
    request: Request,
    runtime: Runtime,
    principal: Principal,
    body: RunCreate,
    thread_id: str | None,
) -> StreamingResponse:
    body = body.model_copy(update={"stream_mode": ["values"]})
    prepared = await prepare(runtime, principal, body, thread_id, "langgraph_wait")
    started = await start(runtime, principal, prepared, request.is_disconnected)
    origin, detach = publish(runtime, started, grace_for(runtime, body))
    headers = response_headers(shown_thread(prepared), started.request.run_id, "/join")
    return _json_when_ready(lambda: _result_of_events(origin), headers, detach)


@router.post("/threads/{thread_id}/runs/wait", dependencies=json_body)
async def wait_run(
    thread_id: ThreadIdPath,
    body: RunCreate,
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
) -> StreamingResponse:
    """Run on the thread and answer its final values (`__error__` if it failed)."""
    return await _wait(request, runtime, principal, body, thread_id)


@router.post("/runs/wait", dependencies=json_body)
async def wait_threadless_run(
    body: RunCreate, request: Request, runtime: RuntimeDep, principal: PrincipalDep
) -> StreamingResponse:
    return await _wait(request, runtime, principal, body, None)


async def _never_gone() -> bool:
    return False  # a background run has no client to lose


async def _background(
    runtime: Runtime, principal: Principal, body: RunCreate, thread_id: str | None
) -> JSONResponse:
    """Runs to its end with nobody listening (its events are logged for `join` and
    `join_stream`). On a busy thread with `enqueue` it is answered `pending` at once and
    waits for the thread in the background, holding a worker slot."""
    prepared = await prepare(runtime, principal, body, thread_id, "langgraph_background")
    run_id = prepared.run.run_id
    headers = response_headers(shown_thread(prepared), run_id, None)
    if body.multitask_strategy != "enqueue":
        started = await start(runtime, principal, prepared, _never_gone)
        runtime.run_log.publish(run_id, started.events, None, None)
        return JSONResponse(run_json(prepared.record), headers=headers)

    slot = admit_stream(runtime, prepared.run.endpoint)
    try:
        if prepared.keep_thread:
            await runtime.threads.put_thread(principal.key, prepared.thread)
            await runtime.threads.put_run(principal.key, prepared.record)
    except BaseException:
        slot.release()
        raise

    async def when_admitted() -> None:
        try:
            started = await start(runtime, principal, prepared, _never_gone, slot)
        except ApiError as refused:  # limits, the wait for the thread, a cancel
            status: RunStatus = "interrupted" if refused.status_code == 499 else "error"
            failure = {"error": refused.code, "message": str(refused.detail)}
            await finish(runtime, principal, prepared, status, failure)
            return
        except BaseException:  # the worker stops, or the state store failed
            with anyio.CancelScope(shield=True):
                await finish(runtime, principal, prepared, "interrupted", None)
            raise
        runtime.run_log.publish(run_id, started.events, None, None)

    runtime.run_log.spawn(when_admitted(), f"enqueued-{run_id}")
    return JSONResponse(run_json(prepared.record), headers=headers)


@router.post("/threads/{thread_id}/runs", dependencies=json_body)
async def create_run(
    thread_id: ThreadIdPath, body: RunCreate, runtime: RuntimeDep, principal: PrincipalDep
) -> JSONResponse:
    """Start a run in the background; `join` or `join_stream` it later."""
    return await _background(runtime, principal, body, thread_id)


@router.post("/runs", dependencies=json_body)
async def create_threadless_run(
    body: RunCreate, runtime: RuntimeDep, principal: PrincipalDep
) -> JSONResponse:
    return await _background(runtime, principal, body, None)


@router.get("/threads/{thread_id}/runs")
async def list_runs(
    thread_id: ThreadIdPath,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    offset: Annotated[int, Query(ge=0)] = 0,
    status: Annotated[RunStatus | None, Query()] = None,
) -> list[dict[str, Any]]:
    await own_thread(runtime, principal, thread_id)
    runs = await runtime.threads.runs(principal.key, thread_id)
    matching = [run for run in runs if status is None or run.status == status]
    return [run_json(run) for run in matching[offset : offset + limit]]


@router.get("/threads/{thread_id}/runs/{run_id}")
async def get_run(
    thread_id: ThreadIdPath, run_id: RunIdPath, runtime: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    return run_json(await _own_run(runtime, principal, thread_id, run_id))


@router.get("/threads/{thread_id}/runs/{run_id}/join")
async def join_run(
    thread_id: ThreadIdPath, run_id: RunIdPath, runtime: RuntimeDep, principal: PrincipalDep
) -> StreamingResponse:
    """Wait for the run to end and answer the thread's values, as `wait` does."""
    await _own_run(runtime, principal, thread_id, run_id)
    return _json_when_ready(
        lambda: _joined(runtime, principal, thread_id, run_id),
        response_headers(thread_id, run_id, "/join"),
    )


def _base_mode(event: str) -> str:
    return event.split("|", 1)[0]


async def _only_modes(
    events: AsyncGenerator[RunEvent], modes: set[str]
) -> AsyncGenerator[RunEvent]:
    async with contextlib.aclosing(events):
        async for event in events:
            if _base_mode(event.event) in modes or event.event in ("metadata", "end", "error"):
                yield event


async def _cancel_if_left(
    events: AsyncGenerator[RunEvent], runtime: Runtime, run_id: str
) -> AsyncGenerator[RunEvent]:
    """`cancel_on_disconnect`: a follower that leaves before the end stops the run."""
    ended = False
    try:
        async with contextlib.aclosing(events):
            async for event in events:
                ended = event.event in ("end", "error")
                yield event
    finally:
        if not ended:
            with anyio.CancelScope(shield=True), contextlib.suppress(redis.RedisError):
                await runtime.runs.request_cancel(run_id)


@router.get(
    "/threads/{thread_id}/runs/{run_id}/stream",
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def join_stream(
    thread_id: ThreadIdPath,
    run_id: RunIdPath,
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    last_event_id: LastEventId = "",
    stream_mode: Annotated[list[str] | None, Query()] = None,
    cancel_on_disconnect: Annotated[bool, Query()] = False,
) -> EventSourceResponse:
    """Follow a run from any worker: after `Last-Event-ID` (`-1`: from its start), or from
    now on without one; ends with the run."""
    pause = 0.05
    while (await _own_run(runtime, principal, thread_id, run_id)).status == "pending":
        await asyncio.sleep(pause)  # queued for its thread: nothing to follow yet
        pause = min(pause * 2, 0.5)
    after = max(0, int(last_event_id)) if last_event_id else None
    events = await runtime.run_log.follow(run_id, after)
    if events is None:
        raise ApiError(
            404, "run_not_found", f"run {run_id} has no events to follow", param="run_id"
        )
    modes = {m.replace("messages-tuple", "messages") for m in stream_mode or [] if m}
    if modes:
        events = _only_modes(events, modes)
    if cancel_on_disconnect:
        events = _cancel_if_left(events, runtime, run_id)
    followed = await admit_follower(runtime, request, principal, events)
    return ClosingEventSourceResponse(
        sse_events(followed.events),
        followed.close,
        runtime.settings.streaming.heartbeat_seconds,
        headers=response_headers(thread_id, run_id, "/stream"),
    )


@router.post("/threads/{thread_id}/runs/{run_id}/cancel", response_model=None)
async def cancel_run(
    thread_id: ThreadIdPath,
    run_id: RunIdPath,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    wait: Annotated[bool, Query()] = False,
    action: Annotated[
        str, Query(max_length=32, description="rollback, else interrupt")
    ] = "interrupt",
) -> Response:
    """Stop a run on whichever worker runs it (within about a second). `rollback` also
    forgets it: its record and the checkpoints it wrote. `wait`: answer once it stopped."""
    run = await _own_run(runtime, principal, thread_id, run_id)
    if run.status not in ACTIVE:
        raise ApiError(
            404, "run_not_active", f"run {run_id} is not pending or running", param="run_id"
        )
    await runtime.runs.request_cancel(run_id)

    async def rolled_back() -> None:
        await _when_over(runtime, principal, thread_id, run_id)
        await runtime.checkpointer.adelete_for_runs([run_id])
        await runtime.threads.delete_run(principal.key, thread_id, run_id)

    async def stopped() -> Any:
        if action == "rollback":
            await rolled_back()
            return {}
        return await _joined(runtime, principal, thread_id, run_id)

    if wait:
        return _json_when_ready(stopped, response_headers(thread_id, run_id, "/join"))
    if action == "rollback":
        runtime.run_log.spawn(rolled_back(), f"rollback-{run_id}")
    return Response(status_code=202)
