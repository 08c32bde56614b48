"""The run registry on a real redis-server and a real Redis Cluster: a thread's lease, a
run's owner, and a cancel asked on one worker reaching a run on another."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from rillet_runtime.state.runs import RedisRunRegistry
from tests.support.redis_cluster import StateRedis

RECORD_MS = 60_000


@pytest.fixture
async def workers(state_redis: StateRedis) -> AsyncIterator[tuple[RedisRunRegistry, ...]]:
    """Two workers' registries, each with a client of its own."""
    state_redis.flush()
    clients = [state_redis.async_client() for _ in range(2)]
    yield tuple(RedisRunRegistry(client, record_ms=RECORD_MS) for client in clients)
    for client in clients:
        await client.aclose()


async def test_a_thread_is_leased_to_one_run_at_a_time(
    workers: tuple[RedisRunRegistry, ...],
) -> None:
    a, b = workers
    assert await a.claim("alice/t1", "run-1", "alice")
    assert not await b.claim("alice/t1", "run-2", "alice")
    assert await b.claim("alice/t2", "run-3", "alice")  # another thread, another slot
    assert await b.holder("alice/t1") == "run-1"
    assert await b.owner("run-1") == "alice"
    assert await a.renew("alice/t1", "run-1") is False  # kept, nobody asked it to stop
    await b.release("alice/t1", "run-2")  # not the holder: nothing happens
    assert await a.holder("alice/t1") == "run-1"
    await a.release("alice/t1", "run-1")
    assert await b.claim("alice/t1", "run-2", "alice")


async def test_a_cancel_asked_on_another_worker_reaches_the_run_at_once(
    workers: tuple[RedisRunRegistry, ...],
) -> None:
    """Through the channel: the run's worker never beats here, so only a message can set
    its event. The cancel key is there too, for the beat to find if a message is lost."""
    a, b = workers
    assert await a.claim("alice/t", "run-x", "alice")
    cancel = asyncio.Event()
    a.track("run-x", cancel)
    watching = asyncio.create_task(a.watch_cancels())
    try:
        for _ in range(100):  # until a's subscription is up: a functional deadline
            await b.request_cancel("run-x")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cancel.wait(), timeout=0.2)
                break
        assert cancel.is_set()
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    assert await a.renew("alice/t", "run-x") is True  # the beat's fallback sees it too
