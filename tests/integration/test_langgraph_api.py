"""LangGraph's own clients against `rillet serve`: the `langgraph-sdk` Python client and
`RemoteGraph` from the `langgraph` package, unchanged, on a 2-worker server with API keys and
a real redis-server, then a real 3-master Redis Cluster (the same tests on each). The model
is `rillet fake-llm` (OpenAI's wire protocol), so what reaches it (and when its request is
cancelled) is seen from its side."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.pregel.remote import RemoteGraph
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError
from langgraph_sdk.schema import Command, StreamPart

from rillet_runtime.api.langgraph.shapes import assistant_id
from rillet_runtime.fakellm import answer_tokens
from rillet_runtime.version import REVISION_ENV, version
from tests.support.keys import api_key_settings, write_api_keys
from tests.support.processes import wait_for
from tests.support.redis_cluster import StateRedis
from tests.support.servers import FakeLLM, Process, fake_llm_process, rillet_server

TOKENS = 60  # 40 ms apart: a 2.4 s answer, long enough to act on a run in flight
EXPECTED = "".join(answer_tokens(TOKENS))
KEYS = {"alice": "key-alice-0123456789", "bob": "key-bob-0123456789"}
ROOT = Path(__file__).resolve().parents[2]
QUESTION = {"messages": [{"role": "user", "content": "what is rillet?"}]}
REVISION = "0123456789ab"


@pytest.fixture(scope="module")
def fake(module_tmp: Path) -> Iterator[FakeLLM]:
    flags = ["--ttft-ms", "50", "--token-delay-ms", "40", "--answer-tokens", str(TOKENS)]
    with fake_llm_process(module_tmp, *flags) as process:
        yield process


def _settings(module_tmp: Path, fake: FakeLLM, store: StateRedis) -> dict[str, str]:
    keys = write_api_keys(module_tmp / "api-keys", KEYS)
    return {**fake.openai_settings(), **store.settings(), **api_key_settings(keys)}


@pytest.fixture(scope="module")
def server(module_tmp: Path, fake: FakeLLM, state_redis: StateRedis) -> Iterator[Process]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv(REVISION_ENV, REVISION)  # as the image sets it from its build argument
        with rillet_server(module_tmp, workers=2, **_settings(module_tmp, fake, state_redis)) as p:
            yield p


@pytest.fixture(scope="module")
def user_graph_server(
    module_tmp: Path, fake: FakeLLM, state_redis: StateRedis
) -> Iterator[Process]:
    """A user's graph: a subgraph streams the model's draft, then a human reviews it."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        with rillet_server(
            module_tmp,
            workers=2,
            graph="tests.support.graphs:drafted_then_reviewed",
            graph_id="reviewed",
            **_settings(module_tmp, fake, state_redis),
        ) as process:
            yield process


def client(server: Process, who: str = "alice") -> SyncLangGraphClient:
    return get_sync_client(url=server.url, api_key=KEYS[who], timeout=60)


def text_of(parts: list[StreamPart]) -> str:
    """The answer's text from `messages` events (`messages-tuple` mode)."""
    return "".join(
        str(part.data[0]["content"]) for part in parts if part.event.startswith("messages")
    )


def _ended_request(fake: FakeLLM, before: int) -> dict[str, Any]:
    """The first model request made after `before` requests, once it has ended."""

    def ended() -> dict[str, Any] | None:
        return next((r for r in fake.stats()["requests"][before:] if r["ended_at"]), None)

    found: dict[str, Any] = wait_for("the model request to end", ended, timeout=10)
    return found


def test_the_served_graph_is_an_assistant(server: Process) -> None:
    lg = client(server)
    [assistant] = lg.assistants.search()
    assert assistant["graph_id"] == "agent"
    assert assistant["assistant_id"] == assistant_id("agent")
    assert lg.assistants.get(assistant["assistant_id"])["graph_id"] == "agent"
    drawn = lg.assistants.get_graph("agent")
    assert {"prepare", "generate"} <= {node["id"] for node in drawn["nodes"]}
    schemas = lg.assistants.get_schemas(assistant["assistant_id"])
    assert "messages" in schemas["input_schema"]["properties"]
    assert httpx.get(f"{server.url}/ok", timeout=10).json() == {"ok": True}
    assert httpx.get(f"{server.url}/info", timeout=10).status_code == 401


