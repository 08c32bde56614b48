"""The API's surface against a real `rillet serve` with API keys: the schema and docs pages
only when turned on and then only for a principal, and the input caps (message count,
characters over all messages) the same on the OpenAI-compatible and the native endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.keys import api_key_settings, write_api_keys
from tests.support.servers import RilletServer, rillet_server

KEY = "key-alice-0123456789"
MAX_MESSAGES = 3
MAX_INPUT_CHARS = 200


@pytest.fixture(scope="module")
def server(module_tmp: Path) -> Iterator[RilletServer]:
    keys = write_api_keys(module_tmp / "keys", {"alice": KEY})
    with rillet_server(
        module_tmp,
        workers=1,
        server__docs="true",
        limits__max_messages=str(MAX_MESSAGES),
        limits__max_input_chars=str(MAX_INPUT_CHARS),
        **api_key_settings(keys),
    ) as process:
        yield process


@pytest.fixture
def client(server: RilletServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        yield client


def test_docs_when_turned_on_need_a_principal(server: RilletServer, client: httpx.Client) -> None:
    for path in ("/openapi.json", "/docs"):
        refused = httpx.get(server.url + path, timeout=10)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["error"]["code"] == "unauthenticated"
    schema = client.get("/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"]
    assert "/openapi.json" not in schema["paths"]  # the docs routes document nothing
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/openapi.json" in page.text


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def assert_refused(response: httpx.Response, field: str, says: str) -> None:
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (
        "invalid_request",
        field,
        "invalid_request_error",
    )
    assert says in error["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_openai_requests_past_the_caps_are_refused(client: httpx.Client, stream: bool) -> None:
    def complete(messages: list[dict[str, Any]]) -> httpx.Response:
        body = {"model": "rillet", "messages": messages, "stream": stream}
        return client.post("/v1/chat/completions", json=body)

    too_many = [user("a"), {"role": "assistant", "content": "b"}, user("c"), user("d")]
    assert_refused(complete(too_many), "messages", f"at most {MAX_MESSAGES}")
    # Characters count over every message, text parts included.
    parts = {"role": "system", "content": [{"type": "text", "text": "x" * 150}]}
    assert_refused(complete([parts, user("y" * 51)]), "messages", "201 characters")
    at_the_cap = complete([parts, user("How do I install Rillet?".ljust(50))])
    assert at_the_cap.status_code == 200


async def test_the_openai_sdk_reads_the_refusal(server: RilletServer) -> None:
    sdk = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        await sdk.chat.completions.create(model="rillet", messages=[user("z" * 201)])
    await sdk.close()
    assert refused.value.code == "invalid_request"
    assert refused.value.param == "messages"


@pytest.mark.parametrize("path", ["/v1/chat", "/v1/chat/stream"])
def test_native_requests_past_the_cap_are_refused(client: httpx.Client, path: str) -> None:
    """`limits.max_input_chars` holds on the native API too when it is below the schema's
    own 32,000-character cap on `message`."""
    assert_refused(client.post(path, json={"message": "w" * 201}), "message", "201 characters")
    assert client.post("/v1/chat", json={"message": "v" * 200}).status_code == 200
