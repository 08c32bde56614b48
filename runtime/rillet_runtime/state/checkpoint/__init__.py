"""A LangGraph checkpointer for plain Redis >= 6.2, Valkey and managed Redis, cluster mode too.

No Redis modules: hashes, sorted sets and Lua only; a thread lives in one cluster slot and
each write is one atomic script. Split the way LangGraph's own savers are:

    keys.py     where a thread's checkpoints live
    scripts.py  the Lua scripts
    base.py     codec, replies, and each operation once, as the requests it makes
    aio.py      the async API: awaits those requests on redis.asyncio
    sync.py     the sync API: calls them on redis-py
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis
import redis.asyncio as aredis
from langgraph.checkpoint.serde.base import SerializerProtocol
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from rillet_runtime.events import CheckpointCorrupt, CheckpointPruned, ThreadTooLarge
from rillet_runtime.state.checkpoint.aio import AsyncFace
from rillet_runtime.state.checkpoint.base import CHAT_STATE_TYPES, strict_serializer
from rillet_runtime.state.checkpoint.cluster import WaitingRedisCluster
from rillet_runtime.state.checkpoint.keys import ThreadKeys
from rillet_runtime.state.checkpoint.sentinel import SentinelSet, async_master, sync_master
from rillet_runtime.state.checkpoint.sync import SyncFace

__all__ = [
    "CHAT_STATE_TYPES",
    "CheckpointCorrupt",
    "CheckpointPruned",
    "RedisCheckpointSaver",
    "SentinelSet",
    "ThreadKeys",
    "ThreadTooLarge",
    "strict_serializer",
]


def _driver() -> dict[str, Any]:
    """The client's version for CLIENT SETINFO, looked up once, here: redis-py would look it
    up (a scan of the installed packages, blocking file system calls) for every connection
    it opens, on the event loop."""
    version = importlib.metadata.version("redis")
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # redis-py before 7: the older argument
        return {"lib_version": version}
    return {"driver_info": DriverInfo(lib_version=version)}


_DRIVER = _driver()


class RedisCheckpointSaver(AsyncFace, SyncFace):
    """`RedisCheckpointSaver.from_url("redis://...")`; async and sync APIs both work.

    Loads are strict by default (`strict_serializer`: no type outside an allowlist is
    constructed), and a checkpoint missing a value it references raises CheckpointCorrupt.
    Every checkpoint is kept unless `keep_checkpoints` (per thread and namespace) says how
    many, the newest; a read by id of one it dropped raises CheckpointPruned. A thread
    may hold any size unless `max_thread_bytes` caps it: a write past it raises (or, in a
    streamed run, notes) ThreadTooLarge.
    """

    def __init__(
        self,
        client: aredis.Redis | aredis.RedisCluster,
        *,
        sync_client: redis.Redis | redis.RedisCluster | Callable[[], Any] | None = None,
        ttl_seconds: float | None = 7 * 24 * 3600,
        compress_min_bytes: int = 1024,
        keep_checkpoints: int = 0,
        max_thread_bytes: int = 0,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(
            ttl_seconds=ttl_seconds,
            compress_min_bytes=compress_min_bytes,
            keep_checkpoints=keep_checkpoints,
            max_thread_bytes=max_thread_bytes,
            serde=serde,
        )
        self.client = client
        self._sync_client = sync_client

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        sentinel: SentinelSet | None = None,
        socket_timeout: float = 2.0,
        connect_timeout: float = 1.0,
        max_connections: int = 64,
        **kwargs: Any,
    ) -> RedisCheckpointSaver:
        """A ready saver with its own pools (`aclose()` them, or use `connect`).

        Lost connections (a Redis restart or failover leaves stale ones in the pool) are
        retried twice with a short jittered backoff; timeouts are not, so a Redis that
        hangs costs one `socket_timeout`, not three. The async pool is bounded and
        blocking: under load a command waits (up to `socket_timeout`) for a connection
        instead of failing with "Too many connections".

        With `sentinel`, the master is the one those sentinels name (the URL gives only
        its password, username, database and TLS), and a lost connection is retried,
        asking them again, for `sentinel.failover_seconds` (sentinel.py).
        """
        if cluster and sentinel is not None:
            raise ValueError("a Redis Cluster has no sentinels: give cluster or sentinel")
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout,
            "retry_on_error": [redis.ConnectionError],
            **_DRIVER,
        }
        backoff = ExponentialWithJitterBackoff(base=0.02, cap=0.25)
        async_client: Any
        if sentinel is not None:
            async_client = async_master(
                url,
                sentinel,
                max_connections=max_connections,
                pool_timeout=socket_timeout,
                options=options,
            )
            return cls(
                async_client,
                sync_client=lambda: sync_master(url, sentinel, options=options),
                **kwargs,
            )
        if cluster:  # one pool per node; a request waits for its turn (cluster.py)
            async_client = WaitingRedisCluster.from_url(
                url,
                retry=AsyncRetry(backoff, 2),
                max_connections=max_connections,
                pool_timeout=socket_timeout,
                **options,
            )
        else:
            pool = aredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=socket_timeout,
                retry=AsyncRetry(backoff, 2),
                **options,
            )
            async_client = aredis.Redis.from_pool(pool)
        sync_cls = redis.RedisCluster if cluster else redis.Redis
        return cls(
            async_client,
            sync_client=lambda: sync_cls.from_url(url, retry=Retry(backoff, 2), **options),
            **kwargs,
        )

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: str, **kwargs: Any) -> AsyncIterator[RedisCheckpointSaver]:
        saver = cls.from_url(url, **kwargs)
        try:
            yield saver
        finally:
            await saver.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()
        if self._sync_client is not None and not callable(self._sync_client):
            self._sync_client.close()
