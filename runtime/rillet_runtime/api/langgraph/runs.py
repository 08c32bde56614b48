"""Runs of LangGraph's API: streamed, waited for, or in the background; listed, joined,
rejoined and cancelled.

Every run goes through the native API's machinery (`deps.start_run`: the worker's stream
cap, the principal's limits, the thread's lease with the multitask strategy; the streaming
core with its bounded queue and coalescing) and is published to the run log, so a client
that lost its connection rejoins it from any worker (Redis) and a background run has
somewhere to write. Its record (`state/threads.py`) is written before the client sees the
run end, because LangGraph's clients ask for its status when a stream closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Annotated, Any

import anyio
import redis
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command
from sse_starlette import EventSourceResponse

from rillet_runtime.api.caps import check_input
from rillet_runtime.api.deps import (
    PrincipalDep,
    RuntimeDep,
    StartedRun,
    admit_follower,
    admit_stream,
    get_principal,
    new_run,
    start_run,
    thread_key,
)
from rillet_runtime.api.errors import ERROR_RESPONSES, ApiError, require_json
from rillet_runtime.api.langgraph.assistants import graph_id_for
from rillet_runtime.api.langgraph.models import THREAD_ID_PATTERN, RunCreate
from rillet_runtime.api.langgraph.shapes import assistant_id, run_json
from rillet_runtime.api.langgraph.stream import LangGraphDialect
from rillet_runtime.api.langgraph.threads import own_thread, thread_not_found
from rillet_runtime.api.sse import ClosingEventSourceResponse, from_origin, sse_events
from rillet_runtime.app_state import Runtime
from rillet_runtime.auth import Principal
from rillet_runtime.events import RunEvent, dumps_data
from rillet_runtime.state.threads import RunRecord, RunStatus, ThreadRecord, now_iso

router = APIRouter(
    tags=["langgraph: runs"], dependencies=[Depends(get_principal)], responses=ERROR_RESPONSES
)
ThreadIdPath = Annotated[str, Path(pattern=THREAD_ID_PATTERN)]
RunIdPath = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$")]
LastEventId = Annotated[str, Header(alias="Last-Event-ID", pattern=r"^(-1|\d{1,9})?$")]
json_body = [Depends(require_json)]

ACTIVE: frozenset[RunStatus] = frozenset({"pending", "running"})
_STATUS_BY_CODE: dict[str, RunStatus] = {
    "stream_timeout": "timeout",
    "run_cancelled": "interrupted",
}
KEEPALIVE_SECONDS = 5.0  # a waiting JSON answer sends a newline this often (valid JSON)
# configurable keys Rillet sets itself: a client's are ignored.
_RESERVED = frozenset(
    {"thread_id", "checkpoint_id", "checkpoint_ns", "checkpoint_map", "principal", "run_id"}
)
_CONFIG_KEYS = ("tags", "metadata", "recursion_limit", "run_name", "max_concurrency")


# --- building a run ---------------------------------------------------------------------


def _input_texts(graph_input: Any) -> list[str]:
    messages = graph_input.get("messages", []) if isinstance(graph_input, dict) else []
    texts = []
    for message in messages if isinstance(messages, list) else [messages]:
        content = message.get("content") if isinstance(message, dict) else message
        texts.append(content if isinstance(content, str) else str(content or ""))
    return texts


def _graph_input(body: RunCreate, runtime: Runtime) -> Any:
    if body.command is not None:
        command = body.command
        return Command(resume=command.resume, update=command.update, goto=command.goto or ())
    check_input(_input_texts(body.input), runtime.settings.limits, "input.messages")
    return body.input


def _config(body: RunCreate, graph_id: str) -> RunnableConfig:
    given = body.config or {}
    configurable = {
        key: value
        for key, value in (given.get("configurable") or {}).items()
        if key not in _RESERVED
    }
    checkpoint = {**(body.checkpoint or {})}
    if body.checkpoint_id:
        checkpoint["checkpoint_id"] = body.checkpoint_id
    configurable.update(
        {key: checkpoint[key] for key in ("checkpoint_id", "checkpoint_ns") if key in checkpoint}
    )
    configurable.update(graph_id=graph_id, assistant_id=assistant_id(graph_id))
    config: dict[str, Any] = {key: given[key] for key in _CONFIG_KEYS if key in given}
    config["metadata"] = {**config.get("metadata", {}), **(body.metadata or {})}
    config["configurable"] = configurable
    return config  # type: ignore[return-value]


def _options(body: RunCreate) -> dict[str, Any]:
    options = {
        "interrupt_before": body.interrupt_before,
        "interrupt_after": body.interrupt_after,
        "context": body.context or None,
    }
    return {key: value for key, value in options.items() if value is not None}


async def _thread_for(
    runtime: Runtime, principal: Principal, thread_id: str, body: RunCreate
) -> ThreadRecord:
    """The run's thread: the caller's, or a new one when `if_not_exists` is `create`."""
    try:
        record, _ = await own_thread(runtime, principal, thread_id)
    except ApiError:
        if body.if_not_exists == "reject":
            raise thread_not_found(thread_id) from None
        record = ThreadRecord(thread_id, metadata=dict(body.metadata or {}))
    return record


class _Prepared:
    """A run with everything decided but not yet admitted."""

    def __init__(
        self,
        runtime: Runtime,
        principal: Principal,
        body: RunCreate,
        thread_id: str | None,
        endpoint: str,
        thread: ThreadRecord | None,
    ) -> None:
        graph_id = graph_id_for(runtime, body.assistant_id)
        self.body = body
        self.stateless = thread_id is None
        self.keep_thread = not self.stateless or body.on_completion == "keep"
        self.thread_id = thread_id or str(uuid.uuid4())
        self.thread = thread or ThreadRecord(self.thread_id, metadata=dict(body.metadata or {}))
        self.thread.metadata.update(graph_id=graph_id, assistant_id=assistant_id(graph_id))
        dialect = LangGraphDialect(body.stream_mode, body.stream_subgraphs, self.thread_id)
        self.run = new_run(
            runtime,
            principal,
            _graph_input(body, runtime),
            self.thread_id,
            endpoint,
            dialect=dialect,
            config=_config(body, graph_id),
            options=_options(body),
        )
        self.record = RunRecord(
            self.run.run_id,
            self.thread_id,
            assistant_id(graph_id),
            metadata={**(body.metadata or {}), "graph_id": graph_id},
            multitask_strategy=body.multitask_strategy,
            kwargs={
                "input": body.input,
                "command": body.command and body.command.model_dump(),
                "stream_mode": body.stream_mode,
                "subgraphs": body.stream_subgraphs,
                "resumable": body.stream_resumable,
                "temporary": not self.keep_thread,
            },
        )


async def _prepare(
    runtime: Runtime,
    principal: Principal,
    body: RunCreate,
    thread_id: str | None,
    endpoint: str,
) -> _Prepared:
    if thread_id is None and body.command is not None and body.command.resume is not None:
        raise ApiError(
            422, "invalid_request", "command.resume needs a thread: resume on /threads/{id}/runs"
        )
    thread = None if thread_id is None else await _thread_for(runtime, principal, thread_id, body)
    return _Prepared(runtime, principal, body, thread_id, endpoint, thread)


async def _start(
    runtime: Runtime,
    principal: Principal,
    prepared: _Prepared,
    client_gone: Any,
    slot: Any = None,
) -> StartedRun:
    """Admit the run (see `deps.start_run`), record it as running, and wrap its events so
    its record follows it to the end."""
    body = prepared.body
    started = await start_run(
        runtime,
        client_gone,
        principal,
        prepared.run,
        strategy=body.multitask_strategy,
        throwaway_thread=prepared.stateless,
        slot=slot,
    )
    try:
        if started.guard.interrupted is not None and body.multitask_strategy == "rollback":
            await runtime.threads.delete_run(
                principal.key, prepared.thread_id, started.guard.interrupted
            )
        prepared.record.status = "running"
        prepared.record.updated_at = prepared.thread.updated_at = now_iso()
        if prepared.keep_thread:
            await runtime.threads.put_thread(principal.key, prepared.thread)
            await runtime.threads.put_run(principal.key, prepared.record)
    except BaseException:
        await started.close()
        raise
    started.events = _recorded(started.events, runtime, principal, prepared)
    return started


async def _finish(
    runtime: Runtime,
    principal: Principal,
    prepared: _Prepared,
    status: RunStatus,
    error: dict[str, Any] | None,
) -> None:
    record, thread = prepared.record, prepared.thread
    record.status = status
    record.updated_at = thread.updated_at = now_iso()
    thread.error = error
    with contextlib.suppress(redis.RedisError):  # the run is over either way
        if prepared.keep_thread:
            await runtime.threads.put_run(principal.key, record)
            await runtime.threads.put_thread(principal.key, thread)
        else:
            await runtime.checkpointer.adelete_thread(thread_key(principal, thread.thread_id))


async def _recorded(
    events: AsyncGenerator[RunEvent],
    runtime: Runtime,
    principal: Principal,
    prepared: _Prepared,
) -> AsyncGenerator[RunEvent]:
    """The run's events; its record is final before the last of them goes out."""
    finished = False
    try:
        async with contextlib.aclosing(events):
            async for event in events:
                if event.event == "end":
                    await _finish(runtime, principal, prepared, "success", None)
                    finished = True
                elif event.event == "error":
                    code = event.data["error"]
                    status = _STATUS_BY_CODE.get(code, "error")
                    failure = {"error": code, "message": event.data["message"]}
                    await _finish(runtime, principal, prepared, status, failure)
                    finished = True
                yield event
    finally:
        if not finished:  # stopped before its end: the client left, or the worker stops
            with anyio.CancelScope(shield=True):
                await _finish(runtime, principal, prepared, "interrupted", None)


