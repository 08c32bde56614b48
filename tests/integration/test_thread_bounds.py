"""A thread stays bounded, on each of the state stores: in the worker's memory, on a real
redis-server and on a real 3-master Redis Cluster. Retention keeps the newest checkpoints
(reads of those still work, a read of a dropped one is an error), the byte cap refuses a
write with nothing of the run left behind, run logs expire after their last event (a live
run's beat keeps its log), and a delete cancels the thread's run and removes every key of
the thread. The savers are driven directly, then `rillet serve` is, over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import string
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import httpx
import pytest
from httpx_sse import connect_sse
from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph

from bench.checkpoint import history_graph
from rillet_runtime.events import (
    CheckpointPruned,
    RunEvent,
    ThreadTooLarge,
    collecting_save_failures,
)
from rillet_runtime.settings import StateSettings
from rillet_runtime.state import TimedMemorySaver, serializer
from rillet_runtime.state.checkpoint import RedisCheckpointSaver, ThreadKeys
from rillet_runtime.state.checkpoint.keys import escape
from rillet_runtime.state.run_log import MemoryRunLog, RedisRunLog, RunLog
from tests.support.graphs import echo_graph
from tests.support.processes import wait_for
from tests.support.redis_cluster import StateRedis, state_redis
from tests.support.servers import FakeLLM, Process, fake_llm_process, rillet_server

BACKENDS = ["memory", "redis", "cluster"]
ON_REDIS = pytest.mark.parametrize("backend", ["redis", "cluster"], indirect=True)
SERVED_ON_REDIS = pytest.mark.parametrize("served", ["redis", "cluster"], indirect=True)
Events = list[tuple[str, dict[str, Any]]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> StateRedis | None:
    """None for the in-memory saver, else where Redis keeps the state (flushed)."""
    if request.param == "memory":
        return None
    store = state_redis(request, request.param)
    store.flush()
    return store


@contextlib.asynccontextmanager
async def saver_on(store: StateRedis | None, **bounds: int) -> AsyncIterator[Any]:
    """Rillet's saver for that store, with these bounds (keep_checkpoints, max_thread_bytes)."""
    if store is None:
        yield TimedMemorySaver(
            serde=serializer(StateSettings()), max_threads=1000, ttl_seconds=None, **bounds
        )
        return
    async with RedisCheckpointSaver.connect(store.url, cluster=store.cluster, **bounds) as saver:
        yield saver


class Latest(TypedDict):
    note: Annotated[str, lambda _old, new: new]


def overwrite_graph(saver: Any) -> Any:
    """A state of constant size: each turn replaces it. What the thread holds is then what
    retention keeps, whatever the number of turns."""
    builder = StateGraph(Latest)
    builder.add_node("note", lambda state: {"note": state["note"].upper()})
    builder.add_edge(START, "note")
    builder.add_edge("note", END)
    return builder.compile(checkpointer=saver)


def turn(thread: str, number: int) -> dict[str, Any]:
    """A run of the thread, named as Rillet names its runs (the run id in `configurable`)."""
    return {"configurable": {"thread_id": thread, "run_id": f"run-{number:03}"}}


