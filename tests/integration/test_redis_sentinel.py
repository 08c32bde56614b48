"""State behind Redis Sentinel, with real processes: a master, its `--replicaof` replica and
three sentinels (quorum 2, the master called down after 1 s). The master is SIGKILLed; the
sentinels promote the replica; the checkpointer and a running `rillet serve` follow them
there without a restart.

Replication is asynchronous: a write the master acknowledged may not have reached the
replica when the master dies, and then it is lost with it. So each test writes its turn,
then waits for the replica to acknowledge it (`WAIT 1`) before the kill: what is checked
is that Rillet finds the promoted replica and reads and writes there, not Redis's own
replication guarantees.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from rillet_runtime.state.checkpoint import RedisCheckpointSaver, SentinelSet
from tests.integration.test_redis_checkpointer import API, call, echo_graph
from tests.support.faults import Seen, read_thread, stream, turns
from tests.support.redis_sentinel import MASTER_NAME, SENTINEL_PASSWORD, RedisSentinelSet
from tests.support.servers import FakeLLM, fake_llm_process, rillet_server

RIDE_THROUGH_SECONDS = 30.0  # longer than any failover here takes: nothing may fail


@pytest.fixture(scope="module")
def fake(module_tmp: Path) -> Iterator[FakeLLM]:
    flags = ["--ttft-ms", "10", "--token-delay-ms", "5", "--answer-tokens", "8"]
    with fake_llm_process(module_tmp, *flags) as process:
        yield process


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[RedisSentinelSet]:
    """A fresh set for each test: each one ends with its master dead."""
    sentinel_set = RedisSentinelSet(tmp_path / "sentinel")
    try:
        sentinel_set.start()
        yield sentinel_set
    finally:
        sentinel_set.stop()


@API
async def test_the_checkpointer_follows_the_master_through_a_failover(
    api: str, sentinels: RedisSentinelSet
) -> None:
    """The next turn is sent the moment the master dies: its commands retry, asking the
    sentinels again, until the replica is promoted, and it lands there."""
    sentinel = SentinelSet(
        master_name=MASTER_NAME,
        addresses=tuple(("127.0.0.1", port) for port in sentinels.sentinel_ports),
        password=SENTINEL_PASSWORD,
        failover_seconds=RIDE_THROUGH_SECONDS,
    )
    async with RedisCheckpointSaver.connect(sentinels.url, sentinel=sentinel) as saver:
        graph = echo_graph(saver)
        config: Any = {"configurable": {"thread_id": f"failover-{api}"}}
        await call(api, graph, "invoke", {"messages": [HumanMessage(content="before")]}, config)
        sentinels.replicate()
        sentinels.kill_master()

        await call(api, graph, "invoke", {"messages": [HumanMessage(content="after")]}, config)
        state = await call(api, graph, "get_state", config)
    assert [m.content for m in state.values["messages"]] == [
        "before",
        "echo: before",
        "after",
        "echo: after",
    ]
    assert sentinels.master_port() == sentinels.replica.port  # written on the promoted one


def turn(url: str, thread_id: str, message: str) -> Seen:
    return stream(url, {"message": message, "thread_id": thread_id})


def test_a_served_thread_rides_through_a_failover(
    tmp_path: Path, fake: FakeLLM, sentinels: RedisSentinelSet
) -> None:
    """A turn acknowledged with `state_saved: true` (and replicated) is there after the
    failover; a turn sent while the sentinels are still electing waits for the new master
    and is saved there; `rillet serve` is never restarted."""
    settings = {**fake.openai_settings(), **sentinels.settings(RIDE_THROUGH_SECONDS)}
    with rillet_server(tmp_path, workers=2, **settings) as server:
        assert turn(server.url, "kept", "before the failover").saved
        sentinels.replicate()
        sentinels.kill_master()

        during = turn(server.url, "kept", "while the sentinels elect")
        assert during.saved, (during.status, during.body, during.events[-1:])
        sentinels.wait_for_failover()
        after = turn(server.url, "kept", "on the new master")
        assert after.saved

        thread = read_thread(server.url, "kept")
        assert thread.status_code == 200
        questions = [question for question, _ in turns(thread.json()["messages"])]
        assert questions == [
            "before the failover",
            "while the sentinels elect",
            "on the new master",
        ]
        assert server.proc.poll() is None


def test_during_a_failover_requests_get_a_clear_503(
    tmp_path: Path, fake: FakeLLM, sentinels: RedisSentinelSet
) -> None:
    """With a failover longer than the retries (failover_seconds 0.1), requests that meet
    it are refused with 503 `state_unavailable` and Retry-After, or their stream ends with
    that error (or says its turn was not saved); never a 500. After it, everything works
    without a restart."""
    settings = {**fake.openai_settings(), **sentinels.settings(0.1)}
    with rillet_server(tmp_path, workers=1, **settings) as server:
        assert turn(server.url, "kept", "before the failover").saved
        sentinels.replicate()
        sentinels.kill_master()

        refusals: list[dict[str, Any]] = []
        promoted = False
        while not promoted:
            promoted = sentinels.promoted()  # one more round after the promotion is seen
            read = read_thread(server.url, "kept")
            assert read.status_code in {200, 503}, (read.status_code, read.text)
            if read.status_code == 503:
                assert read.headers["Retry-After"]
                refusals.append(read.json()["error"])
            seen = turn(server.url, "during", "anyone there?")
            assert seen.status in {200, 503}, (seen.status, seen.body)
            if seen.status == 503:
                assert seen.headers["retry-after"]
                refusals.append(seen.body["error"])
            elif not seen.saved:  # admitted, then met it: an error, or a turn not saved
                name, data = seen.last
                assert name == "error" or data["state_saved"] is False, seen.events
                refusals.extend([data] if name == "error" else [])
        assert refusals, "no request met the failover"
        assert {refusal["code"] for refusal in refusals} == {"state_unavailable"}

        assert turn(server.url, "kept", "on the new master").saved
        questions = [q for q, _ in turns(read_thread(server.url, "kept").json()["messages"])]
        assert questions == ["before the failover", "on the new master"]
        assert server.proc.poll() is None
