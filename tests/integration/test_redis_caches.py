"""The embedding and response caches against a real redis-server and a real Redis Cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from rillet_runtime.state.caches import (
    RedisEmbeddingCache,
    RedisResponseCache,
    embedding_cache_key,
    response_cache_key,
)
from tests.support.redis_cluster import StateRedis


@pytest.fixture
async def client(state_redis: StateRedis) -> AsyncIterator[Any]:
    state_redis.flush()
    client = state_redis.async_client()
    yield client
    await client.aclose()


def counted(cache: str, result: str) -> float:
    labels = {"cache": cache, "result": result}
    return REGISTRY.get_sample_value("rillet_cache_requests_total", labels) or 0.0


async def test_embeddings_round_trip_in_batches_per_model(client: Any) -> None:
    cache = RedisEmbeddingCache(client, ttl_seconds=60)
    texts = ["alpha", "beta", "gamma"]
    hits, misses = counted("embedding", "hit"), counted("embedding", "miss")
    assert await cache.get_many("model-a", texts) == [None, None, None]
    await cache.set_many("model-a", texts[:2], [[0.5, -1.25], [2.0, 0.0]])

    assert await cache.get_many("model-a", texts) == [[0.5, -1.25], [2.0, 0.0], None]
    assert await cache.get_many("model-b", texts[:1]) == [None]  # another model's vectors
    assert counted("embedding", "hit") - hits == 2
    assert counted("embedding", "miss") - misses == 5

    key = embedding_cache_key("model-a", "alpha")
    assert len(await client.get(key) or b"") == 8  # two float32s
    assert 0 < await client.pttl(key) <= 60_000
    assert "alpha" not in key


async def test_responses_are_scoped_and_expire(client: Any) -> None:
    cache = RedisResponseCache(client, ttl_seconds=30)
    mine = response_cache_key("tenant-a", "gpt", "What is  Rillet?")
    await cache.set(mine, "An operator.")
    assert await cache.get(response_cache_key("tenant-a", "gpt", "what is rillet?")) == (
        "An operator."
    )
    assert await cache.get(response_cache_key("tenant-b", "gpt", "What is Rillet?")) is None
    assert await cache.get(response_cache_key("tenant-a", "other", "What is Rillet?")) is None
    assert 0 < await client.pttl(mine) <= 30_000