def thread_config(thread: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    configurable = {"thread_id": thread}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


async def checkpoint_ids(graph: Any, thread: str) -> list[str]:
    return [
        s.config["configurable"]["checkpoint_id"]
        async for s in graph.aget_state_history(thread_config(thread))
    ]


def incompressible(length: int, seed: int = 7) -> str:
    """Text zstd cannot shrink much, so a size in characters is about a size in bytes."""
    rng = random.Random(seed)
    return "".join(rng.choices(string.ascii_letters + string.digits, k=length))


# -- retention ---------------------------------------------------------------------------


async def test_retention_keeps_the_newest_checkpoints_and_they_still_read(
    backend: StateRedis | None,
) -> None:
    async with saver_on(backend, keep_checkpoints=4) as saver:
        graph = echo_graph(saver)
        written: set[str] = set()
        for number in range(6):
            await graph.ainvoke({"messages": [HumanMessage(f"q{number}")]}, turn("t", number))
            written |= set(await checkpoint_ids(graph, "t"))

        kept = await checkpoint_ids(graph, "t")
        assert kept == sorted(written, reverse=True)[:4]  # the newest four, newest first
        latest = await graph.aget_state(thread_config("t"))
        contents = [m.content for m in latest.values["messages"]]
        assert contents == [text for n in range(6) for text in (f"q{n}", f"echo: q{n}")]
        for checkpoint_id in kept:  # time travel reaches each kept one, values whole
            state = await graph.aget_state(thread_config("t", checkpoint_id))
            assert state.created_at is not None
            assert state.values["messages"][0].content == "q0"

        dropped = min(written)
        with pytest.raises(CheckpointPruned):
            await graph.aget_state(thread_config("t", dropped))

        # A fork from the oldest kept checkpoint runs from its values.
        oldest = await graph.aget_state(thread_config("t", kept[-1]))
        forked = await graph.ainvoke(
            {"messages": [HumanMessage("fork")]},
            {"configurable": {**oldest.config["configurable"], "run_id": "run-fork"}},
        )
        assert [m.content for m in forked["messages"]][-2:] == ["fork", "echo: fork"]
        assert len(forked["messages"]) == len(oldest.values["messages"]) + 2


async def test_retention_keeps_the_thread_the_same_size_however_many_turns(
    backend: StateRedis | None,
) -> None:
    """Without retention a thread grows by every checkpoint; with it, it stays put."""
    sizes: dict[int, list[int]] = {}
    for keep in (0, 3):
        async with saver_on(backend, keep_checkpoints=keep) as saver:
            graph, thread = overwrite_graph(saver), f"size-{keep}"
            sizes[keep] = []
            for number in range(30):
                await graph.ainvoke({"note": incompressible(500, number)}, turn(thread, number))
                sizes[keep].append(await saver.athread_bytes(thread))
    kept, unbounded = sizes[3], sizes[0]
    assert max(kept[5:]) <= kept[5] * 1.05  # flat once retention is at work
    assert unbounded[-1] > 5 * unbounded[5]  # linear without it
    assert kept[-1] * 8 < unbounded[-1]


@ON_REDIS  # the in-memory saver has no keys to measure
async def test_the_running_count_is_what_the_thread_holds(backend: StateRedis | None) -> None:
    """Kept by each write (retention, pending writes, a rollback, a refusal): measuring the
    thread from its keys gives the same figure."""
    assert backend is not None
    async with saver_on(backend, keep_checkpoints=3, max_thread_bytes=60_000) as saver:
        graph = echo_graph(saver)
        for number in range(5):
            await graph.ainvoke({"messages": [HumanMessage(f"q{number}")]}, turn("m", number))
        await saver.adelete_for_runs(["run-004"])
        with pytest.raises(ThreadTooLarge):
            await graph.ainvoke({"messages": [HumanMessage(incompressible(70_000))]}, turn("m", 9))
        counted = await saver.athread_bytes("m")
        with contextlib.closing(backend.client()) as client:
            client.hdel(ThreadKeys("m").info, "bytes")
        assert await saver.athread_bytes("m") == counted > 0


# -- the byte cap ------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_write_over_the_cap_is_refused_and_the_run_taken_back(
    backend: StateRedis | None, streamed: bool
) -> None:
    """Outside a streamed run the refusal raises; inside one it is noted (the answer goes
    on) and nothing more of the run is written. Either way the thread is exactly as before
    the run: no checkpoint of it, the same size."""
    async with saver_on(backend, max_thread_bytes=30_000) as saver:
        graph = echo_graph(saver)
        for number in range(2):
            await graph.ainvoke({"messages": [HumanMessage(f"q{number}")]}, turn("cap", number))
        before_ids = await checkpoint_ids(graph, "cap")
        before_bytes = await saver.athread_bytes("cap")
        before = (await graph.aget_state(thread_config("cap"))).values

        big = {"messages": [HumanMessage(incompressible(40_000))]}
        if streamed:
            with collecting_save_failures() as failures:
                await graph.ainvoke(big, turn("cap", 2))
            assert failures
            assert all(isinstance(failure, ThreadTooLarge) for failure in failures)
        else:
            with pytest.raises(ThreadTooLarge) as refused:
                await graph.ainvoke(big, turn("cap", 2))
            assert refused.value.limit == 30_000 < refused.value.would_hold

        assert await checkpoint_ids(graph, "cap") == before_ids
        assert await saver.athread_bytes("cap") == before_bytes
        assert (await graph.aget_state(thread_config("cap"))).values == before
        # The thread takes a turn that fits.
        await graph.ainvoke({"messages": [HumanMessage("small")]}, turn("cap", 3))
        latest = (await graph.aget_state(thread_config("cap"))).values["messages"]
        assert [m.content for m in latest][-2:] == ["small", "echo: small"]