def test_info_names_the_version_the_revision_and_what_is_enabled(
    server: Process, state_redis: StateRedis
) -> None:
    info = httpx.get(f"{server.url}/info", headers={"x-api-key": KEYS["alice"]}, timeout=10)
    assert info.status_code == 200
    body = info.json()
    assert (body["version"], body["revision"]) == (version(), REVISION)
    assert body["flags"]["assistants"] is True  # LangGraph's shape, which its UIs read
    assert body["features"] == {
        "graph": "built-in",
        "model": "openai",
        "fallback_model": None,
        "retrieval": "embedded",
        "hybrid_search": True,
        "embeddings": "offline",
        "state": "redis-cluster" if state_redis.cluster else "redis",
        "auth": "api_keys",
        "response_cache": False,
        "resumable_streams": True,
        "docs": False,
    }


def test_threads_belong_to_their_principal(server: Process) -> None:
    alice, bob = client(server), client(server, "bob")
    thread = alice.threads.create(metadata={"team": "docs"})
    thread_id = thread["thread_id"]
    assert thread["status"] == "idle"
    assert alice.threads.get(thread_id)["metadata"] == {"team": "docs"}
    found = alice.threads.search(metadata={"team": "docs"})
    assert thread_id in [t["thread_id"] for t in found]
    assert thread_id not in [t["thread_id"] for t in bob.threads.search(metadata={"team": "docs"})]
    with pytest.raises(NotFoundError):
        bob.threads.get(thread_id)
    with pytest.raises(httpx.HTTPStatusError) as refused:  # `wait` raises httpx's own
        bob.runs.wait(thread_id, "agent", input=QUESTION)
    assert refused.value.response.status_code == 404
    with pytest.raises(ConflictError):
        alice.threads.create(thread_id=thread_id)
    assert (
        alice.threads.create(thread_id=thread_id, if_exists="do_nothing")["thread_id"] == thread_id
    )

    alice.runs.wait(thread_id, "agent", input=QUESTION)
    state = alice.threads.get_state(thread_id)
    assert state["values"]["messages"][-1]["content"] == EXPECTED
    assert state["checkpoint"]["thread_id"] == thread_id  # the client's id, not the stored key
    updated = alice.threads.update_state(
        thread_id, {"messages": [HumanMessage(content="a note", id="note-1").model_dump()]}
    )
    assert alice.threads.get_state(thread_id)["values"]["messages"][-1]["content"] == "a note"
    history = alice.threads.get_history(thread_id, limit=50)
    assert history[0]["checkpoint"]["checkpoint_id"] == updated["checkpoint"]["checkpoint_id"]
    assert len(history) >= 3
    older = alice.threads.get_state(thread_id, checkpoint_id=history[1]["checkpoint_id"])
    assert older["values"]["messages"][-1]["content"] == EXPECTED

    alice.threads.delete(thread_id)
    with pytest.raises(NotFoundError):
        alice.threads.get(thread_id)


@pytest.mark.parametrize("mode", ["values", "updates", "messages-tuple", "custom"])
def test_each_stream_mode(server: Process, mode: str) -> None:
    parts = list(client(server).runs.stream(None, "agent", input=QUESTION, stream_mode=mode))
    names = [part.event for part in parts]
    assert (names[0], names[-1]) == ("metadata", "end"), names
    assert parts[0].data["run_id"]
    middle = set(names[1:-1])
    if mode == "messages-tuple":
        assert middle == {"messages"}
        assert text_of(parts) == EXPECTED
        message, metadata = parts[1].data
        assert message["type"] == "AIMessageChunk"
        assert metadata["langgraph_node"] == "generate"
        assert "principal" not in metadata
    elif mode == "values":
        assert middle == {"values"}
        assert parts[-2].data["messages"][-1]["content"] == EXPECTED
    elif mode == "updates":
        assert middle == {"updates"}
        assert [next(iter(p.data)) for p in parts[1:-1]] == ["prepare", "generate"]
    else:
        assert middle == set()  # the built-in graph writes no custom events


def test_wait_create_join_and_the_runs_of_a_thread(server: Process) -> None:
    lg = client(server)
    thread_id = lg.threads.create()["thread_id"]
    waited = lg.runs.wait(thread_id, "agent", input=QUESTION)
    assert waited["messages"][-1]["content"] == EXPECTED
    created = lg.runs.create(thread_id, "agent", input=QUESTION)
    assert created["status"] in ("pending", "running")
    joined = lg.runs.join(thread_id, created["run_id"])
    assert [m["type"] for m in joined["messages"]] == ["human", "ai", "human", "ai"]
    runs = lg.runs.list(thread_id)
    assert [run["status"] for run in runs] == ["success", "success"]
    assert runs[0]["run_id"] == created["run_id"]
    assert lg.runs.get(thread_id, created["run_id"])["status"] == "success"
    assert lg.threads.get(thread_id)["status"] == "idle"


