"""RedisCheckpointSaver against a real redis-server and a real 3-master Redis Cluster (the
same tests on each): LangGraph's checkpointer behaviours through the async and the sync API,
the key layout, compression, TTLs and crash safety; loads that refuse to run code, and
values gone missing that are errors, not empty state."""

from __future__ import annotations

import asyncio
import json
import operator
import os
import pickle
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypedDict

import httpx
import ormsgpack
import pytest
import redis
from httpx_sse import connect_sse
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.serde.event_hooks import SerdeEvent, register_serde_event_listener
from langgraph.checkpoint.serde.jsonplus import EXT_CONSTRUCTOR_SINGLE_ARG, JsonPlusSerializer
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from redis.crc import key_slot

from bench.checkpoint import history_graph
from rillet_runtime.graph import graph_deps
from rillet_runtime.graph.rag import build_rag_graph
from rillet_runtime.retrieval import open_retriever
from rillet_runtime.settings import Settings, StateSettings
from rillet_runtime.state import serializer
from rillet_runtime.state.checkpoint import CheckpointCorrupt, RedisCheckpointSaver, ThreadKeys
from tests.support.graphs import echo_graph
from tests.support.keys import api_key_settings, write_api_keys
from tests.support.processes import RedisServer
from tests.support.redis_cluster import StateRedis
from tests.support.servers import rillet_server

API = pytest.mark.parametrize("api", ["async", "sync"])


def connect(state_redis: StateRedis, **kwargs: Any) -> AbstractAsyncContextManager[Any]:
    """A saver on that Redis, closed after."""
    return RedisCheckpointSaver.connect(state_redis.url, cluster=state_redis.cluster, **kwargs)


@pytest.fixture
async def saver(state_redis: StateRedis) -> AsyncIterator[RedisCheckpointSaver]:
    state_redis.flush()
    async with connect(state_redis, ttl_seconds=3600, compress_min_bytes=1024) as saver:
        yield saver


