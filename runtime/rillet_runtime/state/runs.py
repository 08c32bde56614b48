"""What is running, shared by every worker and pod: which run holds each thread (a lease),
which principal owns each run, and which runs were asked to stop.

A thread's lease is a key set only if absent, with a short expiry that the run renews while
it lives: released when the run ends, lapsed within seconds when its worker dies. The
ownership record outlives the run as long as its event log, so a resume or a cancel by
anyone else finds nothing (404). A cancel reaches a run at once: directly when it runs in
the worker that was asked, else through a Redis channel every worker listens to; the cancel
key, read on the lease's beat, is the fallback. On a Redis Cluster the channel is the same
plain PUBLISH/SUBSCRIBE: a cluster carries every PUBLISH to all its nodes over its bus, so
each worker listens on one node's connection (not sharded pub/sub: that needs Redis 7, and
redis-py 5.3's async cluster client has no pub/sub). Without Redis the same records live in
the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
import redis.asyncio as aredis
from cachetools import TTLCache
from redis.exceptions import RedisClusterException

from rillet_runtime.state.run_log import run_key

log = logging.getLogger(__name__)

LEASE_MS = 10_000
CANCEL_CHANNEL = "rillet:cancels"

# KEYS: lease. ARGV: run_id lease_ms. Only the holder renews or releases.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: lease, recent runs. ARGV: run_id lease_ms now_ms forget_before_ms record_ms.
# The lease if it is free, and the run among the thread's recent ones, in one round trip.
_CLAIM = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
"""


def lease_key(thread_key: str) -> str:
    return f"rillet:lease:{{{thread_key}}}"


def recent_runs_key(thread_key: str) -> str:
    """The runs that held the thread lately (their logs may still be kept), by last beat."""
    return f"{lease_key(thread_key)}:runs"


def _millis() -> int:
    return time.time_ns() // 1_000_000


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class RunRegistry(Protocol):
    async def claim(self, thread_key: str | None, run_id: str, principal_key: str) -> bool:
        """Record the run's owner and take the thread's lease; False: another run holds it."""
        ...

    async def renew(self, thread_key: str | None, run_id: str) -> bool:
        """Keep the lease; True when someone asked the run to stop."""
        ...

    async def release(self, thread_key: str | None, run_id: str) -> None: ...

    async def holder(self, thread_key: str) -> str | None: ...

    async def owner(self, run_id: str) -> str | None: ...

    async def request_cancel(self, run_id: str) -> None: ...

    def track(self, run_id: str, cancel: asyncio.Event) -> None:
        """A run of this worker: a cancel request for it sets `cancel`."""
        ...

    def untrack(self, run_id: str) -> None: ...

    async def forget_thread(self, thread_key: str) -> list[str]:
        """The thread is deleted: the runs that held it lately, whose records (owner,
        cancel request) go now; their logs are the run log's to remove."""
        ...


@dataclass
class _WorkerRuns:
    """The cancel events of this worker's runs, set directly by a cancel asked here."""

    local: dict[str, asyncio.Event] = field(default_factory=dict, kw_only=True)

    def track(self, run_id: str, cancel: asyncio.Event) -> None:
        self.local[run_id] = cancel

    def untrack(self, run_id: str) -> None:
        self.local.pop(run_id, None)