def test_a_cancel_stops_the_model_request(server: Process, fake: FakeLLM) -> None:
    lg = client(server)
    thread_id = lg.threads.create()["thread_id"]
    before = fake.stats()["started"]
    run = lg.runs.create(thread_id, "agent", input=QUESTION)
    wait_for("the model request", lambda: fake.stats()["started"] > before, timeout=10)
    asked = time.monotonic()
    lg.runs.cancel(thread_id, run["run_id"])
    request = _ended_request(fake, before)
    print(f"model request closed {time.monotonic() - asked:.2f} s after the cancel")
    assert request["outcome"] == "cancelled"
    assert request["tokens_sent"] < TOKENS
    assert lg.runs.join(thread_id, run["run_id"]) is not None
    assert lg.runs.get(thread_id, run["run_id"])["status"] == "interrupted"


def test_a_dropped_stream_rejoins_with_nothing_lost(server: Process) -> None:
    lg = client(server)
    thread_id = lg.threads.create()["thread_id"]
    seen: list[StreamPart] = []
    stream = lg.runs.stream(
        thread_id, "agent", input=QUESTION, stream_mode="messages-tuple", stream_resumable=True
    )
    for part in stream:
        seen.append(part)
        if len(seen) == 8:
            break  # the connection drops mid-answer
    stream.close()  # type: ignore[attr-defined]
    run_id, last_id = seen[0].data["run_id"], seen[-1].id
    rest = list(lg.runs.join_stream(thread_id, run_id, last_event_id=last_id))
    assert rest[-1].event == "end"
    assert text_of(seen) + text_of(rest) == EXPECTED
    replayed = list(lg.runs.join_stream(thread_id, run_id, last_event_id="-1"))
    assert text_of(replayed) == EXPECTED


def test_multitask_strategies(server: Process) -> None:
    lg = client(server)
    thread_id = lg.threads.create()["thread_id"]
    first = lg.runs.create(thread_id, "agent", input=QUESTION)
    wait_for("a run", lambda: lg.runs.get(thread_id, first["run_id"])["status"] == "running")
    with pytest.raises(ConflictError):
        lg.runs.create(thread_id, "agent", input=QUESTION, multitask_strategy="reject")
    assert lg.threads.get(thread_id)["status"] == "busy"
    assert thread_id in [t["thread_id"] for t in lg.threads.search(status="busy")]

    queued = lg.runs.create(thread_id, "agent", input=QUESTION, multitask_strategy="enqueue")
    assert queued["status"] == "pending"
    lg.runs.join(thread_id, queued["run_id"])
    assert lg.runs.get(thread_id, first["run_id"])["status"] == "success"
    messages = lg.threads.get_state(thread_id)["values"]["messages"]
    assert [m["content"] for m in messages if m["type"] == "ai"] == [EXPECTED, EXPECTED]

    stopped = lg.runs.create(thread_id, "agent", input=QUESTION)
    wait_for("a run", lambda: lg.runs.get(thread_id, stopped["run_id"])["status"] == "running")
    winner = lg.runs.wait(thread_id, "agent", input=QUESTION, multitask_strategy="interrupt")
    assert winner["messages"][-1]["content"] == EXPECTED
    assert lg.runs.get(thread_id, stopped["run_id"])["status"] == "interrupted"


def test_errors_in_langgraph_shape(server: Process) -> None:
    lg = client(server)
    thread_id = lg.threads.create()["thread_id"]
    with pytest.raises(httpx.HTTPStatusError) as unknown:
        lg.runs.wait(thread_id, "no-such-graph", input=QUESTION)
    assert unknown.value.response.status_code == 404
    with pytest.raises(NotFoundError):
        lg.threads.get("00000000-0000-0000-0000-000000000000")
    with pytest.raises(NotFoundError):
        lg.runs.get(thread_id, "00000000-0000-0000-0000-000000000000")
    with pytest.raises(UnprocessableEntityError) as refused:
        list(lg.runs.stream(thread_id, "agent", input=QUESTION, stream_mode="debug"))
    assert "debug" in refused.value.response.json()["detail"]
    missing = httpx.get(
        f"{server.url}/threads/{thread_id}x", headers={"x-api-key": KEYS["alice"]}, timeout=10
    )
    assert missing.status_code == 404
    assert missing.json()["detail"] == f"Thread with ID {thread_id}x not found"


