"""LLM providers end to end: the real `openai` and `anthropic` SDKs (directly, and inside
Rillet through langchain-openai and langchain-anthropic) against `rillet fake-llm`, a local
server that speaks OpenAI's and Anthropic's streaming wire protocols."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from httpx_sse import connect_sse

from rillet_runtime.fakellm import answer_tokens
from tests.support.servers import FakeLLM, Process, fake_llm_process, rillet_server

TOKENS = 200  # 20 ms apart: a 4 s answer, long enough to disconnect in the middle
EXPECTED = "".join(answer_tokens(TOKENS))
QUESTION = "How do I install Rillet?"


@pytest.fixture(scope="module")
def fake(module_tmp: Path) -> Iterator[FakeLLM]:
    flags = ["--ttft-ms", "20", "--token-delay-ms", "20", "--answer-tokens", str(TOKENS)]
    with fake_llm_process(module_tmp, *flags) as process:
        yield process


@pytest.fixture(scope="module")
def failing_fake(module_tmp: Path) -> Iterator[FakeLLM]:
    with fake_llm_process(module_tmp, "--error-rate", "1.0") as process:
        yield process


def stream(url: str, message: str = QUESTION) -> list[tuple[str, dict[str, object]]]:
    with (
        httpx.Client(timeout=60) as client,
        connect_sse(client, "POST", f"{url}/v1/chat/stream", json={"message": message}) as source,
    ):
        return [(sse.event, json.loads(sse.data)) for sse in source.iter_sse()]


def answer_of(events: list[tuple[str, dict[str, object]]]) -> str:
    return "".join(str(data["text"]) for name, data in events if name == "token")


async def test_official_sdks_parse_the_fake_servers_streams(fake: FakeLLM) -> None:
    """The real openai and anthropic SDKs against the fake server's wire formats."""
    oai = openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="test", max_retries=0)
    chunks = await oai.chat.completions.create(
        model="fake",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_headers={"x-fake-token-delay-ms": "0"},
    )
    text = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
    assert text == EXPECTED
    await oai.close()

    claude = anthropic.AsyncAnthropic(base_url=fake.url, api_key="test", max_retries=0)
    async with claude.messages.stream(
        model="claude-fake",
        max_tokens=100,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-fake-token-delay-ms": "0"},
    ) as message_stream:
        text = "".join([t async for t in message_stream.text_stream])
    assert text == EXPECTED
    with pytest.raises(anthropic.RateLimitError):
        await claude.messages.create(
            model="claude-fake",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-error": "429"},
        )
    await claude.close()


@pytest.fixture(scope="module")
def openai_server(module_tmp: Path, fake: FakeLLM) -> Iterator[Process]:
    with rillet_server(
        module_tmp,
        workers=1,
        **fake.openai_settings(),
    ) as server:
        yield server


def test_langchain_openai_streams_through_rillet(openai_server: Process, fake: FakeLLM) -> None:
    events = stream(openai_server.url)
    assert [name for name, _ in events][:2] == ["metadata", "sources"]
    assert events[-1][0] == "done"
    assert answer_of(events) == EXPECTED
    sent = httpx.get(f"{fake.url}/_fake/last_request").json()
    assert sent["model"] == "fake"
    assert sent["stream"] is True
    assert sent["messages"][0]["role"] == "system"
    # The model got the same passages, in the same order, as the client's `sources` event.
    first_source = events[1][1]["sources"][0]["id"]
    assert f'<source n="1" id="{first_source}"' in sent["messages"][0]["content"]
    assert sent["messages"][-1] == {"role": "user", "content": QUESTION}


def test_client_disconnect_stops_the_upstream_request_within_a_second(
    openai_server: Process, fake: FakeLLM
) -> None:
    with (
        httpx.Client(timeout=60) as client,
        connect_sse(
            client,
            "POST",
            f"{openai_server.url}/v1/chat/stream",
            json={"message": "tell me a long story"},
        ) as source,
    ):
        tokens = 0
        for sse in source.iter_sse():
            tokens += sse.event == "token"
            if tokens == 3:
                break
        run_started = max(r["started_at"] for r in fake.stats()["requests"])  # type: ignore[union-attr]
    disconnected_at = time.time()

    deadline = time.monotonic() + 5
    record: dict[str, object] = {}
    while time.monotonic() < deadline:
        records = [r for r in fake.stats()["requests"] if r["started_at"] == run_started]  # type: ignore[union-attr]
        record = records[0]
        if record["outcome"] != "running":
            break
        time.sleep(0.05)
    assert record["outcome"] == "cancelled"
    assert int(record["tokens_sent"]) < TOKENS  # type: ignore[call-overload]
    assert float(record["ended_at"]) - disconnected_at < 1.0  # type: ignore[arg-type]


def test_langchain_anthropic_streams_through_rillet(module_tmp: Path, fake: FakeLLM) -> None:
    with rillet_server(
        module_tmp,
        workers=1,
        model__provider="anthropic",
        model__name="claude-fake",
        model__base_url=fake.url,
        model__api_key="test-key",
    ) as server:
        events = stream(server.url)
    assert events[-1][0] == "done"
    assert answer_of(events) == EXPECTED
    done = events[-1][1]
    assert done["usage"]["completion_tokens"] == TOKENS  # type: ignore[index]
    sent = httpx.get(f"{fake.url}/_fake/last_request").json()
    assert sent["model"] == "claude-fake"
    assert (
        "<source" in sent["system"]
        if isinstance(sent["system"], str)
        else "<source" in sent["system"][0]["text"]
    )


def test_failing_provider_gives_an_error_event_then_the_breaker_opens(
    module_tmp: Path, failing_fake: FakeLLM
) -> None:
    with rillet_server(
        module_tmp,
        workers=1,
        **failing_fake.openai_settings(),
        model__max_retries="0",
        model__breaker_failure_threshold="3",
        model__breaker_reset_seconds="60",
    ) as server:
        outcomes = [stream(server.url)[-1] for _ in range(5)]
    assert all(name == "error" for name, _ in outcomes)
    assert {data["code"] for _, data in outcomes} == {"provider_unavailable"}
    assert all(data["retryable"] is True for _, data in outcomes)
    assert failing_fake.stats()["started"] == 3  # calls 4 and 5 never reached the provider


def test_fallback_provider_answers_when_the_primary_fails(
    module_tmp: Path, fake: FakeLLM, failing_fake: FakeLLM
) -> None:
    fallback = {
        "provider": "anthropic",
        "name": "claude-fake",
        "base_url": fake.url,
        "api_key": "k",
    }
    with rillet_server(
        module_tmp,
        workers=1,
        **failing_fake.openai_settings(),
        model__max_retries="0",
        model__fallback=json.dumps(fallback),
    ) as server:
        events = stream(server.url)
    assert events[-1][0] == "done"
    assert answer_of(events) == EXPECTED
    assert fake.stats()["requests"][-1]["api"] == "anthropic"  # type: ignore[index]
