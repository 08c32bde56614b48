"""Gunicorn config module (`gunicorn -c python:rillet_runtime.serving.gunicorn_conf`).

Every value derives from the runtime settings, so the pod's one settings file drives
the process model too. The master also serves /metrics, on `server.metrics_port`: one
scrape per pod sums every worker's files, and the API's port exposes no metrics.
"""

from __future__ import annotations

import math
import os
from typing import Any

from rillet_runtime.settings import ServerSettings, Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # set by `rillet serve` before gunicorn starts


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


def serve_metrics(server: ServerSettings, log: Any) -> None:
    """Prometheus' HTTP server over every worker's multiprocess files, in this process.

    The master, not a worker: it outlives workers (a recycled worker's counters stay in
    the sums) and it is one per pod, so a scrape never lands on a single worker's view.
    Imported here, not at the top: the workers need none of it.
    """
    if server.metrics_port is None:
        return
    if not os.environ.get(MULTIPROC_ENV):
        log.warning("metrics not served: %s is unset (`rillet serve` sets it)", MULTIPROC_ENV)
        return
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    where = f"{server.host}:{server.metrics_port}"
    try:
        start_http_server(server.metrics_port, server.host, registry)
    except OSError as exc:  # before any worker starts; gunicorn prints a RuntimeError and exits
        raise RuntimeError(
            f"server.metrics_port: cannot listen on {where}: {exc.strerror}"
        ) from None
    log.info("Metrics at http://%s/metrics", where)


def when_ready(arbiter: Any) -> None:
    serve_metrics(_SETTINGS.server, arbiter.log)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the multiprocess metrics."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


_SETTINGS = Settings()
globals().update(gunicorn_options(_SETTINGS))
