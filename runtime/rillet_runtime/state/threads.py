"""Threads and runs as LangGraph's API lists them: a thread's metadata and times, and the
record of each run on it. The conversation itself is in the checkpointer; a thread's
status is worked out when read (its lease, its pending interrupts, its last run), never
stored, so it cannot go stale.

Every key is inside its principal's scope (`thread_key` = `<principal>/<thread id>`), so
listing and searching only ever see the caller's own threads. Without Redis the records
live in the worker, like the rest of the in-memory state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import orjson

RunStatus = Literal["pending", "running", "success", "error", "timeout", "interrupted"]
MAX_RUNS_PER_THREAD = 100  # older run records are dropped (the checkpoints stay)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class ThreadRecord:
    thread_id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    # The last run's failure ({"error", "message"}), cleared by the next run that ends well.
    error: dict[str, Any] | None = None


@dataclass
class RunRecord:
    run_id: str
    thread_id: str
    assistant_id: str
    status: RunStatus = "pending"
    metadata: dict[str, Any] = field(default_factory=dict)
    multitask_strategy: str = "reject"
    kwargs: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)


class ThreadStore(Protocol):
    async def put_thread(self, principal_key: str, thread: ThreadRecord) -> None: ...

    async def add_thread(self, principal_key: str, thread: ThreadRecord) -> bool:
        """Store a new thread; False when one of that id is already there."""
        ...

    async def get_thread(self, principal_key: str, thread_id: str) -> ThreadRecord | None: ...

    async def threads(self, principal_key: str) -> list[ThreadRecord]:
        """The principal's threads, newest first."""
        ...

    async def delete_thread(self, principal_key: str, thread_id: str) -> None: ...

    async def put_run(self, principal_key: str, run: RunRecord) -> None: ...

    async def get_run(
        self, principal_key: str, thread_id: str, run_id: str
    ) -> RunRecord | None: ...

    async def runs(self, principal_key: str, thread_id: str) -> list[RunRecord]:
        """The thread's runs, newest first."""
        ...

    async def delete_run(self, principal_key: str, thread_id: str, run_id: str) -> None: ...


def scoped(principal_key: str, thread_id: str) -> str:
    """Where a client's thread id lives: inside its principal's scope, so another principal
    naming the same id reaches a thread of its own, never this one."""
    return f"{principal_key}/{thread_id}"