async def call(api: str, target: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """The same call through the sync API (in a thread) or the async one."""
    if api == "sync":
        return await asyncio.to_thread(getattr(target, method), *args, **kwargs)
    return await getattr(target, "a" + method)(*args, **kwargs)


async def history(api: str, graph: Any, config: Any) -> list[Any]:
    if api == "sync":
        return await asyncio.to_thread(lambda: list(graph.get_state_history(config)))
    return [s async for s in graph.aget_state_history(config)]


@API
async def test_multi_turn_threads_and_time_travel(api: str, saver: RedisCheckpointSaver) -> None:
    graph = echo_graph(saver)
    config = {"configurable": {"thread_id": f"multi-{api}"}}
    for text in ("one", "two", "three"):
        await call(api, graph, "invoke", {"messages": [HumanMessage(content=text)]}, config)
    state = await call(api, graph, "get_state", config)
    assert [m.content for m in state.values["messages"]] == [
        "one",
        "echo: one",
        "two",
        "echo: two",
        "three",
        "echo: three",
    ]

    snapshots = await history(api, graph, config)
    ids = [s.config["configurable"]["checkpoint_id"] for s in snapshots]
    assert ids == sorted(ids, reverse=True)  # newest first
    after_first_turn = next(
        s for s in snapshots if len(s.values.get("messages", [])) == 2 and not s.next
    )

    # Time travel: continue from the first turn, forking the thread.
    forked = await call(
        api, graph, "invoke", {"messages": [HumanMessage(content="again")]}, after_first_turn.config
    )
    assert [m.content for m in forked["messages"]] == ["one", "echo: one", "again", "echo: again"]
    latest = await call(api, graph, "get_state", config)
    assert latest.values["messages"][-1].content == "echo: again"
    assert latest.parent_config is not None


@API
async def test_interrupt_and_resume(api: str, saver: RedisCheckpointSaver) -> None:
    class State(TypedDict):
        answer: str

    def ask(state: State) -> dict[str, Any]:
        return {"answer": interrupt("approve?")}

    builder = StateGraph(State)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    graph = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": f"interrupt-{api}"}}

    first = await call(api, graph, "invoke", {"answer": ""}, config)
    assert first["__interrupt__"][0].value == "approve?"
    waiting = await call(api, graph, "get_state", config)
    assert waiting.next == ("ask",)
    assert waiting.tasks[0].interrupts[0].value == "approve?"

    resumed = await call(api, graph, "invoke", Command(resume="yes"), config)
    assert resumed == {"answer": "yes"}


@API
async def test_subgraph_namespaces_are_kept_apart(api: str, saver: RedisCheckpointSaver) -> None:
    class State(TypedDict):
        log: Annotated[list[str], operator.add]

    def inner_step(state: State) -> dict[str, Any]:
        return {"log": [f"inner:{interrupt('inner?')}"]}

    inner = StateGraph(State)
    inner.add_node("inner_step", inner_step)
    inner.add_edge(START, "inner_step")
    inner.add_edge("inner_step", END)

    outer = StateGraph(State)
    outer.add_node("sub", inner.compile())
    outer.add_edge(START, "sub")
    outer.add_edge("sub", END)
    graph = outer.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": f"subgraph-{api}"}}

    await call(api, graph, "invoke", {"log": ["start"]}, config)
    state = await call(api, graph, "get_state", config, subgraphs=True)
    sub_state = state.tasks[0].state
    assert sub_state.config["configurable"]["checkpoint_ns"].startswith("sub:")
    assert sub_state.next == ("inner_step",)

    done = await call(api, graph, "invoke", Command(resume="ok"), config)
    assert done["log"] == ["start", "start", "inner:ok"]
    root_only = [
        t
        async for t in saver.alist(
            {"configurable": {"thread_id": f"subgraph-{api}", "checkpoint_ns": ""}}
        )
    ]
    assert root_only
    assert all(t.config["configurable"]["checkpoint_ns"] == "" for t in root_only)


@API
async def test_parallel_writes_survive_a_failed_sibling(
    api: str, saver: RedisCheckpointSaver
) -> None:
    """A node that succeeded is not re-run when its parallel sibling failed and is retried."""

    class State(TypedDict):
        items: Annotated[list[str], operator.add]

    runs = {"steady": 0, "flaky": 0}
    steady_done = threading.Event()

    def steady(state: State) -> dict[str, Any]:
        runs["steady"] += 1
        steady_done.set()
        return {"items": ["steady"]}

    def flaky(state: State) -> dict[str, Any]:
        runs["flaky"] += 1
        if runs["flaky"] == 1:
            # Fail only once the sibling's write is saved: failing first would cancel it,
            # leaving no write to keep (the order is otherwise up to the scheduler).
            assert steady_done.wait(timeout=10)
            for _ in range(200):
                saved = saver.get_tuple(config)
                if saved and any(ch == "items" for _, ch, _ in saved.pending_writes or ()):
                    break
                time.sleep(0.01)
            raise RuntimeError("first attempt fails")
        return {"items": ["flaky"]}

    builder = StateGraph(State)
    builder.add_node("steady", steady)
    builder.add_node("flaky", flaky)
    builder.add_edge(START, "steady")
    builder.add_edge(START, "flaky")
    builder.add_edge("steady", END)
    builder.add_edge("flaky", END)
    graph = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": f"parallel-{api}"}}

    with pytest.raises(RuntimeError, match="first attempt"):
        await call(api, graph, "invoke", {"items": []}, config)
    pending = await call(api, saver, "get_tuple", config)
    assert any(channel == "items" for _, channel, _ in pending.pending_writes)

    result = await call(api, graph, "invoke", None, config)
    assert sorted(result["items"]) == ["flaky", "steady"]
    assert runs == {"steady": 1, "flaky": 2}


@API
async def test_list_filters_before_and_limit(api: str, saver: RedisCheckpointSaver) -> None:
    graph = echo_graph(saver)
    config = {"configurable": {"thread_id": f"list-{api}"}}
    for text in ("a", "b"):
        await call(api, graph, "invoke", {"messages": [HumanMessage(content=text)]}, config)

    def listed(**kwargs: Any) -> Callable[[], list[Any]]:
        return lambda: list(saver.list(config, **kwargs))

    async def listing(**kwargs: Any) -> list[Any]:
        if api == "sync":
            return await asyncio.to_thread(listed(**kwargs))
        return [t async for t in saver.alist(config, **kwargs)]

    everything = await listing()
    assert len(everything) == 6  # input + loop step per turn, two turns
    inputs = await listing(filter={"source": "input"})
    assert len(inputs) == 2  # one per turn
    assert all(t.metadata["source"] == "input" for t in inputs)
    assert (
        len(await listing(filter={"source": "loop", "step": 1})) == 1
    )  # steps run on across turns
    assert len(await listing(limit=3)) == 3
    older = await listing(before=everything[1].config)
    assert [t.config for t in older] == [t.config for t in everything[2:]]
    other_thread = [t async for t in saver.alist({"configurable": {"thread_id": "nobody"}})]
    assert other_thread == []


async def test_delete_copy_prune_and_delete_for_runs(saver: RedisCheckpointSaver) -> None:
    graph = echo_graph(saver)
    source = {"configurable": {"thread_id": "source"}}
    for text in ("a", "b", "c"):  # run ids travel in `configurable`, as LangGraph's server does
        run_config = {"configurable": {"thread_id": "source", "run_id": f"run-{text}"}}
        await graph.ainvoke({"messages": [HumanMessage(content=text)]}, run_config)

    await saver.acopy_thread("source", "copy")
    copied = await graph.aget_state({"configurable": {"thread_id": "copy"}})
    original = await graph.aget_state(source)
    assert copied.values == original.values

    await saver.aprune(["copy"], strategy="keep_latest")
    kept = [t async for t in saver.alist({"configurable": {"thread_id": "copy"}})]
    assert len(kept) == 1
    assert (
        await graph.aget_state({"configurable": {"thread_id": "copy"}})
    ).values == original.values

    await saver.adelete_thread("copy")
    assert await saver.aget_tuple({"configurable": {"thread_id": "copy"}}) is None
    assert await saver.aget_tuple(source) is not None  # the source is untouched

    tuples = [t async for t in saver.alist(source)]
    assert {t.metadata.get("run_id") for t in tuples} == {"run-a", "run-b", "run-c"}
    newest_run = tuples[0].metadata["run_id"]
    await saver.adelete_for_runs([newest_run])
    remaining = [t async for t in saver.alist(source)]
    assert all(t.metadata.get("run_id") != newest_run for t in remaining)
    assert len(remaining) < len(tuples)


@API
async def test_listing_every_thread_finds_each_wherever_its_slot_is(
    api: str, saver: RedisCheckpointSaver
) -> None:
    """`list(None)`: on a cluster a SCAN of every primary, not of the node it asks first."""
    threads = [f"everywhere-{api}-{i}" for i in range(12)]
    thirds = {key_slot(ThreadKeys(t).ns_set.encode()) * 3 // 16384 for t in threads}
    assert thirds == {0, 1, 2}  # a slot in each master's share of a 3-master cluster
    graph = echo_graph(saver)
    for thread in threads:
        config = {"configurable": {"thread_id": thread}}
        await graph.ainvoke({"messages": [HumanMessage(content="hi")]}, config)
    if api == "sync":
        listed = await asyncio.to_thread(lambda: list(saver.list(None)))
    else:
        listed = [t async for t in saver.alist(None)]
    assert {t.config["configurable"]["thread_id"] for t in listed} == set(threads)
    assert len(listed) == 3 * len(threads)  # each: its input, before and after its node


async def test_every_key_of_a_thread_is_in_one_cluster_slot(
    saver: RedisCheckpointSaver, state_redis: StateRedis
) -> None:
    graph = echo_graph(saver)
    await graph.ainvoke(
        {"messages": [HumanMessage(content="hi")]}, {"configurable": {"thread_id": "slot{tag}:x"}}
    )
    keys = [k.decode() for k in state_redis.keys("rillet:cp:{*")]
    assert len(keys) >= 5
    assert len({key_slot(k.encode()) for k in keys}) == 1


async def test_unchanged_channels_are_stored_once_and_large_values_compressed(
    saver: RedisCheckpointSaver, state_redis: StateRedis
) -> None:
    class State(TypedDict):
        big: str
        turns: Annotated[list[int], operator.add]

    def step(state: State) -> dict[str, Any]:
        return {"turns": [len(state["turns"])]}

    builder = StateGraph(State)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    builder.add_edge("step", END)
    graph = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "blobs"}}
    big = "lorem ipsum " * 1000
    await graph.ainvoke({"big": big, "turns": []}, config)
    for _ in range(5):
        await graph.ainvoke({"turns": []}, config)

    raw = state_redis.client()
    fields = raw.hkeys("rillet:cp:{blobs}::blobs")
    big_fields = [f for f in fields if f.startswith(b"big\0")]
    assert len(big_fields) == 1  # written once, referenced by every later checkpoint
    stored = raw.hget("rillet:cp:{blobs}::blobs", big_fields[0])
    assert stored is not None
    assert stored.split(b"\0", 1)[1][:1] == b"z"  # zstd-compressed
    assert len(stored) < len(big) / 10
    assert (await graph.aget_state(config)).values["big"] == big
    ttls = [raw.pttl(k) for k in state_redis.keys("rillet:cp:{blobs}*")]
    assert all(0 < ttl <= 3600_000 for ttl in ttls)


