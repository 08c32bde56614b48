"""What counts as Redis refusing a write for memory, however it says so: redis-py's own
error, or the reply a Lua script wraps on Redis 6 (the integration tests run Redis 7)."""

from __future__ import annotations

import pytest
import redis
from redis.exceptions import OutOfMemoryError

from rillet_runtime.events import refused_for_memory
from rillet_runtime.llm.errors import classify_error

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
