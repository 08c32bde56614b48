"""Per-worker admission: the stream cap, the event loop's lag, and the drain state.

The cap is a count; the lag is what the worker's streams actually feel. A worker whose
event loop runs late (CPU-bound: too many streams for this machine, a heavy graph) delays
every token of every stream it holds, so past `max_loop_lag` it refuses new streams with
503 and Retry-After, whatever the count, and those it holds keep their pace. The lag is
sampled by a task that sleeps a short, fixed time and measures how late it wakes, and
averaged over its last few samples: one late wake (a collection, a worker's first request)
sheds nothing, a loop that stays late sheds until it catches up. A burst is the cap's to
shed: it is admitted before the loop falls behind (docs/benchmarks.md, Overload).

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

from rillet_runtime.metrics import ACTIVE_STREAMS, EVENT_LOOP_LAG

_DRAIN_FILE_CHECK_INTERVAL = 0.25
LAG_SAMPLE_SECONDS = 0.05
LAG_NEW_SAMPLE_WEIGHT = 0.2  # an exponential average over ~5 samples


def smoothed_lag(smoothed: float, sample: float) -> float:
    """The lag admission sees after one more sample."""
    return smoothed + LAG_NEW_SAMPLE_WEIGHT * (sample - smoothed)


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
    def __init__(
        self,
        max_streams: int,
        drain_file: Path | None = None,
        max_loop_lag: float | None = None,
    ) -> None:
        """`max_loop_lag`: seconds; None: the lag is measured but admits everything."""
        self.max_streams = max_streams
        self.max_loop_lag = max_loop_lag
        self.active_streams = 0
        self.loop_lag = 0.0
        self._drain_file = drain_file
        self._draining = False
        self._drain_started: float | None = None

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def overloaded(self) -> bool:
        return self.max_loop_lag is not None and self.loop_lag > self.max_loop_lag

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        """Measure the loop's lag, and drain once the drain file appears, for as long as
        this is held (the lifespan)."""
        watchers = [asyncio.create_task(self._measure_loop_lag())]
        if self._drain_file is not None:
            watchers.append(asyncio.create_task(self._drain_when_present(self._drain_file)))
        try:
            yield
        finally:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)

    async def _measure_loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asleep = loop.time()
            await asyncio.sleep(LAG_SAMPLE_SECONDS)
            sample = max(0.0, loop.time() - asleep - LAG_SAMPLE_SECONDS)
            self.loop_lag = smoothed_lag(self.loop_lag, sample)
            EVENT_LOOP_LAG.observe(sample)

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
