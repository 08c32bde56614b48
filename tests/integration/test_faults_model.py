"""Faults between `rillet serve` and its model provider, injected by a real Toxiproxy in
front of `rillet fake-llm` (a connection cut or reset mid-answer, a stalled stream) and by
the fake model itself (bursts of 500s). A second fake model is the configured fallback.
Each test records what the client saw and reads back what the thread holds.
docs/reliability.md has the table these tests prove."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rillet_runtime.fakellm import answer_tokens
from tests.support.faults import Seen, ask, stored_turns
from tests.support.processes import RedisServer, wait_for
from tests.support.servers import FakeLLM, RilletServer, fake_llm_process, rillet_server
from tests.support.toxiproxy import Proxy, Toxiproxy

PRIMARY_TOKENS, FALLBACK_TOKENS = 30, 12  # different answers: the text says who answered
PRIMARY = "".join(answer_tokens(PRIMARY_TOKENS))
FALLBACK = "".join(answer_tokens(FALLBACK_TOKENS))
TIMEOUT_SECONDS = 2  # model.timeout_seconds: no byte for this long ends the stream
BREAKER_FAILURES = 3  # model.breaker_failure_threshold
BREAKER_RESET_SECONDS = 4  # model.breaker_reset_seconds
WORKERS = 2  # each worker keeps its own breakers
MAX_REQUESTS = 10 * WORKERS * BREAKER_FAILURES  # far more than any breaker should need


@pytest.fixture(scope="module")
def primary(module_tmp: Path) -> Iterator[FakeLLM]:
    flags = ["--ttft-ms", "50", "--token-delay-ms", "20", "--answer-tokens", str(PRIMARY_TOKENS)]
    with fake_llm_process(module_tmp, *flags) as process:
        yield process


@pytest.fixture(scope="module")
def fallback(module_tmp: Path) -> Iterator[FakeLLM]:
    flags = ["--ttft-ms", "10", "--token-delay-ms", "5", "--answer-tokens", str(FALLBACK_TOKENS)]
    with fake_llm_process(module_tmp, *flags) as process:
        yield process


@pytest.fixture(scope="module")
def model_proxy(toxiproxy: Toxiproxy, primary: FakeLLM) -> Proxy:
    return toxiproxy.proxy("model", primary.url.removeprefix("http://"))


@pytest.fixture(scope="module")
def server(
    module_tmp: Path,
    model_proxy: Proxy,
    fallback: FakeLLM,
    redis_server: RedisServer,
) -> Iterator[RilletServer]:
    provider = {"provider": "openai", "name": "fake", "timeout_seconds": str(TIMEOUT_SECONDS)}
    # No SDK retries, so each request is one call and the fake's counts are the breaker's.
    provider["max_retries"] = "0"
    settings = {
        **{f"model__{key}": value for key, value in provider.items()},
        "model__base_url": f"http://{model_proxy.address}/v1",
        **{f"model__fallback__{key}": value for key, value in provider.items()},
        "model__fallback__base_url": f"{fallback.url}/v1",
        "model__breaker_failure_threshold": str(BREAKER_FAILURES),
        "model__breaker_reset_seconds": str(BREAKER_RESET_SECONDS),
        "state__checkpointer": "redis",
        "state__redis_url": redis_server.url,
    }
    with rillet_server(module_tmp, workers=WORKERS, **settings) as process:
        yield process


def configure(fake: FakeLLM, **config: Any) -> None:
    httpx.post(f"{fake.url}/_fake/config", json=config, timeout=5).raise_for_status()


def calls(fake: FakeLLM) -> int:
    """Requests the fake model received, answered or refused."""
    started = fake.stats()["started"]
    assert isinstance(started, int)
    return started


@pytest.fixture(autouse=True)
def healthy_models(
    toxiproxy: Toxiproxy, primary: FakeLLM, fallback: FakeLLM, server: RilletServer
) -> Iterator[None]:
    """Each fault starts and ends with both models answering and every breaker closed."""
    yield
    toxiproxy.reset()
    configure(primary, error_rate=0.0)
    configure(fallback, error_rate=0.0)
    wait_for(
        "the primary model to answer again",
        lambda: all(ask(server.url, "are you back?").text == PRIMARY for _ in range(2 * WORKERS)),
    )


def bytes_until_token(fake: FakeLLM, tokens: int) -> int:
    """How many bytes the model sends (status line and headers included) up to the end of
    its `tokens`-th token: where a `limit_data` toxic cuts the answer."""
    body = json.dumps(
        {"model": "fake", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    host, port = fake.url.removeprefix("http://").split(":")
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    received = b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        while True:
            received += sock.recv(65536)
            # The first frame (the role) holds `"content":""` too: the token is one further.
            starts = [match.start() for match in re.finditer(rb'"content":', received)]
            if len(starts) > tokens and (end := received.find(b"\n\n\r\n", starts[tokens])) > 0:
                return end + 4  # the end of the SSE frame, then of its HTTP chunk


def test_500_bursts_open_the_breaker_and_the_fallback_answers(
    server: RilletServer, primary: FakeLLM, fallback: FakeLLM
) -> None:
    """The primary answers 500 to everything: the fallback answers every request; once a
    worker has seen `breaker_failure_threshold` failures its breaker opens and requests
    skip the primary. Both failing: `provider_unavailable`, then at once from the open
    breakers with no call to either. Both healthy again: after `breaker_reset_seconds` the
    primary answers again. First in the module: every breaker starts with no failures."""
    configure(primary, error_rate=1.0)
    before = calls(primary)
    answered: list[Seen] = []
    while len(answered) < MAX_REQUESTS:
        primary_calls = calls(primary)
        answered.append(ask(server.url, f"question {len(answered)}", "burst"))
        if calls(primary) == primary_calls:  # an open breaker: the primary was not called
            break
    assert calls(primary) - before >= BREAKER_FAILURES, "opened before its threshold"
    assert len(answered) < MAX_REQUESTS, "the breaker never opened"
    assert all(seen.text == FALLBACK and seen.saved for seen in answered)
    expected = [(f"question {i}", FALLBACK) for i in range(len(answered))]
    assert stored_turns(server.url, "burst") == expected

    configure(fallback, error_rate=1.0)
    refused: list[Seen] = []
    while len(refused) < MAX_REQUESTS:
        counts = calls(primary), calls(fallback)
        refused.append(ask(server.url, "anyone?"))
        if (calls(primary), calls(fallback)) == counts:  # both open: neither was called
            break
    assert len(refused) < MAX_REQUESTS, "the breakers never opened"
    for seen in refused:
        name, data = seen.last
        assert (name, data["code"], data["retryable"]) == ("error", "provider_unavailable", True)

    configure(primary, error_rate=0.0)
    configure(fallback, error_rate=0.0)
    time.sleep(BREAKER_RESET_SECONDS)  # the breakers' reset time: each lets a call through
    assert all(ask(server.url, "back?").text == PRIMARY for _ in range(2 * WORKERS))


def test_model_connection_cut_after_ten_tokens(
    server: RilletServer, model_proxy: Proxy, primary: FakeLLM, fallback: FakeLLM
) -> None:
    """The model's connection closes after exactly ten tokens: the client has those ten,
    then an error event naming the cause; a started answer never moves to the fallback."""
    limit = bytes_until_token(primary, 10)
    assert ask(server.url, "first question", "cut-model").text == PRIMARY
    fallback_calls = calls(fallback)
    with model_proxy.toxic("limit_data", bytes=limit):
        seen = ask(server.url, "second question", "cut-model")
    assert seen.cut is None
    assert seen.text == "".join(answer_tokens(PRIMARY_TOKENS)[:10])
    name, data = seen.last
    assert (name, data["code"], data["retryable"]) == ("error", "provider_unavailable", True)
    assert "connection" in data["message"]
    assert calls(fallback) == fallback_calls
    assert stored_turns(server.url, "cut-model") == [("first question", PRIMARY)]  # not half a turn
    assert ask(server.url, "second question", "cut-model").saved  # the client's retry
    assert stored_turns(server.url, "cut-model") == [
        ("first question", PRIMARY),
        ("second question", PRIMARY),
    ]


def test_model_connection_reset_mid_answer(server: RilletServer, model_proxy: Proxy) -> None:
    """A TCP reset (not a clean close) on the model's connection mid-answer: the same clear
    error, after the tokens that came before it."""

    def reset(seen: Seen) -> None:
        if len(seen.events) == 5:  # the model's next bytes meet a reset
            model_proxy.add("reset_peer", name="reset", timeout=0)

    seen = ask(server.url, "a question the model resets", "reset-model", on_event=reset)
    model_proxy.remove("reset")
    assert stored_turns(server.url, "reset-model") == []
    assert seen.cut is None
    name, data = seen.last
    assert (name, data["code"], data["retryable"]) == ("error", "provider_unavailable", True)
    assert "connection" in data["message"]
    assert 0 < len(seen.text) < len(PRIMARY)
    assert PRIMARY.startswith(seen.text)


def test_model_stalls_mid_answer(server: RilletServer, model_proxy: Proxy) -> None:
    """No byte from the model for longer than model.timeout_seconds: the stream ends with
    `provider_timeout` (here within a deadline of three times the timeout), not a hung client."""
    stalled_at: list[float] = []

    def stall(seen: Seen) -> None:
        if len(seen.events) == 5:
            model_proxy.add("timeout", name="stall", timeout=0)  # hold every byte, for ever
            stalled_at.append(time.monotonic())

    seen = ask(
        server.url,
        "a question the model stalls on",
        "stalled-model",
        on_event=stall,
        timeout=3 * TIMEOUT_SECONDS,
    )
    ended_after = time.monotonic() - stalled_at[0]
    model_proxy.remove("stall")
    print(f"stalled stream ended {ended_after:.2f} s after the stall")
    assert seen.cut is None, seen.cut
    assert PRIMARY.startswith(seen.text)
    name, data = seen.last
    assert (name, data["code"], data["retryable"]) == ("error", "provider_timeout", True)
    assert stored_turns(server.url, "stalled-model") == []
