"""A uvicorn worker for gunicorn that drains live streams on SIGTERM.

Stock uvicorn stops accepting at once on SIGTERM and, with sse-starlette, cancels open
streams. Here the worker first drains: /readyz fails and new streams get 503 while the
listening socket stays open (workers hold their own copy of it), for `drain_seconds` or
until no stream is left. Then uvicorn shuts down as usual and waits for the streams
still running; gunicorn's graceful_timeout is the outer bound.

With `RILLET_BLOCKBUSTER=1` (every test server sets it; the `blocking-guard` extra) the
worker runs under blockbuster, the guard LangGraph's server runs graphs under: a blocking
call on the event loop (file, socket, SQLite, sleep, a held lock) raises instead of stalling
every stream of the worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any, ClassVar

from gunicorn.arbiter import Arbiter
from uvicorn.config import Config
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from rillet_runtime.admission import Admission

BLOCKBUSTER_ENV = "RILLET_BLOCKBUSTER"


class DrainingServer(Server):
    def __init__(self, config: Config, admission: Admission, drain_seconds: float) -> None:
        super().__init__(config)
        self.admission = admission
        self.drain_seconds = drain_seconds
        self.terminating = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and not self.terminating:
            self.terminating = True
            self.admission.begin_drain()
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        # Only SIGTERM ends a worker. A drain file (`rillet drain` in preStop) only turns
        # readiness off: were the worker to exit on it, gunicorn would start another, which
        # would see the file and exit too, and requests would hang on the churn.
        admission = self.admission
        if not self.should_exit and self.terminating and self._drain_done(admission):
            self.should_exit = True
        return await super().on_tick(counter)

    def _drain_done(self, admission: Admission) -> bool:
        return admission.active_streams == 0 or admission.seconds_draining() >= self.drain_seconds


class RilletWorker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
    }

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        state = self.wsgi.state
        server = DrainingServer(self.config, state.admission, state.settings.server.drain_seconds)
        self._install_sigquit_handler()
        started = time.monotonic()
        with blocking_calls_refused(os.environ.get(BLOCKBUSTER_ENV) == "1"):
            await server.serve(sockets=self.sockets)
        if not server.started:
            self.log.error("worker failed to boot after %.1fs", time.monotonic() - started)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


@contextlib.contextmanager
def blocking_calls_refused(enabled: bool) -> Iterator[None]:
    """Blockbuster over the worker's event loop, when `enabled` (blockbuster comes with the
    `blocking-guard` extra, so it is imported only then).

    The lifespan may block: it opens the pools, files and indexes before the first request
    and closes them after the last, when no stream shares the loop. It runs in uvicorn's
    lifespan task, whose root coroutine is `LifespanOn.main`, so everything under that frame
    is allowed; everything else (requests, streams, background tasks) is checked.
    """
    if not enabled:
        yield
        return
    try:
        from blockbuster import blockbuster_ctx
    except ImportError:
        raise RuntimeError(
            f"{BLOCKBUSTER_ENV}=1 needs blockbuster: pip install 'rillet[blocking-guard]'"
        ) from None

    with blockbuster_ctx() as guard:
        for function in guard.functions.values():
            function.can_block_in("uvicorn/lifespan/on.py", "main")
        yield
