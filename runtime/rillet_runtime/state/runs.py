"""What is running, shared by every worker and pod: which run holds each thread (a lease),
which principal owns each run, and which runs were asked to stop.

A thread's lease is a key set only if absent, with a short expiry that the run renews while
it lives: released when the run ends, lapsed within seconds when its worker dies. The
ownership record outlives the run as long as its event log, so a resume or a cancel by
anyone else finds nothing (404). Without Redis the same records live in the worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from rillet_runtime.state.run_log import run_key

LEASE_MS = 10_000

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


def lease_key(thread_key: str) -> str:
    return f"rillet:lease:{{{thread_key}}}"


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


@dataclass
class RedisRunRegistry:
    client: Any  # redis.asyncio.Redis or RedisCluster
    record_ms: int  # how long a run's owner is remembered (its event log's lifetime)

    async def claim(self, thread_key: str | None, run_id: str, principal_key: str) -> bool:
        if thread_key is not None:
            taken = await self.client.set(lease_key(thread_key), run_id, nx=True, px=LEASE_MS)
            if not taken:
                return False
        try:
            await self.client.set(run_key(run_id, "principal"), principal_key, px=self.record_ms)
        except BaseException:
            await self.release(thread_key, run_id)
            raise
        return True

    async def renew(self, thread_key: str | None, run_id: str) -> bool:
        pipe = self.client.pipeline(transaction=False)
        if thread_key is not None:
            pipe.eval(_RENEW, 1, lease_key(thread_key), run_id, LEASE_MS)
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

    async def request_cancel(self, run_id: str) -> None:
        await self.client.set(run_key(run_id, "cancel"), "1", px=self.record_ms)


@dataclass
class MemoryRunRegistry:
    """One worker's runs (the in-memory state is per worker too)."""

    leases: dict[str, str] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)

    async def claim(self, thread_key: str | None, run_id: str, principal_key: str) -> bool:
        if thread_key is not None:
            if thread_key in self.leases:
                return False
            self.leases[thread_key] = run_id
        self.owners[run_id] = principal_key
        return True

    async def renew(self, thread_key: str | None, run_id: str) -> bool:
        return run_id in self.cancelled

    async def release(self, thread_key: str | None, run_id: str) -> None:
        if thread_key is not None and self.leases.get(thread_key) == run_id:
            del self.leases[thread_key]
        self.owners.pop(run_id, None)  # nothing to resume without Redis
        self.cancelled.discard(run_id)

    async def holder(self, thread_key: str) -> str | None:
        return self.leases.get(thread_key)

    async def owner(self, run_id: str) -> str | None:
        return self.owners.get(run_id)

    async def request_cancel(self, run_id: str) -> None:
        self.cancelled.add(run_id)  # also a run still waiting for its thread
