"""What a stream holds beyond its worker's slot, for its whole life: a share of its
principal's limits and, for a run on a thread, the thread's lease (one run per thread at a
time). Taken before the stream starts and renewed from then on (also while a run waits for
its thread; a cancel request from any worker is noticed on the same beat), given back when
it ends, with the tokens it used charged to its principal: what the provider reported, or
what streamed if the run ended first."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import anyio
import redis

from rillet_runtime.events import RunEvent, Usage
from rillet_runtime.state.limits import Limiter, Refusal
from rillet_runtime.state.runs import RunRegistry

# Named like LangGraph's `multitask_strategy`: what a run on a busy thread does.
MultitaskStrategy = Literal["reject", "enqueue", "interrupt", "rollback"]
RENEW_SECONDS = 1.0


class ThreadBusy(Exception):
    """Another run holds the thread (strategy `reject`, or waiting for it timed out)."""


class ClientGone(Exception):
    """The client left (or the run was cancelled) while it waited for the thread."""


class OverLimit(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


@dataclass
class RunGuard:
    limiter: Limiter
    registry: RunRegistry
    principal_key: str
    thread_key: str | None  # None: no lease (a throwaway thread, a resumed stream)
    stream_id: str  # the run's id, or a resumed stream's own
    cancel: asyncio.Event
    usage: Usage
    taken: bool = False
    interrupted: str | None = None  # the run this one stopped to take the thread
    _renewer: asyncio.Task[None] | None = field(default=None, repr=False)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            with contextlib.suppress(redis.RedisError):  # a missed beat: the lease outlasts it
                await self.limiter.renew(self.principal_key, self.stream_id)
            with contextlib.suppress(redis.RedisError):
                if await self.registry.renew(self.thread_key, self.stream_id):
                    self.cancel.set()

    def _start_renewing(self) -> None:
        self._renewer = asyncio.create_task(self._keep_alive(), name=f"guard-{self.stream_id}")

    async def release(self) -> None:
        """Once: whoever is last to know the stream is over (its events, or its response).
        Each step on its own: one failing must not keep the others from happening."""
        if self._renewer is not None:
            self._renewer.cancel()
        if not self.taken:
            return
        self.taken = False
        self.registry.untrack(self.stream_id)
        with contextlib.suppress(redis.RedisError):  # a lease lapses on its own
            await self.registry.release(self.thread_key, self.stream_id)
        with contextlib.suppress(redis.RedisError):  # and so does a stream's share
            await self.limiter.release(self.principal_key, self.stream_id, self.usage.charge)


async def take_guard(
    guard: RunGuard,
    strategy: MultitaskStrategy,
    wait_seconds: float,
    client_gone: Callable[[], Awaitable[bool]],
) -> RunGuard:
    """Admit the stream under its principal's limits and claim its thread, or raise."""
    refusal = await guard.limiter.admit(guard.principal_key, guard.stream_id)
    if refusal is not None:
        raise OverLimit(refusal)
    guard.taken = True
    guard.registry.track(guard.stream_id, guard.cancel)
    guard._start_renewing()  # a run waiting for its thread keeps its share alive
    try:
        await _claim(guard, strategy, wait_seconds, client_gone)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await guard.release()
        raise
    return guard


async def _claim(
    guard: RunGuard,
    strategy: MultitaskStrategy,
    wait_seconds: float,
    client_gone: Callable[[], Awaitable[bool]],
) -> None:
    registry, thread_key = guard.registry, guard.thread_key
    if await registry.claim(thread_key, guard.stream_id, guard.principal_key):
        return
    if strategy == "reject" or thread_key is None:
        raise ThreadBusy()
    if strategy in ("interrupt", "rollback") and (holder := await registry.holder(thread_key)):
        await registry.request_cancel(holder)
        guard.interrupted = holder

    async def unless_gone() -> None:
        if guard.cancel.is_set() or await client_gone():
            raise ClientGone()

    claimed = await claim_when_free(
        registry, thread_key, guard.stream_id, guard.principal_key, wait_seconds, unless_gone
    )
    if not claimed:
        raise ThreadBusy()


async def claim_when_free(
    registry: RunRegistry,
    thread_key: str,
    holder: str,
    principal_key: str,
    wait_seconds: float,
    before_retry: Callable[[], Awaitable[None]],
) -> bool:
    """Claim the thread, retrying with a growing pause for up to `wait_seconds`; False if
    it stayed taken. `before_retry` runs before each retry (it may raise to give up)."""
    deadline, pause = time.monotonic() + wait_seconds, 0.05
    while not await registry.claim(thread_key, holder, principal_key):
        if time.monotonic() >= deadline:
            return False
        await before_retry()
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)
    return True


async def guarded(events: AsyncGenerator[RunEvent], guard: RunGuard) -> AsyncGenerator[RunEvent]:
    """The stream's events; once they are over (or closed), the run has stopped and the
    guard is released."""
    try:
        async with contextlib.aclosing(events):
            async for event in events:
                yield event
    finally:
        with anyio.CancelScope(shield=True):
            await guard.release()
