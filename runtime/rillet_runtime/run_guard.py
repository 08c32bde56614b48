"""What a run holds beyond its worker's slot, for its whole life: a share of its principal's
limits and, on a thread, the thread's lease (one run per thread at a time). Taken before the
run starts, renewed while it runs (a cancel request from any worker is noticed then), given
back when it ends, with the tokens it used charged to its principal."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Literal

import anyio
import redis

from rillet_runtime.events import RunEvent
from rillet_runtime.state.limits import Limiter, Refusal
from rillet_runtime.state.runs import RunRegistry

# Named like LangGraph's `multitask_strategy`: what a run on a busy thread does.
MultitaskStrategy = Literal["reject", "enqueue", "interrupt"]
RENEW_SECONDS = 1.0


class ThreadBusy(Exception):
    """Another run holds the thread (strategy `reject`, or waiting for it timed out)."""


class OverLimit(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


@dataclass
class RunGuard:
    limiter: Limiter
    registry: RunRegistry
    principal_key: str
    thread_key: str | None  # None: a run on a throwaway thread needs no lease
    run_id: str
    cancel: asyncio.Event
    taken: bool = False

    async def keep_alive(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            with contextlib.suppress(redis.RedisError):  # a missed beat: the lease outlasts it
                await self.limiter.renew(self.principal_key, self.run_id)
                if await self.registry.renew(self.thread_key, self.run_id):
                    self.cancel.set()

    async def release(self, tokens: int) -> None:
        """Once: whoever is last to know the run is over (its events, or its response)."""
        if not self.taken:
            return
        self.taken = False
        with contextlib.suppress(redis.RedisError):  # the lease and the stream lapse on their own
            await self.registry.release(self.thread_key, self.run_id)
            await self.limiter.release(self.principal_key, self.run_id, tokens)


async def take_guard(guard: RunGuard, strategy: MultitaskStrategy, wait_seconds: float) -> RunGuard:
    """Admit the run under its principal's limits and claim its thread, or raise."""
    refusal = await guard.limiter.admit(guard.principal_key, guard.run_id)
    if refusal is not None:
        raise OverLimit(refusal)
    try:
        await _claim(guard, strategy, wait_seconds)
    except BaseException:
        await guard.limiter.release(guard.principal_key, guard.run_id, 0)
        raise
    guard.taken = True
    return guard


async def _claim(guard: RunGuard, strategy: MultitaskStrategy, wait_seconds: float) -> None:
    registry, thread_key = guard.registry, guard.thread_key
    if await registry.claim(thread_key, guard.run_id, guard.principal_key):
        return
    if strategy == "reject" or thread_key is None:
        raise ThreadBusy()
    if strategy == "interrupt" and (holder := await registry.holder(thread_key)):
        await registry.request_cancel(holder)
    deadline, pause = time.monotonic() + wait_seconds, 0.05
    while not await registry.claim(thread_key, guard.run_id, guard.principal_key):
        if time.monotonic() >= deadline:
            raise ThreadBusy()
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)


async def guarded(events: AsyncGenerator[RunEvent], guard: RunGuard) -> AsyncGenerator[RunEvent]:
    """The run's events; the guard is renewed meanwhile and released once the run is over."""
    renewer = asyncio.create_task(guard.keep_alive(), name=f"guard-{guard.run_id}")
    tokens = 0
    try:
        async for event in events:
            if event.event == "done":
                usage = event.data.get("usage") or {}
                tokens = int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))
            yield event
    finally:
        renewer.cancel()
        with anyio.CancelScope(shield=True):
            await events.aclose()  # the run has stopped first
            await guard.release(tokens)