def _millis() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class RedisThreadStore:
    """A thread's record and its runs share the thread's cluster slot; the principal's
    index of threads is one sorted set (scored by creation time)."""

    client: Any  # redis.asyncio.Redis or RedisCluster
    ttl_ms: int | None  # the checkpoints' lifetime: records go with the conversation

    @staticmethod
    def _thread(principal_key: str, thread_id: str) -> str:
        return f"rillet:thread:{{{scoped(principal_key, thread_id)}}}"

    @staticmethod
    def _index(principal_key: str) -> str:
        return f"rillet:threads:{{{principal_key}}}"

    async def put_thread(self, principal_key: str, thread: ThreadRecord) -> None:
        key = self._thread(principal_key, thread.thread_id)
        await self.client.set(f"{key}:record", orjson.dumps(thread), px=self.ttl_ms)
        await self.client.zadd(self._index(principal_key), {thread.thread_id: _millis()}, nx=True)

    async def add_thread(self, principal_key: str, thread: ThreadRecord) -> bool:
        key = self._thread(principal_key, thread.thread_id)
        if not await self.client.set(
            f"{key}:record", orjson.dumps(thread), px=self.ttl_ms, nx=True
        ):
            return False
        await self.client.zadd(self._index(principal_key), {thread.thread_id: _millis()})
        return True

    async def get_thread(self, principal_key: str, thread_id: str) -> ThreadRecord | None:
        raw = await self.client.get(f"{self._thread(principal_key, thread_id)}:record")
        return None if raw is None else ThreadRecord(**orjson.loads(raw))

    async def threads(self, principal_key: str) -> list[ThreadRecord]:
        index = self._index(principal_key)
        ids = [i.decode() for i in await self.client.zrevrange(index, 0, -1)]
        found: list[ThreadRecord] = []
        for thread_id in ids:  # one by one: in a cluster each thread is in a slot of its own
            if (thread := await self.get_thread(principal_key, thread_id)) is not None:
                found.append(thread)
            else:  # expired with its checkpoints
                await self.client.zrem(index, thread_id)
        return found

    async def delete_thread(self, principal_key: str, thread_id: str) -> None:
        key = self._thread(principal_key, thread_id)
        run_ids = [i.decode() for i in await self.client.zrange(f"{key}:runs", 0, -1)]
        await self.client.delete(
            f"{key}:record", f"{key}:runs", *(f"{key}:run:{run_id}" for run_id in run_ids)
        )
        await self.client.zrem(self._index(principal_key), thread_id)

    async def put_run(self, principal_key: str, run: RunRecord) -> None:
        key = self._thread(principal_key, run.thread_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(f"{key}:run:{run.run_id}", orjson.dumps(run), px=self.ttl_ms)
        pipe.zadd(f"{key}:runs", {run.run_id: _millis()}, nx=True)
        pipe.zrange(f"{key}:runs", 0, -MAX_RUNS_PER_THREAD - 1)
        pipe.zremrangebyrank(f"{key}:runs", 0, -MAX_RUNS_PER_THREAD - 1)
        if self.ttl_ms:
            pipe.pexpire(f"{key}:runs", self.ttl_ms)
        replies = await pipe.execute()
        if dropped := [i.decode() for i in replies[2]]:
            await self.client.delete(*(f"{key}:run:{run_id}" for run_id in dropped))

    async def get_run(self, principal_key: str, thread_id: str, run_id: str) -> RunRecord | None:
        raw = await self.client.get(f"{self._thread(principal_key, thread_id)}:run:{run_id}")
        return None if raw is None else RunRecord(**orjson.loads(raw))

    async def delete_run(self, principal_key: str, thread_id: str, run_id: str) -> None:
        key = self._thread(principal_key, thread_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(f"{key}:run:{run_id}")
        pipe.zrem(f"{key}:runs", run_id)
        await pipe.execute()

    async def runs(self, principal_key: str, thread_id: str) -> list[RunRecord]:
        key = self._thread(principal_key, thread_id)
        run_ids = [i.decode() for i in await self.client.zrevrange(f"{key}:runs", 0, -1)]
        if not run_ids:
            return []
        raws = await self.client.mget([f"{key}:run:{run_id}" for run_id in run_ids])
        return [RunRecord(**orjson.loads(raw)) for raw in raws if raw is not None]


@dataclass
class MemoryThreadStore:
    """One worker's threads (the in-memory checkpoints are per worker too), at most
    `max_threads` of them: the oldest go first."""

    max_threads: int
    _threads: dict[str, ThreadRecord] = field(default_factory=dict)
    _runs: dict[str, dict[str, RunRecord]] = field(default_factory=dict)

    def _keep(self, key: str, thread: ThreadRecord) -> None:
        self._threads[key] = thread
        while len(self._threads) > self.max_threads:
            oldest = next(iter(self._threads))
            del self._threads[oldest]
            self._runs.pop(oldest, None)

    async def put_thread(self, principal_key: str, thread: ThreadRecord) -> None:
        self._keep(scoped(principal_key, thread.thread_id), thread)

    async def add_thread(self, principal_key: str, thread: ThreadRecord) -> bool:
        key = scoped(principal_key, thread.thread_id)
        if key in self._threads:
            return False
        self._keep(key, thread)
        return True

    async def get_thread(self, principal_key: str, thread_id: str) -> ThreadRecord | None:
        return self._threads.get(scoped(principal_key, thread_id))

    async def threads(self, principal_key: str) -> list[ThreadRecord]:
        prefix = f"{principal_key}/"
        return [t for k, t in reversed(self._threads.items()) if k.startswith(prefix)]

    async def delete_thread(self, principal_key: str, thread_id: str) -> None:
        key = scoped(principal_key, thread_id)
        self._threads.pop(key, None)
        self._runs.pop(key, None)

    async def put_run(self, principal_key: str, run: RunRecord) -> None:
        runs = self._runs.setdefault(scoped(principal_key, run.thread_id), {})
        runs[run.run_id] = run
        for run_id in list(runs)[:-MAX_RUNS_PER_THREAD]:
            del runs[run_id]

    async def get_run(self, principal_key: str, thread_id: str, run_id: str) -> RunRecord | None:
        return self._runs.get(scoped(principal_key, thread_id), {}).get(run_id)

    async def runs(self, principal_key: str, thread_id: str) -> list[RunRecord]:
        return list(reversed(self._runs.get(scoped(principal_key, thread_id), {}).values()))

    async def delete_run(self, principal_key: str, thread_id: str, run_id: str) -> None:
        self._runs.get(scoped(principal_key, thread_id), {}).pop(run_id, None)
