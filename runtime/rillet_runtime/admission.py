"""Per-worker admission: the stream cap and the drain state.

Draining starts either from SIGTERM (the gunicorn worker calls `begin_drain`) or from the
drain file that `rillet drain` writes in a Kubernetes preStop hook, which every worker of
the pod sees at once. While draining, /readyz fails and new streams get 503; streams
already running go on to the end. The file is looked for by a task the lifespan holds, in
a thread: a stat can block (a slow volume), and requests only read the flag it sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from rillet_runtime.metrics import ACTIVE_STREAMS

_DRAIN_FILE_CHECK_INTERVAL = 0.25


class StreamSlot:
    """One admitted stream's share of the worker: counted here and in the active-streams
    gauge from admission until `release`, which gives both back exactly once."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.released = False
        admission.active_streams += 1
        ACTIVE_STREAMS.inc()

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._admission.active_streams -= 1
            ACTIVE_STREAMS.dec()


class Admission:
    def __init__(self, max_streams: int, drain_file: Path | None = None) -> None:
        self.max_streams = max_streams
        self.active_streams = 0
        self._drain_file = drain_file
        self._draining = False
        self._drain_started: float | None = None

    @property
    def draining(self) -> bool:
        return self._draining

    @contextlib.asynccontextmanager
    async def watching_drain_file(self) -> AsyncIterator[None]:
        """Drain once the drain file appears, for as long as this is held (the lifespan)."""
        if self._drain_file is None:
            yield
            return
        watcher = asyncio.create_task(self._drain_when_present(self._drain_file))
        try:
            yield
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _drain_when_present(self, drain_file: Path) -> None:
        while not self._draining:
            if await asyncio.to_thread(drain_file.exists):
                self.begin_drain()
            await asyncio.sleep(_DRAIN_FILE_CHECK_INTERVAL)

    def begin_drain(self) -> None:
        if not self._draining:
            self._draining = True
            self._drain_started = time.monotonic()

    def seconds_draining(self) -> float:
        return 0.0 if self._drain_started is None else time.monotonic() - self._drain_started

    def admit(self) -> StreamSlot | None:
        """A slot for one more stream; None when the worker is full (the caller answers 503)."""
        if self.active_streams >= self.max_streams:
            return None
        return StreamSlot(self)
