"""The per-ChatService work queue: at most one reconcile of a ChatService at a time, and
any number of requests while one runs coalesce into one more run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


class ReconcileQueue:
    def __init__(self, work: Callable[[str, str], Awaitable[None]]) -> None:
        self._work = work
        self._locks: dict[Key, asyncio.Lock] = {}
        self._pending: dict[Key, asyncio.Task[None]] = {}

    async def run(self, namespace: str, name: str) -> None:
        """Run the work now (after any run in progress), its errors to the caller."""
        lock = self._locks.setdefault((namespace, name), asyncio.Lock())
        async with lock:
            await self._work(namespace, name)

    def request(self, namespace: str, name: str) -> None:
        """Run the work soon, in the background; errors are logged, not raised."""
        key = (namespace, name)
        if key not in self._pending:  # a queued run will see this change too
            task = asyncio.create_task(self._queued(key))
            self._pending[key] = task

    async def _queued(self, key: Key) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            self._pending.pop(key, None)
            try:
                await self._work(*key)
            except Exception:
                log.exception("reconcile of %s/%s failed; the next event or resync retries", *key)

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)

    async def aclose(self) -> None:
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
