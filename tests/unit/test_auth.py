"""Authentication's pure parts: where credentials are read from, and what is refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from starlette.datastructures import Headers

from rillet_runtime.auth import TrustedHeader, Unauthenticated, presented_token
from rillet_runtime.events import Usage
from rillet_runtime.settings import JwtSettings


def test_a_key_comes_from_the_bearer_header_or_x_api_key() -> None:
    assert presented_token(Headers({"authorization": "Bearer abc"})) == "abc"
    assert presented_token(Headers({"authorization": "bearer  abc "})) == "abc"
    assert presented_token(Headers({"x-api-key": "xyz"})) == "xyz"
    assert presented_token(Headers({"authorization": "Basic abc"})) is None
    assert presented_token(Headers({})) is None


async def test_a_trusted_header_sent_twice_is_refused() -> None:
    """A gateway that appends instead of replacing would let the client's copy win."""
    gateway = TrustedHeader("X-Auth-Request-User")
    assert (await gateway.authenticate(Headers({"x-auth-request-user": "alice"}))).name == "alice"
    doubled = Headers(raw=[(b"x-auth-request-user", b"mallory"), (b"x-auth-request-user", b"al")])
    with pytest.raises(Unauthenticated):
        await gateway.authenticate(doubled)
    with pytest.raises(Unauthenticated):
        await gateway.authenticate(Headers({}))


@pytest.mark.parametrize("algorithm", ["none", "HS256", "hs512"])
def test_jwt_settings_refuse_unsigned_and_shared_secret_algorithms(algorithm: str) -> None:
    with pytest.raises(ValidationError, match="refused"):
        JwtSettings(audience="a", public_key="pem", algorithms=["RS256", algorithm])


def test_a_run_is_charged_what_streamed_when_the_provider_never_reported() -> None:
    assert Usage().charge == 0
    assert Usage(streamed_chunks=12).charge == 12
    reported = Usage({"prompt_tokens": 10, "completion_tokens": 60}, streamed_chunks=59)
    assert reported.charge == 70
