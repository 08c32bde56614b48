"""Response and embedding caches: in memory for the embedded default, Redis in production.

Every lookup counts a hit or a miss in `rillet_cache_requests_total`. Keys are scoped and
hashed so no user text appears in a key.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import redis
import redis.asyncio as aredis
from cachetools import TTLCache

from rillet_runtime.events import refused_for_memory
from rillet_runtime.metrics import CACHE_REQUESTS, STATE_ERRORS


class ResponseCache(Protocol):
    """Entries belong to the thread whose run stored them (`thread`: its scoped key), so
    deleting the thread deletes them. An entry is keyed by principal, model and the whole
    prompt, so another thread of the same principal with the very same conversation may
    have been answered from it too; it goes all the same, and that thread simply misses."""

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, answer: str, thread: str | None = None) -> None: ...

    async def forget_thread(self, thread: str) -> None:
        """The entries the thread's runs stored go."""
        ...


def response_cache_key(scope: str, model: str, prompt: str) -> str:
    """Exact match on the normalised prompt, per scope (the principal) and model."""
    normalised = " ".join(prompt.lower().split())
    digest = hashlib.sha256(f"{scope}\0{model}\0{normalised}".encode()).hexdigest()
    return f"rillet:resp:{digest}"


def thread_entries_key(thread: str) -> str:
    """The response cache entries a thread's runs stored, in the thread's slot."""
    return f"rillet:resp:thread:{{{thread}}}"


def _count(cache: str, hit: bool) -> None:
    CACHE_REQUESTS.labels(cache, "hit" if hit else "miss").inc()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@contextmanager
def _skipped_when_full() -> Iterator[None]:
    """A cache entry is optional: Redis at its memory limit refusing it must not fail the
    run that wanted to store it."""
    try:
        yield
    except redis.RedisError as exc:
        if not refused_for_memory(exc):
            raise
        STATE_ERRORS.labels("state_full", "cache").inc()


class MemoryResponseCache:
    def __init__(self, max_entries: int, ttl_seconds: float) -> None:
        self._entries: TTLCache[str, str] = TTLCache(maxsize=max_entries, ttl=ttl_seconds)
        self._by_thread: TTLCache[str, set[str]] = TTLCache(maxsize=max_entries, ttl=ttl_seconds)

    async def get(self, key: str) -> str | None:
        answer = self._entries.get(key)
        _count("response", answer is not None)
        return answer

    async def set(self, key: str, answer: str, thread: str | None = None) -> None:
        self._entries[key] = answer
        if thread is not None:
            self._by_thread[thread] = {*self._by_thread.get(thread, ()), key}

    async def forget_thread(self, thread: str) -> None:
        for key in self._by_thread.pop(thread, ()):
            self._entries.pop(key, None)


class RedisResponseCache:
    def __init__(self, client: aredis.Redis | aredis.RedisCluster, ttl_seconds: float) -> None:
        self.client = client
        self.ttl_ms = int(ttl_seconds * 1000)

    async def get(self, key: str) -> str | None:
        stored = await self.client.get(key)
        _count("response", stored is not None)
        return stored.decode() if isinstance(stored, bytes) else stored

    async def set(self, key: str, answer: str, thread: str | None = None) -> None:
        with _skipped_when_full():
            await self.client.set(key, answer, px=self.ttl_ms)
            if thread is not None:  # the entry and the thread are in different slots
                pipe = self.client.pipeline(transaction=False)
                pipe.sadd(thread_entries_key(thread), key)
                pipe.pexpire(thread_entries_key(thread), self.ttl_ms)
                await pipe.execute()

    async def forget_thread(self, thread: str) -> None:
        index = thread_entries_key(thread)
        keys = [_text(key) for key in await self.client.smembers(index)]
        pipe = self.client.pipeline(transaction=False)
        for key in [*keys, index]:  # one by one: each entry is in a slot of its own
            pipe.delete(key)
        await pipe.execute()


def embedding_cache_key(model: str, text: str) -> str:
    return f"rillet:emb:{model}:{hashlib.sha256(text.encode()).hexdigest()}"


class RedisEmbeddingCache:
    """Query and chunk embeddings by model and text hash, batched in one round trip and
    stored as float32 bytes (4 bytes a dimension: a third of JSON's size, no parsing)."""

    def __init__(self, client: aredis.Redis | aredis.RedisCluster, ttl_seconds: float) -> None:
        self.client = client
        self.ttl_ms = int(ttl_seconds * 1000)

    async def get_many(self, model: str, texts: Sequence[str]) -> list[list[float] | None]:
        # A pipeline, not MGET: the keys hash to different cluster slots.
        pipe = self.client.pipeline(transaction=False)
        for text in texts:
            pipe.get(embedding_cache_key(model, text))
        found = [array("f", v).tolist() if v else None for v in await pipe.execute()]
        for vector in found:
            _count("embedding", vector is not None)
        return found

    async def set_many(
        self, model: str, texts: Sequence[str], vectors: Sequence[Sequence[float]]
    ) -> None:
        pipe = self.client.pipeline(transaction=False)
        for text, vector in zip(texts, vectors, strict=True):
            pipe.set(embedding_cache_key(model, text), array("f", vector).tobytes(), px=self.ttl_ms)
        with _skipped_when_full():
            await pipe.execute()
