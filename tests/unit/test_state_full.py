"""What counts as Redis refusing a write for memory, however it says so: redis-py's own
error, or the reply a Lua script wraps on Redis 6 (the integration tests run Redis 7); and
what a route outside a run answers for each Redis failure."""

from __future__ import annotations

import pytest
import redis
from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    MasterDownError,
    OutOfMemoryError,
    TryAgainError,
)
from starlette.testclient import TestClient

from rillet_runtime.app import create_app
from rillet_runtime.events import refused_for_memory
from rillet_runtime.llm.errors import classify_error
from rillet_runtime.settings import Settings

OOM = "command not allowed when used memory > 'maxmemory'."
REDIS_6_SCRIPT = f"Error running script (call to f_0a1b): @user_script:9: -OOM {OOM}"


@pytest.mark.parametrize(
    "refusal", [OutOfMemoryError(OOM), redis.ResponseError(REDIS_6_SCRIPT)], ids=["7", "6"]
)
def test_a_refusal_for_memory_is_state_full_and_retryable(refusal: Exception) -> None:
    assert refused_for_memory(refusal)
    info = classify_error(refusal)
    assert (info.code, info.retryable) == ("state_full", True)


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), None),
        (redis.ConnectionError("Connection refused"), "state_unavailable"),
        (ValueError(OOM), None),  # the words alone, not from Redis
    ],
)
def test_other_failures_are_not(failure: Exception, code: str | None) -> None:
    assert not refused_for_memory(failure)
    if code is not None:
        assert classify_error(failure).code == code


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (OutOfMemoryError(OOM), 503, "state_full"),
        (redis.ConnectionError("Connection refused"), 503, "state_unavailable"),
        (redis.TimeoutError("Timeout reading from socket"), 503, "state_unavailable"),
        (ClusterDownError("The cluster is down"), 503, "state_unavailable"),
        (MasterDownError("Link with MASTER is down"), 503, "state_unavailable"),
        (TryAgainError("Multiple keys request during rehashing of slot"), 503, "state_unavailable"),
        (ClusterError("TTL exhausted."), 503, "state_unavailable"),
        (redis.ResponseError("WRONGTYPE Operation against a key"), 500, "internal_error"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_a_route_outside_a_run_answers_what_a_retry_may_cure_with_503(
    failure: Exception, status: int, code: str
) -> None:
    """A thread read, a resume or a delete while Redis is full, gone or failing over: 503
    with Retry-After; a reply that says the request itself is wrong stays a 500."""
    app = create_app(Settings())

    @app.get("/fails")
    async def fails() -> None:
        raise failure

    answer = TestClient(app, raise_server_exceptions=False).get("/fails")
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code
    assert ("retry-after" in answer.headers) == (status == 503)
