"""Thread state and caches behind one seam chosen by settings.

Memory is the embedded default (`make run`, tests); Redis serves production. The app and
the graphs only see a checkpointer, a response cache, the per-principal limits, the run
registry (thread leases, run owners, cancel requests), the run log and the thread records.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from rillet_runtime.metrics import THREADS_EVICTED, timed_stage
from rillet_runtime.settings import RedisSentinelSettings, Settings, StateSettings
from rillet_runtime.state.caches import (
    MemoryResponseCache,
    RedisEmbeddingCache,
    RedisResponseCache,
    ResponseCache,
    response_cache_key,
)
from rillet_runtime.state.checkpoint import RedisCheckpointSaver, SentinelSet, strict_serializer
from rillet_runtime.state.limits import Limiter, MemoryLimiter, RedisLimiter
from rillet_runtime.state.memory_saver import BoundedMemorySaver
from rillet_runtime.state.run_log import RunLog, open_run_log
from rillet_runtime.state.runs import LEASE_MS, MemoryRunRegistry, RedisRunRegistry, RunRegistry
from rillet_runtime.state.threads import MemoryThreadStore, RedisThreadStore, ThreadStore

__all__ = [
    "RedisCheckpointSaver",
    "RedisEmbeddingCache",
    "ResponseCache",
    "StateBackends",
    "open_state",
    "response_cache_key",
]


class _TimedSaver(BaseCheckpointSaver[Any]):
    """History loads and checkpoint saves in the stage histogram, for any saver."""

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        with timed_stage("history_load"):
            return await super().aget_tuple(config)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        with timed_stage("checkpoint_save"):
            return await super().aput(config, checkpoint, metadata, new_versions)


class TimedMemorySaver(_TimedSaver, BoundedMemorySaver):
    """In the worker, bounded: at most `max_threads` threads, each kept `ttl_seconds` after
    its last use (None: no limit); the least recently used go first, counted in
    `rillet_memory_threads_evicted_total`. A long `make run` or a Redis-less pod cannot
    grow without end. Each thread is bounded as on Redis (memory_saver.py)."""

    def __init__(
        self,
        *,
        serde: SerializerProtocol,
        max_threads: int,
        ttl_seconds: float | None,
        keep_checkpoints: int = 0,
        max_thread_bytes: int = 0,
    ) -> None:
        super().__init__(
            serde=serde, keep_checkpoints=keep_checkpoints, max_thread_bytes=max_thread_bytes
        )
        self.max_threads = max_threads
        self.ttl_seconds = ttl_seconds
        self._last_used: OrderedDict[str, float] = OrderedDict()  # oldest first

    def _used(self, config: RunnableConfig) -> None:
        now, thread_id = time.monotonic(), str(config["configurable"]["thread_id"])
        self._last_used[thread_id] = now
        self._last_used.move_to_end(thread_id)
        while self._last_used:
            oldest, used_at = next(iter(self._last_used.items()))
            if len(self._last_used) > self.max_threads:
                reason = "max_threads"
            elif self.ttl_seconds is not None and now - used_at > self.ttl_seconds:
                reason = "ttl"
            else:
                return
            self.delete_thread(oldest)
            THREADS_EVICTED.labels(reason).inc()

    def delete_thread(self, thread_id: str) -> None:
        super().delete_thread(thread_id)
        self._last_used.pop(str(thread_id), None)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        found = await super().aget_tuple(config)
        if found is not None:
            self._used(config)
        return found

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        saved = await super().aput(config, checkpoint, metadata, new_versions)
        self._used(config)
        return saved


class TimedRedisSaver(_TimedSaver, RedisCheckpointSaver):
    pass


@runtime_checkable
class ThreadSizes(Protocol):
    """A saver that counts what each thread holds (both of Rillet's do)."""

    async def athread_bytes(self, thread_id: str) -> int: ...


async def thread_bytes(checkpointer: BaseCheckpointSaver[Any], thread_id: str) -> int:
    """What the thread holds as its saver counts it; 0 for a saver that does not count."""
    if isinstance(checkpointer, ThreadSizes):
        return await checkpointer.athread_bytes(thread_id)
    return 0


@dataclass(frozen=True)
class StateBackends:
    checkpointer: BaseCheckpointSaver[Any]
    response_cache: ResponseCache | None
    embedding_cache: RedisEmbeddingCache | None
    limiter: Limiter
    runs: RunRegistry
    run_log: RunLog  # on Redis (shared by every worker) or in the worker
    threads: ThreadStore  # threads and runs as LangGraph's API lists them


def serializer(settings: StateSettings) -> JsonPlusSerializer:
    """Strict: LangGraph's safe types, the chat state's and `serde_allowed_types` (a user
    graph's own) are revived; nothing else is constructed on load."""
    return strict_serializer(tuple(name.rsplit(".", 1)) for name in settings.serde_allowed_types)


def sentinel_set(settings: RedisSentinelSettings | None) -> SentinelSet | None:
    if settings is None:
        return None
    return SentinelSet(
        master_name=settings.master_name,
        addresses=tuple(settings.sentinels),
        username=settings.username,
        password=settings.password.get_secret_value() if settings.password else None,
        failover_seconds=settings.failover_seconds,
    )


@asynccontextmanager
async def open_state(all_settings: Settings) -> AsyncIterator[StateBackends]:
    """Open the configured backends for one worker process; close them, run log first, after."""
    settings, streaming = all_settings.state, all_settings.streaming
    if settings.checkpointer == "memory":
        cache = (
            MemoryResponseCache(
                settings.response_cache_max_entries, settings.response_cache_ttl_seconds
            )
            if settings.response_cache
            else None
        )
        run_log = open_run_log(None, streaming)
        try:
            yield StateBackends(
                checkpointer=TimedMemorySaver(
                    serde=serializer(settings),
                    max_threads=settings.memory_max_threads,
                    ttl_seconds=settings.checkpoint_ttl_seconds or None,
                    keep_checkpoints=settings.keep_checkpoints,
                    max_thread_bytes=settings.max_thread_bytes,
                ),
                response_cache=cache,
                embedding_cache=None,
                limiter=MemoryLimiter(all_settings.limits),
                runs=MemoryRunRegistry(),
                run_log=run_log,
                threads=MemoryThreadStore(settings.memory_max_threads),
            )
        finally:
            await run_log.aclose()
        return

    saver = TimedRedisSaver.from_url(
        settings.redis_connection_url,
        cluster=settings.redis_cluster,
        sentinel=sentinel_set(settings.redis_sentinel),
        socket_timeout=settings.redis_timeout_seconds,
        connect_timeout=settings.redis_timeout_seconds / 2,
        max_connections=settings.redis_max_connections,
        ttl_seconds=settings.checkpoint_ttl_seconds or None,
        compress_min_bytes=settings.compress_min_bytes,
        keep_checkpoints=settings.keep_checkpoints,
        max_thread_bytes=settings.max_thread_bytes,
        serde=serializer(settings),
    )
    client = saver.client
    run_log = open_run_log(client, streaming, settings.redis_timeout_seconds)
    runs = RedisRunRegistry(client, record_ms=int(streaming.run_log_ttl_seconds * 1000))
    run_log.spawn(runs.watch_cancels(), "cancel-channel")  # stopped with the run log
    try:
        yield StateBackends(
            checkpointer=saver,
            response_cache=(
                RedisResponseCache(client, settings.response_cache_ttl_seconds)
                if settings.response_cache
                else None
            ),
            embedding_cache=RedisEmbeddingCache(client, settings.embedding_cache_ttl_seconds),
            limiter=RedisLimiter(client, all_settings.limits, stream_ttl_ms=LEASE_MS),
            runs=runs,
            run_log=run_log,
            threads=RedisThreadStore(client, int(settings.checkpoint_ttl_seconds * 1000) or None),
        )
    finally:
        await run_log.aclose()
        await saver.aclose()