async def test_a_rollback_takes_back_the_run_and_the_values_only_it_used(
    backend: StateRedis | None,
) -> None:
    async with saver_on(backend, keep_checkpoints=10) as saver:
        graph = echo_graph(saver)
        await graph.ainvoke({"messages": [HumanMessage("kept")]}, turn("rb", 0))
        before_ids = await checkpoint_ids(graph, "rb")
        before_bytes = await saver.athread_bytes("rb")
        await graph.ainvoke({"messages": [HumanMessage(incompressible(5000))]}, turn("rb", 1))
        await saver.adelete_for_runs(["run-001"])
        assert await checkpoint_ids(graph, "rb") == before_ids
        assert await saver.athread_bytes("rb") == before_bytes


async def test_a_delta_channel_past_retention_is_an_error_not_an_empty_history(
    backend: StateRedis | None,
) -> None:
    """A DeltaChannel replays its writes back to its last snapshot; once retention dropped
    a checkpoint that replay needs, reading says so instead of starting the list empty."""
    async with saver_on(backend, keep_checkpoints=3) as saver:
        graph = history_graph(saver, lambda turn_number: f"a{turn_number}", delta=True)

        async def converse() -> None:
            for number in range(12):
                question = HumanMessage(f"q{number}", id=f"q{number}")
                await graph.ainvoke({"messages": [question]}, turn("delta", number))
                await graph.aget_state(thread_config("delta"))

        with pytest.raises(CheckpointPruned):
            await converse()


# -- run logs ----------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
async def run_log(request: pytest.FixtureRequest) -> AsyncIterator[RunLog]:
    """A run log that keeps a run's events 1 s after its last event or beat."""
    if request.param == "memory":
        log: RunLog = MemoryRunLog(1000, 1000)
        yield log
        await log.aclose()
        return
    store = state_redis(request, request.param)
    client = store.async_client()
    log = RedisRunLog(1000, 1000, client=client)
    try:
        yield log
    finally:
        await log.aclose()
        await client.aclose()


async def quiet_run(pause: asyncio.Event) -> AsyncGenerator[RunEvent]:
    """A run that logs its start, thinks until told (longer than the log's lifetime), ends."""
    yield RunEvent(1, "metadata", {"run_id": "quiet"})
    await pause.wait()
    yield RunEvent(2, "done", {"finish_reason": "stop"})


async def logged(log: RunLog, run_id: str) -> list[RunEvent] | None:
    follower = await log.follow(run_id, 0)
    if follower is None:
        return None
    async with contextlib.aclosing(follower):
        return [event async for event in follower]


async def test_a_run_log_lives_while_its_run_does_then_expires_after_its_last_event(
    run_log: RunLog,
) -> None:
    run_id = f"quiet-{random.random()}"
    go_on = asyncio.Event()
    run_log.publish(run_id, quiet_run(go_on), None, None)
    await asyncio.sleep(2.5)  # more than twice the log's lifetime, no event since the first
    follower = await run_log.follow(run_id, 0)
    assert follower is not None  # kept by the run's beat
    await follower.aclose()

    go_on.set()
    ended_at = time.monotonic()
    events = await logged(run_log, run_id)
    assert events is not None
    assert [e.event for e in events] == ["metadata", "done"]
    while (events := await logged(run_log, run_id)) is not None:
        assert time.monotonic() - ended_at < 10, "the log outlived its lifetime"
        await asyncio.sleep(0.2)
    assert time.monotonic() - ended_at >= 0.5  # it was there for a while after the end


# -- over HTTP: rillet serve -------------------------------------------------------------

KEEP = 3
CAP = 20_000  # a few short turns fit; one message of 31,000 random characters does not
TOKENS = 80  # 20 ms apart: a 1.6 s answer, long enough to delete the thread under it
QUESTION = "How does Rillet scale a chat service on its latency targets?"


@pytest.fixture(scope="module")
def fake(module_tmp: Path) -> Iterator[FakeLLM]:
    flags = ["--ttft-ms", "50", "--token-delay-ms", "20", "--answer-tokens", str(TOKENS)]
    with fake_llm_process(module_tmp, *flags) as process:
        yield process


