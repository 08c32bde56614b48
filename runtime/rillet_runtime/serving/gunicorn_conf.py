"""Gunicorn config module (`gunicorn -c python:rillet_runtime.serving.gunicorn_conf`).

Every value derives from the runtime settings, so the pod's one settings file drives
the process model too.
"""

from __future__ import annotations

import math
import os
from typing import Any

from rillet_runtime.settings import Settings


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    server = settings.server
    return {
        "bind": [f"{server.host}:{server.port}"],
        "workers": server.workers,
        "worker_class": "rillet_runtime.serving.worker.RilletWorker",
        "timeout": server.worker_timeout_seconds,
        "graceful_timeout": math.ceil(server.graceful_timeout_seconds),
        "keepalive": math.ceil(server.keepalive_seconds),
        "max_requests": server.max_requests,
        "max_requests_jitter": server.max_requests_jitter,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": os.environ.get("RILLET_LOG_LEVEL", "info"),
        "proc_name": "rillet",
        # Read-only root filesystem in the pod: heartbeat files go to memory.
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
    }


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the multiprocess metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


globals().update(gunicorn_options(Settings()))
