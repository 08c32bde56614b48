"""Prometheus metrics, correct under several gunicorn workers.

`rillet serve` sets PROMETHEUS_MULTIPROC_DIR before the workers start, so every metric
below writes to per-process files, and gunicorn's master sums them on its own metrics
port (serving/gunicorn_conf.py). Labels are bounded: endpoint, outcome, stage and cache
name, never thread or run ids.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

# Latency buckets aimed at the targets we sell: TTFT < 500 ms, inter-token < 50 ms.
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2.5, 5, 10)
_ITL_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1)
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

TIME_TO_FIRST_TOKEN = Histogram(
    "rillet_time_to_first_token_seconds",
    "From request accepted to the first token written to the client.",
    ["endpoint"],
    buckets=_TTFT_BUCKETS,
)
INTER_TOKEN_LATENCY = Histogram(
    "rillet_inter_token_latency_seconds",
    "Gap between consecutive token writes to the client (after coalescing).",
    ["endpoint"],
    buckets=_ITL_BUCKETS,
)
EVENT_LOOP_LAG = Histogram(
    "rillet_event_loop_lag_seconds",
    "How late a worker's event loop wakes a task that slept a fixed 50 ms: what every "
    "stream on it waits for; past server.max_event_loop_lag_ms new streams are refused.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
ACTIVE_STREAMS = Gauge(
    "rillet_active_streams",
    "Streams being served now.",
    multiprocess_mode="livesum",
)
STREAM_CAPACITY = Gauge(
    "rillet_stream_capacity",
    "Streams this pod admits at once (summed over its workers); past it, 503.",
    multiprocess_mode="livesum",
)
AUTH_FAILURES = Counter(
    "rillet_auth_failures_total", "Requests refused for missing or bad credentials (401)."
)
LIMITED = Counter(
    "rillet_requests_limited_total",
    "Requests refused by a per-principal limit (429), by limit.",
    ["reason"],
)
REQUESTS = Counter(
    "rillet_requests_total",
    "Chat requests by endpoint and outcome.",
    ["endpoint", "outcome"],
)
STAGE_DURATION = Histogram(
    "rillet_stage_duration_seconds",
    "Time spent per stage of a run.",
    ["stage"],
    buckets=_STAGE_BUCKETS,
)
CACHE_REQUESTS = Counter(
    "rillet_cache_requests_total",
    "Cache lookups by cache and result (hit or miss).",
    ["cache", "result"],
)
THREADS_EVICTED = Counter(
    "rillet_memory_threads_evicted_total",
    "Threads the in-memory state dropped: past state.memory_max_threads (least recently "
    "used first) or unused for state.checkpoint_ttl_seconds.",
    ["reason"],
)
STATE_ERRORS = Counter(
    "rillet_state_errors_total",
    "Thread state store failures by reason (state_full: Redis refused a write for memory; "
    "state_unavailable: Redis could not be reached; state_corrupt: a stored checkpoint "
    "could not be read back whole) and by what was refused (admission, checkpoint_save, "
    "checkpoint_read, run_log, cache, request).",
    ["reason", "operation"],
)
TOKENS_STREAMED = Counter(
    "rillet_tokens_streamed_total",
    "Model tokens (chunks) streamed to clients.",
    ["endpoint"],
)


@contextmanager
def timed_stage(stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        STAGE_DURATION.labels(stage).observe(time.perf_counter() - start)