def bounded_settings(fake: FakeLLM, **extra: str) -> dict[str, str]:
    return {
        **fake.openai_settings(),
        "state__keep_checkpoints": str(KEEP),
        "state__max_thread_bytes": str(CAP),
        "state__response_cache": "true",
        "streaming__run_log_ttl_seconds": "3",
        **extra,
    }


@pytest.fixture(scope="module", params=["memory", "redis", "cluster"])
def served(
    request: pytest.FixtureRequest, module_tmp: Path, fake: FakeLLM
) -> Iterator[tuple[Process, StateRedis | None]]:
    """`rillet serve` on that store: one worker in memory (its state is the worker's), two
    on Redis (a delete may land on the worker that does not run the run)."""
    if request.param == "memory":
        with rillet_server(module_tmp, workers=1, **bounded_settings(fake)) as server:
            yield server, None
        return
    store = state_redis(request, request.param)
    settings = bounded_settings(fake, **store.settings())
    with rillet_server(module_tmp, workers=2, **settings) as server:
        yield server, store


def stream(url: str, body: dict[str, Any], first_token: threading.Event | None = None) -> Events:
    events: Events = []
    with (
        httpx.Client(timeout=60) as client,
        connect_sse(client, "POST", f"{url}/v1/chat/stream", json=body) as source,
    ):
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            events.append((sse.event, json.loads(sse.data)))
            if sse.event == "token" and first_token is not None:
                first_token.set()
    return events


def messages_of(url: str, thread: str) -> list[str]:
    response = httpx.get(f"{url}/v1/threads/{thread}", timeout=10)
    response.raise_for_status()
    return [m["content"] for m in response.json()["messages"]]


def keys_of_thread(store: StateRedis, thread_key: str) -> list[bytes]:
    """Every key in the thread's hash tag (its checkpoints' tag escapes `:`)."""
    tags = {thread_key, escape(thread_key)}
    return sorted({key for tag in tags for key in store.keys(f"*{{{tag}}}*")})


def anonymous_thread_key(thread_id: str) -> str:
    from rillet_runtime.auth import ANONYMOUS

    return f"{ANONYMOUS.key}/{thread_id}"


def test_a_turn_over_the_cap_is_not_saved_and_the_thread_is_as_it_was(
    served: tuple[Process, StateRedis | None],
) -> None:
    server, _ = served
    thread = f"capped-{random.randrange(10**9)}"
    first = stream(server.url, {"message": "hello there", "thread_id": thread})
    assert first[-1] == ("done", first[-1][1])
    assert first[-1][1]["state_saved"] is True
    before = messages_of(server.url, thread)

    over = stream(server.url, {"message": incompressible(31_000), "thread_id": thread})
    assert over[-1][0] == "done", over[-1]
    assert over[-1][1]["state_saved"] is False
    assert over[-1][1]["state_saved_error"] == "thread_too_large"
    assert "".join(str(data["text"]) for name, data in over if name == "token")  # answered
    assert messages_of(server.url, thread) == before

    again = stream(server.url, {"message": "and now?", "thread_id": thread})
    assert again[-1][1]["state_saved"] is True
    after = messages_of(server.url, thread)
    assert after[: len(before)] == before
    assert after[len(before) :] == ["and now?", after[-1]]


@SERVED_ON_REDIS  # in memory each process has threads of its own
def test_a_thread_already_over_the_cap_gets_413_before_its_run(
    served: tuple[Process, StateRedis | None], module_tmp: Path, fake: FakeLLM
) -> None:
    """The cap lowered under a thread (here: a second server with a smaller one on the same
    Redis): its next run is refused before anything streams."""
    server, store = served
    assert store is not None
    thread = f"grown-{random.randrange(10**9)}"
    for text in ("one", "two"):
        assert stream(server.url, {"message": text, "thread_id": thread})[-1][1]["state_saved"]
    settings = bounded_settings(fake, **store.settings(), state__max_thread_bytes="500")
    with rillet_server(module_tmp, workers=1, **settings) as smaller:
        refused = httpx.post(
            f"{smaller.url}/v1/chat/stream", json={"message": "three", "thread_id": thread}
        )
        assert refused.status_code == 413
        assert refused.json()["error"]["code"] == "thread_too_large"
        assert messages_of(smaller.url, thread) == messages_of(server.url, thread)