def test_a_user_graph_streams_from_its_subgraph_and_waits_for_a_human(
    user_graph_server: Process,
) -> None:
    lg = client(user_graph_server)
    thread_id = lg.threads.create()["thread_id"]
    parts = list(
        lg.runs.stream(
            thread_id,
            "reviewed",
            input=QUESTION,
            stream_mode=["messages-tuple", "custom", "updates"],
            stream_subgraphs=True,
        )
    )
    names = {part.event.split(":")[0] for part in parts}
    assert {"messages|writer", "custom|writer", "updates"} <= names, names
    assert text_of(parts) == EXPECTED
    interrupt = next(p.data["__interrupt__"] for p in parts if "__interrupt__" in p.data)
    assert interrupt[0]["value"] == {"question": "publish this draft?"}
    thread = lg.threads.get(thread_id)
    assert thread["status"] == "interrupted"

    resumed = lg.runs.wait(thread_id, "reviewed", command=Command(resume="yes"))
    assert resumed["messages"][-1]["content"] == "reviewed: yes"
    assert lg.threads.get(thread_id)["status"] == "idle"

    # A second turn streams its own answer only: the subgraph's update carries the whole
    # conversation, and the earlier answers in it are not sent again.
    again = lg.runs.stream(thread_id, "reviewed", input=QUESTION, stream_mode="messages-tuple")
    assert text_of(list(again)) == EXPECTED


def test_remote_graph_invokes_streams_and_nests(server: Process) -> None:
    remote = RemoteGraph("agent", url=server.url, api_key=KEYS["alice"])
    thread = {"configurable": {"thread_id": client(server).threads.create()["thread_id"]}}
    result = remote.invoke(QUESTION, thread)
    assert result["messages"][-1]["content"] == EXPECTED
    tokens = [
        chunk[0]["content"] for chunk in remote.stream(QUESTION, thread, stream_mode="messages")
    ]
    assert "".join(tokens) == EXPECTED
    assert len(remote.get_state(thread).values["messages"]) == 4

    local = StateGraph(MessagesState)
    local.add_node("remote", RemoteGraph("agent", url=server.url, api_key=KEYS["alice"]))
    local.add_edge(START, "remote")
    nested = local.compile().invoke({"messages": [HumanMessage(content="what is rillet?")]})
    assert nested["messages"][-1].content == EXPECTED


def test_a_stream_the_client_leaves_is_cancelled(server: Process, fake: FakeLLM) -> None:
    """`on_disconnect: cancel` (the default): the model request stops with the client."""
    before = fake.stats()["started"]
    done = threading.Event()

    def leave_early() -> None:
        for part in client(server).runs.stream(
            None, "agent", input=QUESTION, stream_mode="messages-tuple"
        ):
            if part.event == "messages":
                break
        done.set()

    threading.Thread(target=leave_early).start()
    assert done.wait(30)
    assert _ended_request(fake, before)["outcome"] == "cancelled"


def _started_on(lg: SyncLangGraphClient, thread_id: str, question: str) -> str:
    """A background run, once its input is saved on the thread."""
    run = lg.runs.create(
        thread_id, "agent", input={"messages": [{"role": "user", "content": question}]}
    )

    def saved() -> bool:
        messages = lg.threads.get_state(thread_id)["values"].get("messages", [])
        return any(m["content"] == question for m in messages)

    wait_for("the run's input checkpoint", saved)
    return str(run["run_id"])


def test_rollback_forgets_the_run_it_stops(server: Process) -> None:
    lg = client(server)
    thread_id = lg.threads.create()["thread_id"]
    lg.runs.wait(thread_id, "agent", input=QUESTION)

    doomed = _started_on(lg, thread_id, "a doomed question")
    lg.runs.wait(thread_id, "agent", input=QUESTION, multitask_strategy="rollback")
    with pytest.raises(NotFoundError):
        lg.runs.get(thread_id, doomed)

    cancelled = _started_on(lg, thread_id, "a cancelled question")
    lg.runs.cancel(thread_id, cancelled, wait=True, action="rollback")
    with pytest.raises(NotFoundError):
        lg.runs.get(thread_id, cancelled)

    messages = lg.threads.get_state(thread_id)["values"]["messages"]
    assert [(m["type"], m["content"]) for m in messages] == [
        ("human", "what is rillet?"),
        ("ai", EXPECTED),
        ("human", "what is rillet?"),
        ("ai", EXPECTED),
    ]