def _headers(thread_id: str | None, run_id: str, tail: str | None) -> dict[str, str]:
    if thread_id is None:
        return {"Content-Location": f"/runs/{run_id}"}
    run_path = f"/threads/{thread_id}/runs/{run_id}"
    return {"Content-Location": run_path} | ({"Location": run_path + tail} if tail else {})


def _shown_thread(prepared: _Prepared) -> str | None:
    """A threadless run's thread is not the client's to find, unless it is kept."""
    return prepared.thread_id if prepared.keep_thread else None


def _grace(runtime: Runtime, body: RunCreate) -> float | None:
    """How long the run outlives its client: to its end (`continue`), a resume's grace
    (`stream_resumable`), or not at all."""
    if body.on_disconnect == "continue":
        return None
    return runtime.settings.streaming.resume_grace_seconds if body.stream_resumable else 0.0


def _publish(
    runtime: Runtime, started: StartedRun, grace: float | None
) -> tuple[asyncio.Queue[RunEvent | None], Any]:
    origin: asyncio.Queue[RunEvent | None] = asyncio.Queue(
        runtime.settings.streaming.queue_max_events
    )
    detach = runtime.run_log.publish(started.request.run_id, started.events, origin, grace)
    return origin, detach


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
    result: Awaitable[Any], headers: dict[str, str], on_close: Any = None
) -> StreamingResponse:
    """One JSON document, preceded by a newline every few seconds while it is computed
    (what LangGraph's server does, so proxies do not cut a long wait)."""

    async def body() -> AsyncIterator[bytes]:
        task = asyncio.ensure_future(result)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=KEEPALIVE_SECONDS)
                if done:
                    yield dumps_data(task.result())
                    return
                yield b"\n"
        finally:
            task.cancel()
            if on_close is not None:
                on_close()

    return StreamingResponse(body(), media_type="application/json", headers=headers)


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
    """The run's record once it has ended (any worker may run it: its record is shared)."""
    pause = 0.05
    while (run := await _own_run(runtime, principal, thread_id, run_id)).status in ACTIVE:
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)
    return run