def test_langgraph_history_returns_what_is_kept_and_a_dropped_checkpoint_is_404(
    served: tuple[Process, StateRedis | None],
) -> None:
    server, _ = served
    api = server.url
    thread = httpx.post(f"{api}/threads", json={}, timeout=10).json()["thread_id"]
    seen: list[str] = []
    for number in range(3):
        body = {
            "assistant_id": "agent",
            "input": {"messages": [{"role": "user", "content": f"turn {number}"}]},
        }
        done = httpx.post(f"{api}/threads/{thread}/runs/wait", json=body, timeout=60)
        assert done.status_code == 200, done.text
        history = httpx.post(f"{api}/threads/{thread}/history", json={"limit": 100}, timeout=10)
        seen += [state["checkpoint"]["checkpoint_id"] for state in history.json()]
    history = httpx.post(f"{api}/threads/{thread}/history", json={"limit": 100}, timeout=10)
    kept = [state["checkpoint"]["checkpoint_id"] for state in history.json()]
    assert KEEP <= len(kept) <= KEEP + 1  # one more while a run wrote as many as are kept
    assert kept == sorted(set(seen), reverse=True)[: len(kept)]
    for checkpoint_id in kept:
        state = httpx.get(f"{api}/threads/{thread}/state/{checkpoint_id}", timeout=10)
        assert state.status_code == 200
        assert state.json()["values"]["messages"]

    dropped = min(seen)
    gone = httpx.get(f"{api}/threads/{thread}/state/{dropped}", timeout=10)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "checkpoint_not_found"
    body = {
        "assistant_id": "agent",
        "input": {"messages": [{"role": "user", "content": "from the past"}]},
        "checkpoint_id": dropped,
    }
    refused = httpx.post(f"{api}/threads/{thread}/runs/wait", json=body, timeout=60)
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "checkpoint_not_found"


def test_deleting_a_busy_thread_cancels_its_run_and_leaves_nothing_of_it(
    served: tuple[Process, StateRedis | None],
) -> None:
    server, store = served
    thread = f"doomed-{random.randrange(10**9)}"
    first = stream(server.url, {"message": QUESTION, "thread_id": thread})
    assert first[-1][1]["state_saved"] is True
    run_ids = [first[0][1]["run_id"]]
    thread_key = anonymous_thread_key(thread)
    cached: set[bytes] = set()
    if store is not None:  # the first turn's answer is cached (it had sources), for the thread
        with contextlib.closing(store.client()) as client:
            cached = client.smembers(f"rillet:resp:thread:{{{thread_key}}}")
        assert cached
        assert all(store.keys(key.decode()) for key in cached)

    first_token = threading.Event()
    outcome: list[Events] = []
    reader = threading.Thread(
        target=lambda: outcome.append(
            stream(server.url, {"message": "go on", "thread_id": thread}, first_token)
        )
    )
    reader.start()
    assert first_token.wait(30)  # the second run holds the thread and streams
    deleted = httpx.delete(f"{server.url}/v1/threads/{thread}", timeout=30)
    reader.join(30)

    assert deleted.status_code == 204, deleted.text
    events = outcome[0]
    run_ids.append(events[0][1]["run_id"])
    assert events[-1][0] == "error"
    assert events[-1][1]["code"] == "run_cancelled"
    assert len([name for name, _ in events if name == "token"]) < TOKENS
    assert httpx.get(f"{server.url}/v1/threads/{thread}", timeout=10).status_code == 404
    if store is None:
        return
    assert keys_of_thread(store, thread_key) == []
    for run_id in run_ids:  # the runs' logs, records and checkpoint index
        assert store.keys(f"*{{{run_id}}}*") == []
    assert not [key for key in cached if store.keys(key.decode())]  # its cache entries


@SERVED_ON_REDIS  # without Redis runs are not logged for resuming
def test_a_run_log_expires_soon_after_its_last_event(
    served: tuple[Process, StateRedis | None],
) -> None:
    server, store = served
    assert store is not None
    events = stream(server.url, {"message": "hello"})
    run_id = events[0][1]["run_id"]
    log_key = f"rillet:run:{{{run_id}}}:events"
    with contextlib.closing(store.client()) as client:
        assert 0 < client.pttl(log_key) <= 3000
    resumed = httpx.get(f"{server.url}/v1/runs/{run_id}/stream", timeout=10)
    assert resumed.status_code == 200
    wait_for("the run's log to expire", lambda: not store.keys(log_key), 15)
    assert httpx.get(f"{server.url}/v1/runs/{run_id}/stream", timeout=10).status_code == 404
