"""The in-memory state stays bounded: a long `make run` or a Redis-less pod cannot grow
without end."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from prometheus_client import REGISTRY

from rillet_runtime.settings import StateSettings
from rillet_runtime.state import TimedMemorySaver, serializer
from rillet_runtime.state.memory_saver import retained
from rillet_runtime.state.threads import MemoryThreadStore, ThreadRecord


def evicted(reason: str) -> float:
    value = REGISTRY.get_sample_value("rillet_memory_threads_evicted_total", {"reason": reason})
    return value or 0.0


def echo_graph(saver: TimedMemorySaver) -> Any:
    builder = StateGraph(MessagesState)
    builder.add_node("echo", lambda state: {"messages": [("ai", "ok")]})
    builder.add_edge(START, "echo")
    builder.add_edge("echo", END)
    return builder.compile(checkpointer=saver)


def config(thread_id: str) -> Any:
    return {"configurable": {"thread_id": thread_id}}


async def test_the_least_recently_used_thread_goes_first() -> None:
    saver = TimedMemorySaver(serde=serializer(StateSettings()), max_threads=2, ttl_seconds=None)
    graph = echo_graph(saver)
    before = evicted("max_threads")
    for thread_id in ("a", "b"):
        await graph.ainvoke({"messages": [HumanMessage(content="hi")]}, config(thread_id))
    await graph.aget_state(config("a"))  # a is used again: b is now the oldest
    await graph.ainvoke({"messages": [HumanMessage(content="hi")]}, config("c"))

    assert (await graph.aget_state(config("b"))).created_at is None
    assert (await graph.aget_state(config("a"))).created_at is not None
    assert (await graph.aget_state(config("c"))).created_at is not None
    assert evicted("max_threads") == before + 1


async def test_a_thread_unused_past_its_ttl_goes() -> None:
    saver = TimedMemorySaver(serde=serializer(StateSettings()), max_threads=10, ttl_seconds=0)
    graph = echo_graph(saver)
    before = evicted("ttl")
    await graph.ainvoke({"messages": [HumanMessage(content="hi")]}, config("old"))
    await graph.ainvoke({"messages": [HumanMessage(content="hi")]}, config("new"))
    assert (await graph.aget_state(config("old"))).created_at is None
    assert evicted("ttl") > before


async def test_thread_records_are_bounded_too() -> None:
    store = MemoryThreadStore(max_threads=2)
    for thread_id in ("a", "b", "c"):
        await store.put_thread("p", ThreadRecord(thread_id))
    assert [t.thread_id for t in await store.threads("p")] == ["c", "b"]


def test_retention_keeps_the_newest_and_where_the_run_in_progress_started() -> None:
    """The policy both savers apply (memory_saver.retained, the Redis script `retention`)."""
    newest_first = ["c6", "c5", "c4", "c3", "c2", "c1"]  # c6: being written by run r3
    runs = {"c6": "r3", "c5": "r3", "c4": "r3", "c3": "r2", "c2": "r2", "c1": "r1"}
    dropped, kept = retained(newest_first, "c6", "r3", runs.__getitem__, 2)
    assert kept == ["c5", "c3"]  # the newest two (c6 among them), and r3's starting point
    assert dropped == ["c4", "c2", "c1"]
    assert retained(newest_first, "c6", "", runs.__getitem__, 2) == (
        ["c4", "c3", "c2", "c1"],
        ["c5"],
    )
    assert retained(newest_first, "c6", "r3", runs.__getitem__, 0) == ([], [])
    assert retained(newest_first, "c6", "r3", runs.__getitem__, 6) == ([], [])