@dataclass
class RedisRunRegistry(_WorkerRuns):
    client: Any  # redis.asyncio.Redis or RedisCluster
    record_ms: int  # how long a run's owner is remembered (its event log's lifetime)

    async def claim(self, thread_key: str | None, run_id: str, principal_key: str) -> bool:
        """One round trip: the owner record (the run's slot) is written beside the lease
        script (the thread's), and stays when the thread is busy: the same run claims
        again, or its record expires unread (its id was never given out)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(run_key(run_id, "principal"), principal_key, px=self.record_ms)
        if thread_key is not None:
            keys = (lease_key(thread_key), recent_runs_key(thread_key))
            now = _millis()
            pipe.eval(_CLAIM, 2, *keys, run_id, LEASE_MS, now, now - self.record_ms, self.record_ms)
        try:
            replies = await pipe.execute()
        except BaseException:
            await self.release(thread_key, run_id)
            raise
        return thread_key is None or bool(replies[-1])

    async def renew(self, thread_key: str | None, run_id: str) -> bool:
        pipe = self.client.pipeline(transaction=False)
        if thread_key is not None:
            pipe.eval(_RENEW, 1, lease_key(thread_key), run_id, LEASE_MS)
            pipe.zadd(recent_runs_key(thread_key), {run_id: _millis()}, xx=True)
            pipe.pexpire(recent_runs_key(thread_key), self.record_ms)
        pipe.pexpire(run_key(run_id, "principal"), self.record_ms)  # outlives a long run
        pipe.exists(run_key(run_id, "cancel"))
        replies = await pipe.execute()
        return bool(replies[-1])

    async def release(self, thread_key: str | None, run_id: str) -> None:
        if thread_key is not None:
            await self.client.eval(_RELEASE, 1, lease_key(thread_key), run_id)

    async def holder(self, thread_key: str) -> str | None:
        return _text(await self.client.get(lease_key(thread_key)))

    async def owner(self, run_id: str) -> str | None:
        return _text(await self.client.get(run_key(run_id, "principal")))

    async def forget_thread(self, thread_key: str) -> list[str]:
        recent = recent_runs_key(thread_key)
        run_ids = [_text(member) or "" for member in await self.client.zrange(recent, 0, -1)]
        pipe = self.client.pipeline(transaction=False)  # each run in a slot of its own
        for run_id in run_ids:
            pipe.delete(run_key(run_id, "principal"), run_key(run_id, "cancel"))
        pipe.delete(recent)
        await pipe.execute()
        return run_ids

    async def request_cancel(self, run_id: str) -> None:
        await self.client.set(run_key(run_id, "cancel"), "1", px=self.record_ms)
        if (cancel := self.local.get(run_id)) is not None:
            cancel.set()
        else:
            with contextlib.suppress(redis.RedisError):  # the beat still sees the key
                # Not `publish()`: older redis-py's async cluster client lacks it.
                await self.client.execute_command("PUBLISH", CANCEL_CHANNEL, run_id)

    @contextlib.asynccontextmanager
    async def _listener(self) -> AsyncIterator[Any]:
        """Where this worker hears cancels: its client, or one node of a cluster (any node
        hears every PUBLISH), chosen afresh on each reconnect so a lost node is left."""
        if not isinstance(self.client, aredis.RedisCluster):
            yield self.client
            return
        await self.client.initialize()  # the nodes are known from the first command on
        node = self.client.get_random_node()
        pool = aredis.ConnectionPool(
            connection_class=node.connection_class, **node.connection_kwargs
        )
        listener = aredis.Redis.from_pool(pool)
        try:
            yield listener
        finally:
            await listener.aclose()

    async def watch_cancels(self) -> None:
        """For the worker's life: cancels asked on other workers, for runs of this one."""
        while True:
            try:
                async with (
                    self._listener() as listener,
                    listener.pubsub(ignore_subscribe_messages=True) as pubsub,
                ):
                    await pubsub.subscribe(CANCEL_CHANNEL)
                    while True:  # not listen(): older redis-py applies the socket timeout there
                        message = await pubsub.get_message(timeout=1.0)
                        run_id = _text(message["data"]) if message else None
                        if run_id is not None and (cancel := self.local.get(run_id)):
                            cancel.set()
            except (redis.RedisError, RedisClusterException) as exc:  # the latter: no node
                log.warning("cancel channel lost (%s); the lease beat covers until it is back", exc)
                await asyncio.sleep(1)


@dataclass
class MemoryRunRegistry(_WorkerRuns):
    """One worker's runs (the in-memory state is per worker too)."""

    leases: dict[str, str] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    # Per thread, the runs that held it lately; bounded like the in-memory run log.
    recent: TTLCache[str, list[str]] = field(
        default_factory=lambda: TTLCache(maxsize=10_000, ttl=3600)
    )

    async def claim(self, thread_key: str | None, run_id: str, principal_key: str) -> bool:
        if thread_key is not None:
            if thread_key in self.leases:
                return False
            self.leases[thread_key] = run_id
            self.recent[thread_key] = [*self.recent.get(thread_key, [])[-99:], run_id]
        self.owners[run_id] = principal_key
        return True

    async def renew(self, thread_key: str | None, run_id: str) -> bool:
        return False  # a cancel here sets the run's event directly

    async def release(self, thread_key: str | None, run_id: str) -> None:
        if thread_key is not None and self.leases.get(thread_key) == run_id:
            del self.leases[thread_key]
        self.owners.pop(run_id, None)  # nothing to resume without Redis

    async def holder(self, thread_key: str) -> str | None:
        return self.leases.get(thread_key)

    async def owner(self, run_id: str) -> str | None:
        return self.owners.get(run_id)

    async def request_cancel(self, run_id: str) -> None:
        if (cancel := self.local.get(run_id)) is not None:  # also one waiting for its thread
            cancel.set()

    async def forget_thread(self, thread_key: str) -> list[str]:
        return self.recent.pop(thread_key, [])
