"""Per-worker admission: the stream cap and the drain state.

Draining starts either from SIGTERM (the gunicorn worker calls `begin_drain`) or from the
drain file that `rillet drain` writes in a Kubernetes preStop hook, which every worker of
the pod sees at once. While draining, /readyz fails and new streams get 503; streams
already running go on to the end.
"""

from __future__ import annotations

import time
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
        self._file_checked_at = 0.0

    @property
    def draining(self) -> bool:
        if self._draining:
            return True
        if self._drain_file is not None:
            now = time.monotonic()
            if now - self._file_checked_at >= _DRAIN_FILE_CHECK_INTERVAL:
                self._file_checked_at = now
                if self._drain_file.exists():
                    self.begin_drain()
        return self._draining

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
