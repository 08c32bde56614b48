"""What every chat endpoint depends on: the worker's runtime, the caller's principal,
admitting a run (capacity, limits, the thread's lease), and collecting a run into one
answer for the non-streaming endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import redis
from fastapi import Depends, Request
from langchain_core.runnables import RunnableConfig

from rillet_runtime.admission import StreamSlot
from rillet_runtime.api.errors import ApiError
from rillet_runtime.app_state import Runtime
from rillet_runtime.auth import Principal, Unauthenticated
from rillet_runtime.events import RunEvent, Usage, refused_for_memory
from rillet_runtime.llm.errors import classify_error
from rillet_runtime.llm.timing import LLMStageTimer
from rillet_runtime.metrics import AUTH_FAILURES, LIMITED, REQUESTS, STATE_ERRORS
from rillet_runtime.run_guard import (
    RENEW_SECONDS,
    ClientGone,
    MultitaskStrategy,
    OverLimit,
    RunGuard,
    ThreadBusy,
    claim_when_free,
    guarded,
    take_guard,
)
from rillet_runtime.state import thread_bytes
from rillet_runtime.state.limits import Refusal
from rillet_runtime.state.threads import scoped
from rillet_runtime.streaming import Dialect, NativeDialect, RunRequest, run_events

# Error codes of a failed run, as the status of a non-streaming answer.
_STATUS_BY_CODE = {
    "provider_unavailable": 503,
    "state_unavailable": 503,
    "state_full": 503,
    "provider_rate_limited": 503,
    "provider_timeout": 504,
    "stream_timeout": 504,
    "provider_error": 502,
    "run_cancelled": 409,
    "thread_too_large": 413,
    "checkpoint_not_found": 404,
}


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_principal(request: Request) -> Principal:
    """Who is calling, or 401: every route but the probes depends on this."""
    authenticator = get_runtime(request).authenticator
    try:
        return await authenticator.authenticate(request.headers)
    except Unauthenticated as exc:
        AUTH_FAILURES.inc()
        challenge = {"WWW-Authenticate": authenticator.challenge}
        raise ApiError(401, "unauthenticated", str(exc), headers=challenge) from None


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def thread_key(principal: Principal, thread_id: str) -> str:
    return scoped(principal.key, thread_id)


def take_over_seconds(runtime: Runtime) -> float:
    """How long a delete waits for the run it cancelled to let go of the thread: the cancel
    reaches it at once (or on its lease's next beat, within a second or two) and it has
    `streaming.cancel_timeout_seconds` to unwind."""
    return runtime.settings.streaming.cancel_timeout_seconds + 3 * RENEW_SECONDS


@contextlib.asynccontextmanager
async def holding_thread(
    runtime: Runtime, principal: Principal, thread_id: str, *, take_over: bool = False
) -> AsyncIterator[str]:
    """The thread's lease for a change made outside a run (a delete, a state update), so no
    run saves over it meanwhile: 409 while a run holds it, or with `take_over`, once that
    run, cancelled (from any worker), has not let go within `take_over_seconds`. Yields the
    thread's key."""
    thread, holder = thread_key(principal, thread_id), f"edit-{uuid.uuid4()}"
    busy = ApiError(409, "thread_busy", "the thread has a run in progress", param="thread_id")
    runs = runtime.runs

    async def cancel_the_holder() -> None:  # any run that took it meanwhile too
        if (running := await runs.holder(thread)) is not None:
            await runs.request_cancel(running)

    claimed: bool | None
    try:
        claimed = await runs.claim(thread, holder, principal.key)
        if not claimed and take_over:
            wait = take_over_seconds(runtime)
            claimed = await claim_when_free(
                runs, thread, holder, principal.key, wait, cancel_the_holder
            )
    except redis.RedisError as exc:
        if not refused_for_memory(exc):
            raise
        claimed = None
    if claimed is None:
        # Redis is full, so no run can take the thread now either: a change that frees
        # memory (a delete) still goes ahead unless a run already holds the thread.
        if await runtime.runs.holder(thread) is not None:
            raise busy
        yield thread
        return
    if not claimed:
        raise busy
    try:
        yield thread
    finally:
        await runtime.runs.release(thread, holder)


async def remove_thread(runtime: Runtime, principal: Principal, thread_id: str) -> None:
    """Everything of the thread: a run in progress on it is cancelled first (from any
    worker; 409 if it does not let go within a few seconds), then its checkpoints, its
    thread and run records, the logs of its recent runs and the response cache entries its
    runs stored go."""
    running = await runtime.runs.holder(thread_key(principal, thread_id))
    async with holding_thread(runtime, principal, thread_id, take_over=True) as thread:
        if running is not None:  # its last events are logged after it lets go of the thread
            await _until_ended(runtime, running)
        await runtime.checkpointer.adelete_thread(thread)
        await runtime.threads.delete_thread(principal.key, thread_id)
        await runtime.run_log.forget(await runtime.runs.forget_thread(thread))
        if runtime.response_cache is not None:
            await runtime.response_cache.forget_thread(thread)


async def _until_ended(runtime: Runtime, run_id: str) -> None:
    """Until the run's publisher has logged its end (bounded), so forgetting its log is
    the last word on it."""
    deadline = time.monotonic() + take_over_seconds(runtime)
    while time.monotonic() < deadline:
        if not await runtime.run_log.alive(run_id):
            return
        await asyncio.sleep(0.05)


def state_refusal(
    runtime: Runtime, exc: BaseException, endpoint: str | None, operation: str
) -> ApiError:
    """503 for a Redis that refused or failed: `state_full` when it is at its memory limit
    (its writes are refused; reads still work), else `state_unavailable`; with Retry-After."""
    info = classify_error(exc)
    STATE_ERRORS.labels(info.code, operation).inc()
    if endpoint is not None:
        REQUESTS.labels(endpoint, f"rejected_{info.code}").inc()
    retry_after = {"Retry-After": str(runtime.settings.server.retry_after_seconds)}
    return ApiError(503, info.code, info.message, headers=retry_after)


def admit_stream(runtime: Runtime, endpoint: str) -> StreamSlot:
    """A slot for one more stream, or 503 with Retry-After: never a hung connection."""
    admission = runtime.admission
    retry_after = {"Retry-After": str(runtime.settings.server.retry_after_seconds)}
    if admission.draining:
        REQUESTS.labels(endpoint, "rejected_draining").inc()
        raise ApiError(
            503, "draining", "this instance is shutting down; retry", headers=retry_after
        )
    if admission.overloaded:
        REQUESTS.labels(endpoint, "rejected_loop_lag").inc()
        lag_ms = round(admission.loop_lag * 1000)
        raise ApiError(
            503,
            "over_capacity",
            f"this worker's event loop runs {lag_ms} ms late; retry",
            headers=retry_after,
        )
    slot = admission.admit()
    if slot is None:
        REQUESTS.labels(endpoint, "rejected_capacity").inc()
        raise ApiError(
            503, "over_capacity", "too many concurrent streams; retry", headers=retry_after
        )
    return slot


def new_run(
    runtime: Runtime,
    principal: Principal,
    graph_input: Any,
    thread_id: str,
    endpoint: str,
    *,
    dialect: Dialect | None = None,
    config: RunnableConfig | None = None,
    options: dict[str, Any] | None = None,
) -> RunRequest:
    """A run of the pod's graph on the principal's thread; `config` is the client's own
    (tags, recursion limit, configurable values): what identifies the run and the thread
    is set here, over it."""
    run_id = uuid.uuid4()
    config = config or {}
    run_config: RunnableConfig = {
        **config,
        "configurable": {
            **config.get("configurable", {}),
            "thread_id": thread_key(principal, thread_id),
            "principal": principal.key,
            # run_id in `configurable` too: checkpoint metadata records it (delete_for_runs).
            "run_id": str(run_id),
        },
        "run_id": run_id,
        "callbacks": [LLMStageTimer()],
    }
    return RunRequest(
        graph=runtime.graph,
        graph_input=graph_input,
        config=run_config,
        thread_id=thread_id,
        run_id=str(run_id),
        endpoint=endpoint,
        dialect=dialect or NativeDialect(),
        options=options or {},
    )


@dataclass
class Admitted:
    """A stream's worker slot and guard; `close` gives both back (idempotent), after the
    events, if they were ever read, have stopped the run."""

    events: AsyncGenerator[RunEvent]
    slot: StreamSlot
    guard: RunGuard

    async def close(self) -> None:
        await self.events.aclose()
        self.slot.release()
        await self.guard.release()


@dataclass
class StartedRun(Admitted):
    request: RunRequest = field(kw_only=True)


def _over_limit(refusal: Refusal, endpoint: str) -> ApiError:
    LIMITED.labels(refusal.reason).inc()
    REQUESTS.labels(endpoint, "rejected_limit").inc()
    policy = refusal.reason.split("_")[0]
    window = "" if refusal.reason == "concurrent_streams" else ";w=60"
    retry_after = max(1, math.ceil(refusal.retry_after_seconds))
    headers = {
        "Retry-After": str(retry_after),
        "RateLimit-Policy": f'"{policy}";q={refusal.limit}{window}',
        "RateLimit": f'"{policy}";r=0;t={retry_after}',
    }
    message = f"{refusal.reason.replace('_', ' ')} limit ({refusal.limit}) reached; retry later"
    return ApiError(429, "rate_limited", message, headers=headers)


async def admit(
    runtime: Runtime,
    client_gone: Callable[[], Awaitable[bool]],
    guard: RunGuard,
    endpoint: str,
    strategy: MultitaskStrategy = "reject",
    slot: StreamSlot | None = None,
) -> StreamSlot:
    """The worker's capacity (unless `slot` was taken already), the principal's limits,
    the thread's lease (when the guard names one), or 503, 429 or 409; nothing is held
    after a refusal."""
    settings = runtime.settings
    slot = slot or admit_stream(runtime, endpoint)
    try:
        await take_guard(guard, strategy, settings.server.max_stream_seconds, client_gone)
    except OverLimit as exc:
        raise _over_limit(exc.refusal, endpoint) from None
    except ThreadBusy:
        REQUESTS.labels(endpoint, "rejected_thread_busy").inc()
        raise ApiError(
            409, "thread_busy", "the thread has a run in progress", param="thread_id"
        ) from None
    except ClientGone:
        REQUESTS.labels(endpoint, "client_disconnected").inc()
        raise ApiError(499, "client_gone", "the client left while its run waited") from None
    except redis.RedisError as exc:  # limits and leases cannot be taken: refuse before streaming
        raise state_refusal(runtime, exc, endpoint, "admission") from None
    finally:
        if not guard.taken:
            slot.release()
    return slot


async def admit_follower(
    runtime: Runtime, request: Request, principal: Principal, events: AsyncGenerator[RunEvent]
) -> Admitted:
    """A follower of a logged run is a stream like any other: it takes a worker slot and a
    share of the principal's limits, so reconnects cannot exhaust the worker or its Redis
    pool."""
    guard = guard_for(runtime, principal, f"follow-{uuid.uuid4()}")
    try:
        slot = await admit(runtime, request.is_disconnected, guard, "resume")
    except BaseException:
        await events.aclose()
        raise
    return Admitted(guarded(events, guard), slot, guard)


def guard_for(
    runtime: Runtime,
    principal: Principal,
    stream_id: str,
    thread: str | None = None,
    usage: Usage | None = None,
    cancel: asyncio.Event | None = None,
) -> RunGuard:
    return RunGuard(
        runtime.limiter,
        runtime.runs,
        principal.key,
        thread,
        stream_id,
        cancel or asyncio.Event(),
        usage or Usage(),
    )


async def start_run(
    runtime: Runtime,
    client_gone: Callable[[], Awaitable[bool]],
    principal: Principal,
    run: RunRequest,
    *,
    strategy: MultitaskStrategy = "reject",
    throwaway_thread: bool = False,
    slot: StreamSlot | None = None,
) -> StartedRun:
    """An admitted run (see `admit`), ready to stream; 413 `thread_too_large`, with
    nothing held, when its thread is over its size cap already. The size is read while
    the run is admitted, not before: with Redis far away, a round trip less to the first
    token."""
    settings = runtime.settings
    thread = None if throwaway_thread else thread_key(principal, run.thread_id)
    guard = guard_for(runtime, principal, run.run_id, thread, run.usage, run.cancel)
    if thread is None:
        slot = await admit(runtime, client_gone, guard, run.endpoint, strategy, slot)
    else:
        size_checked = asyncio.ensure_future(_within_size_cap(runtime, thread, run.endpoint))
        try:
            slot = await admit(runtime, client_gone, guard, run.endpoint, strategy, slot)
        except BaseException:
            size_checked.cancel()
            await asyncio.gather(size_checked, return_exceptions=True)
            raise
        try:
            await size_checked
        except BaseException:
            await guard.release()
            slot.release()
            raise
    if strategy == "rollback" and guard.interrupted is not None:
        try:  # the stopped run never happened: its checkpoints go
            await runtime.checkpointer.adelete_for_runs([guard.interrupted])
        except BaseException:
            await guard.release()
            slot.release()
            raise
    events = run_events(run, settings.streaming, settings.server.max_stream_seconds, slot)
    return StartedRun(guarded(events, guard), slot, guard, request=run)


async def _within_size_cap(runtime: Runtime, thread: str, endpoint: str) -> None:
    cap = runtime.settings.state.max_thread_bytes
    if not cap:
        return
    try:
        held = await thread_bytes(runtime.checkpointer, thread)
    except redis.RedisError as exc:
        raise state_refusal(runtime, exc, endpoint, "admission") from None
    if held > cap:
        REQUESTS.labels(endpoint, "rejected_thread_too_large").inc()
        raise ApiError(
            413,
            "thread_too_large",
            f"the thread holds {held} bytes, over its cap of {cap} (state.max_thread_bytes); "
            "start a new thread",
            param="thread_id",
        )


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


async def collect(events: AsyncGenerator[RunEvent]) -> CollectedRun:
    """The whole run; its events are closed however it ends (an error raises 4xx/5xx)."""
    async with contextlib.aclosing(events):
        return await _collect(events)


async def _collect(events: AsyncGenerator[RunEvent]) -> CollectedRun:
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