async def test_a_crash_mid_write_never_leaves_a_corrupt_checkpoint(tmp_path: Path) -> None:
    """Kill redis-server (append-only, fsync always) during concurrent runs, restart it,
    and check that every checkpoint that survived has all the values it references."""
    server = RedisServer(tmp_path / "aof", "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    saver = RedisCheckpointSaver.from_url(server.url, ttl_seconds=None)
    graph = echo_graph(saver)

    async def chat(thread: int) -> None:
        config = {"configurable": {"thread_id": f"crash-{thread}"}}
        for turn in range(1000):
            await graph.ainvoke({"messages": [HumanMessage(content=f"{turn} " * 300)]}, config)

    runs = [asyncio.create_task(chat(i)) for i in range(8)]
    await asyncio.sleep(1.0)
    server.kill()
    results = await asyncio.gather(*runs, return_exceptions=True)
    assert all(isinstance(r, redis.ConnectionError) for r in results)
    server.start()
    await saver.aclose()

    saver = RedisCheckpointSaver.from_url(server.url, ttl_seconds=None)
    raw = redis.Redis.from_url(server.url)
    checked = 0
    for thread in range(8):
        prefix = f"rillet:cp:{{crash-{thread}}}::"
        async for tuple_ in saver.alist({"configurable": {"thread_id": f"crash-{thread}"}}):
            referenced = [f"{c}\0{v}" for c, v in tuple_.checkpoint["channel_versions"].items()]
            present = raw.hmget(prefix + "blobs", referenced) if referenced else []
            assert all(value is not None for value in present)
            checked += 1
    assert checked > 8
    await saver.aclose()
    server.kill()


@dataclass
class Order:
    sku: str
    quantity: int


@pytest.mark.parametrize(
    ("listed", "allowed"),
    [([f"{__name__}.Order"], True), (["decimal.Decimal"], False), ([], False)],
    ids=["listed", "others-listed", "nothing-listed"],
)
async def test_the_serializer_allowlist_decides_which_types_come_back(
    state_redis: StateRedis, listed: list[str], allowed: bool
) -> None:
    """Strict by default: a type is constructed on load only when it is listed."""
    settings = StateSettings(serde_allowed_types=listed)
    async with connect(state_redis, serde=serializer(settings)) as saver:
        config = {"configurable": {"thread_id": f"allowlist-{len(listed)}-{allowed}"}}
        await order_graph(saver).ainvoke({"order": Order("tea", 2)}, config)
        revived = (await saver.aget_tuple(config)).checkpoint["channel_values"]["order"]
    assert revived == (Order("tea", 2) if allowed else {"sku": "tea", "quantity": 2})


def order_graph(saver: RedisCheckpointSaver) -> Any:
    class State(TypedDict):
        order: Order

    builder = StateGraph(State)
    builder.add_node("keep", lambda state: {"order": state["order"]})
    builder.add_edge(START, "keep")
    builder.add_edge("keep", END)
    return builder.compile(checkpointer=saver)


@API
async def test_a_delta_channel_history_is_rebuilt_from_its_writes(
    api: str, saver: RedisCheckpointSaver
) -> None:
    """LangGraph's DeltaChannel stores each turn's writes, not the whole list again."""
    graph = history_graph(saver, lambda turn: f"answer {turn}", delta=True)
    config = {"configurable": {"thread_id": f"delta-{api}"}}
    for turn in range(5):
        await call(
            api, graph, "invoke", {"messages": [HumanMessage(f"q{turn}", id=f"q{turn}")]}, config
        )
    state = await call(api, graph, "get_state", config)
    assert [m.id for m in state.values["messages"]] == [
        m for turn in range(5) for m in (f"q{turn}", f"a{2 * turn + 1}")
    ]


async def test_a_busy_pool_makes_commands_wait_instead_of_failing(
    state_redis: StateRedis,
) -> None:
    """More concurrent runs than connections: they queue for the pool, none fails."""
    async with connect(state_redis, max_connections=2) as saver:
        graph = echo_graph(saver)
        results = await asyncio.gather(
            *(
                graph.ainvoke(
                    {"messages": [HumanMessage(content=f"hello {i}")]},
                    {"configurable": {"thread_id": f"busy-{i}"}},
                )
                for i in range(40)
            )
        )
        assert [r["messages"][-1].content for r in results] == [
            f"echo: hello {i}" for i in range(40)
        ]


class _PickledCall:
    """Pickles as a call of `os.system`: what a pickle payload written into Redis would run."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (self.command,)


def crafted_blob(kind: str, command: str) -> bytes:
    """A stored value (the saver's framing: kind, NUL, raw marker, bytes) that calls
    `os.system(command)` when the serializer revives what it names."""
    if kind == "msgpack":  # LangGraph's "construct this type from one argument" extension
        call = ormsgpack.packb(("os", "system", command))
        data = ormsgpack.packb(ormsgpack.Ext(EXT_CONSTRUCTOR_SINGLE_ARG, call))
    else:
        data = pickle.dumps(_PickledCall(command))
    return kind.encode() + b"\0r" + data


async def thread_with_blobs(saver: RedisCheckpointSaver, thread: str) -> dict[str, Any]:
    config = {"configurable": {"thread_id": thread}}
    await echo_graph(saver).ainvoke({"messages": [HumanMessage(content="hello")]}, config)
    return config


def overwrite_channel(
    state_redis: StateRedis, thread: str, channel: str, value: bytes | None
) -> int:
    """Every stored version of `channel` replaced by `value` (None: deleted), as someone
    with access to Redis could; the count of fields touched."""
    raw = state_redis.client()
    (blobs,) = state_redis.keys(f"rillet:cp:{{*{thread}}}::blobs")
    fields = [f for f in raw.hkeys(blobs) if f.startswith(channel.encode() + b"\0")]
    for field in fields:
        if value is None:
            raw.hdel(blobs, field)
        else:
            raw.hset(blobs, field, value)
    return len(fields)


@pytest.mark.parametrize("kind", ["msgpack", "pickle"])
async def test_a_crafted_blob_cannot_call_code_on_load(
    saver: RedisCheckpointSaver, state_redis: StateRedis, tmp_path: Path, kind: str
) -> None:
    """A blob written straight into Redis that names `os.system`: the default (strict) saver
    loads a msgpack one as inert data and refuses a pickle; nothing runs. A permissive
    serializer on the same bytes does run it, so the blob is a real exploit."""
    marker = tmp_path / "ran"
    thread = f"crafted-{kind}"
    config = await thread_with_blobs(saver, thread)
    blob = crafted_blob(kind, f"touch {marker}")
    assert overwrite_channel(state_redis, thread, "messages", blob)

    if kind == "msgpack":
        loaded = await saver.aget_tuple(config)
        assert loaded.checkpoint["channel_values"]["messages"] == f"touch {marker}"
    else:
        with pytest.raises(CheckpointCorrupt, match="channel 'messages' cannot be read"):
            await saver.aget_tuple(config)
    assert not marker.exists()

    permissive = JsonPlusSerializer(allowed_msgpack_modules=True, pickle_fallback=True)
    async with connect(state_redis, serde=permissive) as unsafe:
        await unsafe.aget_tuple(config)
    assert marker.exists()


@API
async def test_a_missing_value_is_an_error_never_an_empty_thread(
    api: str, saver: RedisCheckpointSaver, state_redis: StateRedis
) -> None:
    thread = f"missing-{api}"
    config = await thread_with_blobs(saver, thread)
    assert overwrite_channel(state_redis, thread, "messages", None)
    with pytest.raises(CheckpointCorrupt) as raised:
        await call(api, saver, "get_tuple", config)
    assert (raised.value.thread_id, raised.value.channel) == (thread, "messages")
    assert "channel 'messages' is missing" in str(raised.value)
    with pytest.raises(CheckpointCorrupt):
        await history(api, echo_graph(saver), config)

    # The checkpoint's own record gone while its id is still indexed: the same.
    raw = state_redis.client()
    (cps,) = state_redis.keys(f"rillet:cp:{{{thread}}}::cps")
    latest = raw.zrange(f"rillet:cp:{{{thread}}}::idx", -1, -1)[0]
    raw.hdel(cps, latest)
    with pytest.raises(CheckpointCorrupt, match="the checkpoint is missing"):
        await call(api, saver, "get_tuple", config)


async def test_the_built_in_graph_needs_no_type_outside_the_allowlist(
    saver: RedisCheckpointSaver,
) -> None:
    """Turns enough to trim the window (RemoveMessage): every value the built-in chat graph
    stores comes back as itself under the strict serializer, nothing blocked."""
    events: list[SerdeEvent] = []
    unregister = register_serde_event_listener(events.append)
    settings = Settings(state={"history_window": 4})
    try:
        async with (
            httpx.AsyncClient() as http,
            open_retriever(settings) as retriever,
        ):
            graph = build_rag_graph(graph_deps(settings, http, retriever), saver)
            config = {"configurable": {"thread_id": "built-in"}}
            for question in ("How do I install Rillet?", "hello", "How does it scale?"):
                await graph.ainvoke({"messages": [HumanMessage(content=question)]}, config)
            state = await graph.aget_state(config)
            snapshots = [s async for s in graph.aget_state_history(config)]
    finally:
        unregister()
    assert events == []  # neither blocked nor let through unlisted
    messages = state.values["messages"]
    assert len(messages) == 4
    assert all(isinstance(m, HumanMessage | AIMessage) for m in messages)
    assert all(isinstance(s["id"], str) for s in state.values["sources"])
    assert len(snapshots) > 6


def test_rillet_serve_answers_a_corrupt_thread_with_state_corrupt(
    state_redis: StateRedis, tmp_path: Path
) -> None:
    """Through the API: reading, continuing and streaming a thread whose blob is gone give
    500 `state_corrupt` (an `error` event on a stream), no stack trace; the log names it.
    Deleting it works, through either API."""
    keys = write_api_keys(tmp_path / "keys", {"alice": "key-alice-0123456789"})
    headers = {"Authorization": "Bearer key-alice-0123456789"}
    settings = {**state_redis.settings(), **api_key_settings(keys)}
    with (
        rillet_server(tmp_path, workers=1, **settings) as server,
        httpx.Client(base_url=server.url, headers=headers, timeout=30) as client,
    ):
        body = {"message": "How do I install Rillet?", "thread_id": "to-corrupt"}
        assert client.post("/v1/chat", json=body).status_code == 200
        assert overwrite_channel(state_redis, "to-corrupt", "messages", None)

        for response in (
            client.get("/v1/threads/to-corrupt"),
            client.post("/v1/chat", json=body),
        ):
            assert response.status_code == 500
            assert response.json()["error"]["code"] == "state_corrupt"
            assert "Traceback" not in response.text
        with connect_sse(client, "POST", "/v1/chat/stream", json=body) as source:
            events = [(sse.event, json.loads(sse.data)) for sse in source.iter_sse()]
        assert events[-1][0] == "error"
        assert events[-1][1]["code"] == "state_corrupt"
        # It cannot be read, but it can be deleted, and then it is gone.
        assert client.delete("/v1/threads/to-corrupt").status_code == 204
        assert client.get("/v1/threads/to-corrupt").status_code == 404
        # LangGraph's API deletes a damaged thread too.
        body = {"message": "How do I install Rillet?", "thread_id": "to-corrupt-too"}
        assert client.post("/v1/chat", json=body).status_code == 200
        assert overwrite_channel(state_redis, "to-corrupt-too", "messages", None)
        assert client.get("/threads/to-corrupt-too").json()["error"]["code"] == "state_corrupt"
        assert client.delete("/threads/to-corrupt-too").status_code == 204
        assert client.get("/threads/to-corrupt-too").status_code == 404
    assert "channel 'messages' is missing" in server.log.read_text()
