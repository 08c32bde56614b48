"""LangGraph's API shapes and stream dialect, and the in-worker run log its runs use."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from langchain_core.messages import AIMessage
from langgraph.types import Interrupt, PregelTask, StateSnapshot

from rillet_runtime.api.langgraph.shapes import (
    EMPTY_STATE,
    assistant_id,
    contains,
    public_metadata,
    state_json,
    thread_status,
)
from rillet_runtime.api.langgraph.stream import LangGraphDialect
from rillet_runtime.events import RunEvent, dumps_data
from rillet_runtime.settings import StreamingSettings
from rillet_runtime.state.run_log import open_run_log
from rillet_runtime.state.threads import ThreadRecord


def snapshot(**fields: Any) -> StateSnapshot:
    base: dict[str, Any] = {
        "values": {"messages": []},
        "next": (),
        "config": {
            "configurable": {"thread_id": "p/t", "checkpoint_ns": "", "checkpoint_id": "c2"}
        },
        "metadata": {"thread_id": "p/t", "principal": "p", "step": 1},
        "created_at": "2026-11-30T00:00:00+00:00",
        "parent_config": {"configurable": {"checkpoint_id": "c1"}},
        "tasks": (),
        "interrupts": (),
    }
    return StateSnapshot(**{**base, **fields})


def test_a_graphs_assistant_id_is_the_one_langgraphs_server_gives_it() -> None:
    assert assistant_id("agent") == "fe096781-5601-53d2-b2f6-0d3403f7e9ca"


def test_containment_matches_like_langgraphs_search() -> None:
    document = {"team": "docs", "tags": ["a", "b"], "owner": {"name": "ann", "id": 1}}
    assert contains(document, {"team": "docs", "owner": {"name": "ann"}})
    assert not contains(document, {"tags": ["a"]})  # lists are compared whole
    assert not contains(document, {"missing": None})
    assert not contains(None, {"team": "docs"})


def test_state_shows_the_clients_thread_never_the_stored_key() -> None:
    shown = state_json(snapshot(), "t")
    assert shown["checkpoint"] == {"checkpoint_id": "c2", "thread_id": "t", "checkpoint_ns": ""}
    assert shown["parent_checkpoint_id"] == "c1"
    assert shown["metadata"] == {"thread_id": "t", "step": 1}
    assert state_json(snapshot(created_at=None), "t") == EMPTY_STATE
    assert public_metadata({"principal": "p", "thread_id": "p/t"}, "t") == {"thread_id": "t"}


def test_status_is_worked_out_from_the_lease_the_interrupts_and_the_last_run() -> None:
    record = ThreadRecord("t")
    asked = Interrupt(value={"question": "ok?"}, id="i1")
    waiting = snapshot(
        next=("review",),
        tasks=(PregelTask("task-1", "review", ("__pregel_pull", "review"), interrupts=(asked,)),),
        interrupts=(asked,),
    )
    assert thread_status(True, waiting, record) == "busy"
    assert thread_status(False, waiting, record) == "interrupted"
    assert state_json(waiting, "t")["interrupts"] == [{"id": "i1", "value": {"question": "ok?"}}]
    assert thread_status(False, snapshot(), record) == "idle"
    record.error = {"error": "provider_error", "message": "refused"}
    assert thread_status(False, snapshot(), record) == "error"


def test_the_dialect_names_events_by_mode_and_namespace() -> None:
    dialect = LangGraphDialect(["values", "messages-tuple"], subgraphs=True, thread_id="t")
    assert dialect.stream_mode == ["updates", "values"]
    inner = dialect.output(("writer:1",), "values", {"x": 1}, set())
    assert inner == [("event", "values|writer:1", {"x": 1})]
    answer = AIMessage(content="cached", id="m1")
    items = dialect.output((), "updates", {"prepare": {"messages": [answer]}}, set())
    assert items == [
        ("event", "messages", [answer, {"langgraph_node": "prepare", "thread_id": "t"}])
    ]
    assert dialect.output((), "updates", {"prepare": {"messages": [answer]}}, {"m1"}) == []

    flat = LangGraphDialect(["messages-tuple"], subgraphs=False, thread_id="t")
    assert flat.output(("writer:1",), "values", {"x": 1}, set()) == []
    asked = {"__interrupt__": (Interrupt(value="ok?", id="i1"),)}
    assert flat.output((), "updates", asked, set()) == [("event", "values", asked)]


async def test_the_in_worker_run_log_replays_follows_and_ends() -> None:
    log = open_run_log(None, StreamingSettings())
    await log.append("r", RunEvent(1, "metadata", {}), RunEvent(2, "messages", ["a"]))
    replay = await log.follow("r", 0)
    from_now = await log.follow("r", None)
    assert replay is not None
    assert from_now is not None
    assert [e.id for e in [await anext(replay), await anext(replay)]] == [1, 2]
    waiting = asyncio.ensure_future(anext(from_now))
    await log.append("r", RunEvent(3, "end", None))
    assert (await waiting).id == 3
    assert (await anext(replay)).event == "end"
    assert [e async for e in await log.follow("r", None)] == []  # over: nothing from now on

    await log.append("s", RunEvent(1, "metadata", {}))
    cut = await log.follow("s", 1)
    log.ended("s")  # its publisher stopped without an end
    assert cut is not None
    assert (await anext(cut)).data["code"] == "run_interrupted"
    assert await log.follow("unknown", 0) is None


def test_event_data_is_written_as_langgraphs_server_writes_it() -> None:
    message = AIMessage(content="hi", id="m1")
    written = orjson.loads(dumps_data({"m": message, "tags": {"a"}, "blob": b"\x00\x01"}))
    assert written["m"]["type"] == "ai"
    assert written["m"]["content"] == "hi"
    assert written["tags"] == ["a"]
    assert written["blob"] == "AAE="
