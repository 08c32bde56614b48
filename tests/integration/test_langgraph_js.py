"""LangGraph's JS SDK (`@langchain/langgraph-sdk`, pinned in tests/js/package.json) against
`rillet serve` with API keys, two workers and a real Redis: a thread, a run streamed as
messages-tuple, and the same run rejoined from its first event (Last-Event-ID -1) on
whichever worker takes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rillet_runtime.fakellm import answer_tokens
from tests.support.js import run_node
from tests.support.keys import api_key_settings, write_api_keys
from tests.support.processes import RedisServer
from tests.support.servers import RilletServer, fake_llm_process, rillet_server

TOKENS = 40
KEY = "key-js-sdk-0123456789"


@pytest.fixture(scope="module")
def server(module_tmp: Path, redis_server: RedisServer) -> Iterator[RilletServer]:
    keys = write_api_keys(module_tmp / "keys", {"web": KEY})
    with (
        fake_llm_process(module_tmp, "--answer-tokens", str(TOKENS)) as fake,
        rillet_server(
            module_tmp,
            workers=2,
            state__checkpointer="redis",
            state__redis_url=redis_server.url,
            **api_key_settings(keys),
            **fake.openai_settings(),
        ) as served,
    ):
        yield served


def test_the_js_sdk_streams_a_run_and_rejoins_it_from_its_first_event(
    server: RilletServer,
) -> None:
    result = run_node("langgraph_rejoin.cjs", server.url, KEY, "How does Rillet stream?")
    assert result["status"] == "success"
    streamed, rejoined = result["streamed"], result["rejoined"]
    assert streamed["text"] == "".join(answer_tokens(TOKENS))
    assert streamed["events"][0] == "metadata"
    assert streamed["events"].count("messages") >= 2  # token by token, not one message
    assert rejoined == streamed  # the same events, the same text
