"""Per-principal limits, on a real redis-server, a real Redis Cluster and in memory: the
same rules each way."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from rillet_runtime.settings import LimitsSettings
from rillet_runtime.state.limits import Limiter, MemoryLimiter, RedisLimiter
from tests.support.redis_cluster import state_redis

MakeLimiter = Callable[[LimitsSettings], Limiter]


@pytest.fixture(params=["redis", "cluster", "memory"])
async def make_limiter(request: pytest.FixtureRequest) -> AsyncIterator[MakeLimiter]:
    if request.param == "memory":
        yield MemoryLimiter
        return
    store = state_redis(request, request.param)
    store.flush()
    client = store.async_client()
    yield lambda settings: RedisLimiter(client, settings, stream_ttl_ms=10_000)
    await client.aclose()


async def test_a_generous_limit_never_fails(make_limiter: MakeLimiter) -> None:
    """Sub-millisecond intervals (10^9 a minute) once stored an expiry of 0 ms: every
    admission failed."""
    limiter = make_limiter(
        LimitsSettings(
            concurrent_streams=10**6, requests_per_minute=10**9, tokens_per_minute=10**12
        )
    )
    for i in range(300):
        assert await limiter.admit("p", f"s{i}") is None
        await limiter.release("p", f"s{i}", 60)


async def test_requests_per_minute_allow_a_minutes_quota_then_refuse(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(LimitsSettings(requests_per_minute=5))
    results = [await limiter.admit("p", f"s{i}") for i in range(7)]
    assert [r is None for r in results] == [True] * 5 + [False] * 2
    refusal = results[5]
    assert refusal is not None
    assert refusal.reason == "requests_per_minute"
    assert 0 < refusal.retry_after_seconds <= 12  # one request's worth: 60 s / 5
    assert await limiter.admit("other", "s") is None  # per principal


async def test_streams_are_counted_until_released_and_tokens_charged_at_the_end(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(LimitsSettings(concurrent_streams=2, tokens_per_minute=100))
    assert await limiter.admit("p", "a") is None
    assert await limiter.admit("p", "b") is None
    full = await limiter.admit("p", "c")
    assert full is not None
    assert full.reason == "concurrent_streams"
    await limiter.release("p", "a", 250)  # 2.5 minutes' tokens: overdrawn
    owed = await limiter.admit("p", "d")
    assert owed is not None
    assert owed.reason == "tokens_per_minute"
    assert 80 < owed.retry_after_seconds <= 90  # paid back after 90 s
