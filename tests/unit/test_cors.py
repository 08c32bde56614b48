"""CORS: off unless origins are listed; `*` only with credentials a page must hold; a
preflight answered before routing, so it needs no principal."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from rillet_runtime.app import create_app
from rillet_runtime.settings import Settings

PAGE = "http://127.0.0.1:5173"
KEYED = {"mode": "api_keys", "api_keys": {"path": "/nonexistent"}}


def settings(cors: dict[str, Any] | None = None, auth: dict[str, Any] | None = None) -> Settings:
    return Settings.model_validate({"server": {"cors": cors or {}}, "auth": auth or KEYED})


def preflight(app_settings: Settings, origin: str = PAGE, headers: str = "authorization") -> Any:
    """What a browser asks before a POST with an API key (no app lifespan: nothing else
    could answer without one)."""
    client = TestClient(create_app(app_settings))
    return client.options(
        "/threads",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        },
    )


def test_off_by_default() -> None:
    cors = Settings.model_validate({}).server.cors
    assert cors.allow_origins == []
    assert not cors.allow_credentials
    response = preflight(settings())
    assert "access-control-allow-origin" not in response.headers


def test_a_listed_origin_is_answered_before_any_principal_is_asked_for() -> None:
    response = preflight(settings({"allow_origins": [PAGE], "max_age_seconds": 120}))
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == PAGE
    allowed = response.headers["access-control-allow-headers"].lower().split(", ")
    assert {"authorization", "x-api-key", "last-event-id", "content-type"} <= set(allowed)
    assert response.headers["access-control-max-age"] == "120"
    assert "access-control-allow-credentials" not in response.headers


def test_another_origin_or_header_is_refused() -> None:
    listed = settings({"allow_origins": [PAGE]})
    refused = preflight(listed, origin="http://127.0.0.1:5174")
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    assert preflight(listed, headers="x-custom").status_code == 400


@pytest.mark.parametrize(
    "origin",
    ["https://chat.example.com/", "https://chat.example.com/app", "chat.example.com", "HTTPS://A"],
)
def test_an_origin_is_what_a_browser_sends(origin: str) -> None:
    with pytest.raises(ValidationError, match=r"server\.cors\.allow_origins"):
        settings({"allow_origins": [origin]})


def test_any_origin_needs_credentials_the_page_holds() -> None:
    assert settings({"allow_origins": ["*"]}).server.cors.allow_origins == ["*"]
    with pytest.raises(ValidationError, match=r"auth\.mode none"):
        settings({"allow_origins": ["*"]}, auth={"mode": "none"})
    with pytest.raises(ValidationError, match=r"auth\.mode trusted_header"):
        settings({"allow_origins": ["*"]}, auth={"mode": "trusted_header"})
    with pytest.raises(ValidationError, match="allow_credentials"):
        settings({"allow_origins": ["*"], "allow_credentials": True})