# --- routes ----------------------------------------------------------------------------------


async def _stream(
    request: Request,
    runtime: Runtime,
    principal: Principal,
    body: RunCreate,
    thread_id: str | None,
) -> EventSourceResponse:
    prepared = await _prepare(runtime, principal, body, thread_id, "langgraph_stream")
    started = await _start(runtime, principal, prepared, request.is_disconnected)
    origin, detach = _publish(runtime, started, _grace(runtime, body))
    headers = _headers(_shown_thread(prepared), started.request.run_id, "/stream")
    return EventSourceResponse(
        from_origin(origin, detach),
        ping=runtime.settings.streaming.heartbeat_seconds,
        sep="\n",
        headers=headers,
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
    prepared = await _prepare(runtime, principal, body, thread_id, "langgraph_wait")
    started = await _start(runtime, principal, prepared, request.is_disconnected)
    origin, detach = _publish(runtime, started, _grace(runtime, body))
    headers = _headers(_shown_thread(prepared), started.request.run_id, "/join")
    return _json_when_ready(_result_of_events(origin), headers, detach)


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
    prepared = await _prepare(runtime, principal, body, thread_id, "langgraph_background")
    run_id = prepared.run.run_id
    headers = _headers(_shown_thread(prepared), run_id, None)
    if body.multitask_strategy != "enqueue":
        started = await _start(runtime, principal, prepared, _never_gone)
        runtime.run_log.publish(run_id, started.events, None, None)
        return JSONResponse(run_json(prepared.record), headers=headers)

    slot = admit_stream(runtime, prepared.run.endpoint)
    if prepared.keep_thread:
        await runtime.threads.put_thread(principal.key, prepared.thread)
        await runtime.threads.put_run(principal.key, prepared.record)

    async def when_admitted() -> None:
        try:
            started = await _start(runtime, principal, prepared, _never_gone, slot)
        except ApiError as refused:  # limits, the wait for the thread, a cancel
            status: RunStatus = "interrupted" if refused.status_code == 499 else "error"
            failure = {"error": refused.code, "message": str(refused.detail)}
            await _finish(runtime, principal, prepared, status, failure)
            return
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

    async def result() -> Any:
        run = await _when_over(runtime, principal, thread_id, run_id)
        return await _result_of_thread(runtime, principal, thread_id, run)

    return _json_when_ready(result(), _headers(thread_id, run_id, "/join"))


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
    await _own_run(runtime, principal, thread_id, run_id)
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
        headers=_headers(thread_id, run_id, "/stream"),
    )


