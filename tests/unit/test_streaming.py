"""The streaming core: ordering, coalescing, backpressure, cancellation, failures."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage

from rillet_runtime.api.langgraph.stream import LangGraphDialect
from rillet_runtime.events import RunEvent
from rillet_runtime.settings import StreamingSettings
from rillet_runtime.streaming import RunRequest, run_events
from tests.unit.models import ScriptedModel, StatusError, one_node_graph


class Slot:
    def __init__(self) -> None:
        self.releases = 0

    def release(self) -> None:
        self.releases += 1


def start(model: ScriptedModel, max_seconds: float = 30, **streaming: Any) -> tuple[Any, Slot]:
    slot_counter = Slot()
    request = RunRequest(
        graph=one_node_graph(model),
        graph_input={"messages": [HumanMessage(content="hi")]},
        config={"configurable": {"thread_id": "t"}},
        thread_id="t",
        run_id="r",
        endpoint="test",
    )
    settings = StreamingSettings(**streaming)
    events = run_events(request, settings, max_seconds, slot_counter)
    return events, slot_counter


async def collect(events: Any) -> list[RunEvent]:
    return [event async for event in events]


async def test_first_token_goes_alone_then_text_is_coalesced_by_size() -> None:
    model = ScriptedModel(tokens=["abcde"] * 20)
    events, slot = start(model, coalesce_max_chars=32, coalesce_max_ms=1000)
    received = await collect(events)

    assert next(e.event for e in received) == "metadata"
    assert received[-1].event == "done"
    tokens = [e.data["text"] for e in received if e.event == "token"]
    assert tokens[0] == "abcde"
    assert all(32 <= len(t) < 32 + 5 for t in tokens[1:-1])
    assert "".join(tokens) == "abcde" * 20
    assert [e.id for e in received] == list(range(1, len(received) + 1))
    assert slot.releases == 1


async def test_time_bound_flushes_slow_tokens_without_waiting_for_size() -> None:
    model = ScriptedModel(tokens=["a", "b", "c", "d"], delay=0.05)
    events, _ = start(model, coalesce_max_chars=32, coalesce_max_ms=5)
    tokens = [e.data["text"] for e in await collect(events) if e.event == "token"]
    assert tokens == ["a", "b", "c", "d"]


async def test_slow_reader_holds_back_the_producer() -> None:
    model = ScriptedModel(tokens=["x"] * 1000)
    events, _ = start(model, queue_max_events=4, coalesce_max_chars=1)
    assert (await anext(events)).event == "metadata"
    assert (await anext(events)).event == "token"
    await asyncio.sleep(0.2)  # the reader stalls; the producer must stall with it
    assert model.produced <= 4 + 3
    await events.aclose()


async def test_closing_the_stream_cancels_the_run_and_leaves_no_task() -> None:
    baseline = asyncio.all_tasks()
    model = ScriptedModel(tokens=["tick "] * 10_000, delay=0.01)
    events, slot = start(model)
    for _ in range(3):
        await anext(events)
    await events.aclose()
    await asyncio.sleep(0)
    assert model.cancelled
    assert model.produced < 100
    assert asyncio.all_tasks() - baseline == set()
    assert slot.releases == 1


@pytest.mark.parametrize(
    ("error", "code", "retryable"),
    [
        (StatusError(503), "provider_unavailable", True),
        (StatusError(429), "provider_rate_limited", True),
        (StatusError(400), "provider_error", False),
        (TimeoutError(), "provider_timeout", True),
        (httpx.RemoteProtocolError("peer closed connection"), "provider_unavailable", True),
        (httpx.ReadError("connection reset by peer"), "provider_unavailable", True),
        (ValueError("bug"), "internal_error", False),
    ],
)
async def test_a_failing_model_ends_the_stream_with_an_error_event(
    error: Exception, code: str, retryable: bool
) -> None:
    events, slot = start(ScriptedModel(tokens=[], fail_with=error))
    received = await collect(events)
    assert [e.event for e in received] == ["metadata", "error"]
    assert received[-1].data == {
        "code": code,
        "message": received[-1].data["message"],
        "retryable": retryable,
    }
    assert "bug" not in received[-1].data["message"]  # internals stay in the log
    assert slot.releases == 1


async def test_a_run_past_its_deadline_ends_with_stream_timeout() -> None:
    model = ScriptedModel(tokens=["slow "] * 100, delay=0.05)
    events, _ = start(model, max_seconds=0.2)
    received = await collect(events)
    assert received[-1].event == "error"
    assert received[-1].data["code"] == "stream_timeout"
    assert model.cancelled


async def test_langgraphs_dialect_coalesces_each_messages_tokens_into_chunks() -> None:
    model = ScriptedModel(tokens=["abcde"] * 20)
    request = RunRequest(
        graph=one_node_graph(model),
        graph_input={"messages": [HumanMessage(content="hi")]},
        config={"configurable": {"thread_id": "p/t"}},
        thread_id="t",
        run_id="r",
        endpoint="test",
        dialect=LangGraphDialect(["messages-tuple"], subgraphs=False, thread_id="t"),
    )
    settings = StreamingSettings(coalesce_max_chars=32, coalesce_max_ms=1000)
    received = await collect(run_events(request, settings, 30, Slot()))

    assert (received[0].event, received[-1].event) == ("metadata", "end")
    assert received[0].data == {"run_id": "r", "attempt": 1}
    chunks = [e.data for e in received if e.event == "messages"]
    assert "".join(message["content"] for message, _ in chunks) == "abcde" * 20
    assert len(chunks) < 20  # coalesced, the first token alone
    assert {message["type"] for message, _ in chunks} == {"AIMessageChunk"}
    assert {metadata["thread_id"] for _, metadata in chunks} == {"t"}