@router.post("/threads/{thread_id}/runs/{run_id}/cancel", response_model=None)
async def cancel_run(
    thread_id: ThreadIdPath,
    run_id: RunIdPath,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    wait: Annotated[bool, Query()] = False,
    action: Annotated[str, Query(pattern="^(interrupt|rollback)$")] = "interrupt",
) -> Response:
    """Stop a run on whichever worker runs it (within about a second). `rollback` also
    forgets it: its record and the checkpoints it wrote. `wait`: answer once it stopped."""
    run = await _own_run(runtime, principal, thread_id, run_id)
    if run.status not in ACTIVE:
        raise ApiError(
            404, "run_not_active", f"run {run_id} is not pending or running", param="run_id"
        )
    await runtime.runs.request_cancel(run_id)

    async def stopped() -> Any:
        run = await _when_over(runtime, principal, thread_id, run_id)
        if action == "rollback":
            await runtime.checkpointer.adelete_for_runs([run_id])
            await runtime.threads.delete_run(principal.key, thread_id, run_id)
            return {}
        return await _result_of_thread(runtime, principal, thread_id, run)

    if wait:
        return _json_when_ready(stopped(), _headers(thread_id, run_id, "/join"))
    if action == "rollback":
        runtime.run_log.spawn(_discard(stopped()), f"rollback-{run_id}")
    return Response(status_code=202)


async def _discard(work: Awaitable[Any]) -> None:
    await work
