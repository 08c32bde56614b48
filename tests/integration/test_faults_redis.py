"""Faults between `rillet serve` and its Redis, injected by real tools: a real redis-server
(AOF, `appendfsync everysec`) killed with SIGKILL and restarted, and a real Toxiproxy in
front of it (latency, a bandwidth cap, connection resets, 30 s unreachable); plus a gunicorn
worker killed mid-stream. Each test records what the client saw and reads back what was
stored. One `rillet serve` (2 workers) serves every fault: each test leaves Redis up, the
proxy clean and the service answering, so the faults stay independent.
docs/reliability.md has the table these tests prove."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from rillet_runtime.fakellm import answer_tokens
from tests.support.faults import (
    Seen,
    ask,
    read_thread,
    stored_turns,
    stream,
    worker_pids,
    worker_serving,
)
from tests.support.processes import RedisServer, wait_for
from tests.support.servers import FakeLLM, RilletServer, fake_llm_process, rillet_server
from tests.support.toxiproxy import Proxy, Toxiproxy

TOKENS = 25  # 40 ms apart: a 1 s answer, long enough to strike mid-stream
ANSWER = "".join(answer_tokens(TOKENS))
OUTAGE_SECONDS = 30


@pytest.fixture(scope="module")
def fake(module_tmp: Path) -> Iterator[FakeLLM]:
    flags = ["--ttft-ms", "50", "--token-delay-ms", "40", "--answer-tokens", str(TOKENS)]
    with fake_llm_process(module_tmp, *flags) as process:
        yield process


@pytest.fixture(scope="module")
def aof_redis(module_tmp: Path) -> Iterator[RedisServer]:
    server = RedisServer(module_tmp / "aof", "--appendonly", "yes", "--appendfsync", "everysec")
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def redis_proxy(toxiproxy: Toxiproxy, aof_redis: RedisServer) -> Proxy:
    return toxiproxy.proxy("redis", f"127.0.0.1:{aof_redis.port}")


@pytest.fixture(scope="module")
def server(module_tmp: Path, fake: FakeLLM, redis_proxy: Proxy) -> Iterator[RilletServer]:
    settings = {
        **fake.openai_settings(),
        "state__checkpointer": "redis",
        "state__redis_url": f"redis://{redis_proxy.address}/0",
        "state__redis_timeout_seconds": "1",
    }
    with rillet_server(module_tmp, workers=2, **settings) as process:
        yield process


@pytest.fixture(autouse=True)
def clean_faults(
    toxiproxy: Toxiproxy, aof_redis: RedisServer, server: RilletServer
) -> Iterator[None]:
    """Each fault starts from a healthy service and leaves one behind."""
    yield
    toxiproxy.reset()
    if aof_redis.proc is None:
        aof_redis.start()
    wait_for("the service to save turns again", lambda: ask(server.url, "are you back?").saved)


def at_event(n: int, fault: Callable[[], object]) -> Callable[[Seen], None]:
    """An `on_event` that injects `fault()` once the client has seen `n` events."""

    def hook(seen: Seen) -> None:
        if len(seen.events) == n:
            fault()

    return hook


def ready(server: RilletServer) -> int:
    return httpx.get(f"{server.url}/readyz", timeout=10).status_code


def assert_finished_unsaved_or_failed(seen: Seen) -> None:
    """What an in-flight stream may end with when Redis fails under it: the whole answer
    with `state_saved: false`, or a clear error event; never a cut connection."""
    assert seen.cut is None, seen.cut
    name, data = seen.last
    if name == "done":
        assert data["state_saved"] is False
        assert seen.text == ANSWER
    else:
        assert name == "error", seen.names
        assert data["code"] == "state_unavailable"
        assert data["retryable"] is True


def test_redis_killed_mid_stream_keeps_every_acknowledged_turn(
    server: RilletServer, aof_redis: RedisServer
) -> None:
    """SIGKILL to Redis (AOF, fsync every second) mid-stream, then a restart from its AOF:
    every turn acknowledged `state_saved: true` before is there, the turn in flight is not
    (its stream said so), no worker died, readiness never depended on Redis."""
    workers = worker_pids(server.proc.pid)
    acknowledged = [ask(server.url, f"question {i}", "aof-kept") for i in range(3)]
    assert all(seen.saved for seen in acknowledged)

    in_flight = ask(
        server.url,
        "a question Redis dies under",
        "aof-in-flight",
        on_event=at_event(5, aof_redis.kill),
    )
    assert aof_redis.proc is None  # it was killed mid-stream
    assert_finished_unsaved_or_failed(in_flight)
    assert ready(server) == 200  # readiness does not hang on Redis

    aof_redis.start()  # the same port, the same directory: it loads its AOF
    wait_for("the thread read back", lambda: read_thread(server.url, "aof-kept").status_code == 200)
    assert stored_turns(server.url, "aof-kept") == [(f"question {i}", ANSWER) for i in range(3)]
    assert stored_turns(server.url, "aof-in-flight") == []  # never acknowledged, not half kept
    assert ask(server.url, "question 3", "aof-kept").saved
    assert len(stored_turns(server.url, "aof-kept")) == 4
    assert worker_pids(server.proc.pid) == workers
    assert ready(server) == 200


def test_slow_and_narrow_redis_still_streams_whole_answers(
    server: RilletServer, redis_proxy: Proxy
) -> None:
    """200 ms on every reply, then 64 KB/s each way: slower turns, nothing lost."""
    with redis_proxy.toxic("latency", latency=200):
        slow = ask(server.url, "question under latency", "slow-redis")
    with (
        redis_proxy.toxic("bandwidth", stream="upstream", rate=64),
        redis_proxy.toxic("bandwidth", stream="downstream", rate=64),
    ):
        narrow = ask(server.url, "question under a bandwidth cap", "slow-redis")
    for seen in (slow, narrow):
        assert seen.saved, seen.events[-1]
        assert seen.text == ANSWER
    assert stored_turns(server.url, "slow-redis") == [
        ("question under latency", ANSWER),
        ("question under a bandwidth cap", ANSWER),
    ]


def test_connections_reset_mid_run(server: RilletServer, redis_proxy: Proxy) -> None:
    """Every connection to Redis reset for a second while a run streams: the answer is
    whole, and what its `done` says about the turn is what the thread holds."""
    workers = worker_pids(server.proc.pid)
    assert ask(server.url, "first question", "reset-thread").saved

    def reset_for_a_second() -> None:
        with redis_proxy.toxic("reset_peer", stream="upstream", timeout=0):
            time.sleep(1)

    seen = ask(
        server.url, "second question", "reset-thread", on_event=at_event(5, reset_for_a_second)
    )
    assert seen.cut is None
    assert seen.text == ANSWER
    assert seen.last[0] == "done"
    expected = [("first question", ANSWER)]
    if seen.saved:
        expected.append(("second question", ANSWER))
    assert stored_turns(server.url, "reset-thread") == expected
    assert ask(server.url, "third question", "reset-thread").saved
    assert stored_turns(server.url, "reset-thread")[-1] == ("third question", ANSWER)
    assert worker_pids(server.proc.pid) == workers


def test_redis_unreachable_for_30_seconds_then_back(
    server: RilletServer, redis_proxy: Proxy
) -> None:
    """Redis cut off (connections closed, new ones refused) mid-stream, for 30 s: the stream
    in flight finishes unsaved, new runs are refused at admission with a retryable 503
    `state_unavailable`, /readyz stays 200. After: full recovery, the same workers."""
    workers = worker_pids(server.proc.pid)
    assert ask(server.url, "before the outage", "outage-thread").saved
    went_down: list[float] = []

    def cut_off() -> None:
        redis_proxy.set_enabled(False)
        went_down.append(time.monotonic())

    followers: list[Seen] = []
    following = threading.Event()

    def follow() -> None:
        path = f"/v1/runs/{in_flight_run[0]}/stream"
        followers.append(
            stream(server.url, method="GET", path=path, on_event=lambda _: following.set())
        )

    in_flight_run: list[str] = []
    follower = threading.Thread(target=follow)

    def follow_then_cut_off(seen: Seen) -> None:
        if len(seen.events) == 1:  # a second client follows the run from its log
            in_flight_run.append(seen.run_id)
            follower.start()
        if len(seen.events) >= 5 and following.is_set() and not went_down:
            cut_off()

    refusals: list[httpx.Response] = []
    try:
        in_flight = ask(
            server.url, "during the outage", "outage-thread", on_event=follow_then_cut_off
        )
        while time.monotonic() - went_down[0] < OUTAGE_SECONDS:
            for path in ("/v1/chat/stream", "/v1/chat"):
                body = {"message": "anyone there?", "thread_id": "another-thread"}
                refusals.append(httpx.post(f"{server.url}{path}", json=body, timeout=30))
            refusals.append(read_thread(server.url, "outage-thread"))
            assert ready(server) == 200
            time.sleep(2)
    finally:
        redis_proxy.set_enabled(True)
    assert_finished_unsaved_or_failed(in_flight)
    assert len(refusals) >= OUTAGE_SECONDS // 2
    for refusal in refusals:
        assert refusal.status_code == 503, refusal.text
        assert refusal.json()["error"]["code"] == "state_unavailable"
        assert int(refusal.headers["Retry-After"]) >= 1
    # The follower was told, in an event, that the log could not be read: not a cut stream.
    follower.join(timeout=30)
    (followed,) = followers
    assert followed.cut is None
    assert followed.last[1]["code"] == "state_unavailable"
    assert followed.last_id == followed.events[-2][0]  # resuming from it misses nothing

    wait_for(
        "a saved turn after the outage", lambda: ask(server.url, "after", "outage-thread").saved
    )
    assert stored_turns(server.url, "outage-thread") == [
        ("before the outage", ANSWER),
        ("after", ANSWER),
    ]
    assert worker_pids(server.proc.pid) == workers


def test_a_worker_killed_mid_stream(server: RilletServer, aof_redis: RedisServer) -> None:
    """SIGKILL to the worker serving a stream: gunicorn starts another; the client that
    reconnects with Last-Event-ID gets every event logged before the kill, then
    `run_interrupted`; the thread holds no half-written turn, and asking again works."""
    workers = worker_pids(server.proc.pid)
    killed: list[int] = []
    killed_at: list[float] = []

    def kill_its_worker(seen: Seen) -> None:
        if len(seen.events) == 5:
            killed.append(worker_serving(server.proc.pid, seen.client_port))
            os.kill(killed[0], signal.SIGKILL)
            killed_at.append(time.monotonic())

    question = "a question its worker dies under"
    first = ask(server.url, question, "killed-worker", on_event=kill_its_worker)
    assert killed
    assert first.last[0] not in ("done", "error"), first.names
    logged: Any = redis.Redis(port=aof_redis.port).xrange(f"rillet:run:{{{first.run_id}}}:events")
    logged_ids = [int(entry_id.split(b"-")[0]) for entry_id, _ in logged]

    rest = stream(
        server.url,
        method="GET",
        path=f"/v1/runs/{first.run_id}/stream",
        headers={"Last-Event-ID": str(first.last_id)},
    )
    print(f"run_interrupted {time.monotonic() - killed_at[0]:.1f} s after the kill")
    assert rest.cut is None
    name, data = rest.last
    assert (name, data["code"], data["retryable"]) == ("error", "run_interrupted", True)
    resumed_ids = [event_id for event_id, _, _ in rest.events[:-1]]
    assert resumed_ids == [i for i in logged_ids if i > first.last_id]
    seen_ids = [event_id for event_id, _, _ in first.events] + resumed_ids
    assert seen_ids == list(range(1, len(seen_ids) + 1))  # nothing missed, nothing twice
    assert rest.last_id == seen_ids[-1] + 1

    def replaced() -> set[int] | None:
        now = worker_pids(server.proc.pid)
        return now if len(now) == 2 and killed[0] not in now else None

    after = wait_for("gunicorn to replace the killed worker", replaced)
    assert workers - set(killed) <= after  # the other worker lived on
    assert stored_turns(server.url, "killed-worker") == []
    # The dead run's lease on the thread lapses within LEASE_MS: a retry that waits for it.
    assert ask(server.url, question, "killed-worker", multitask_strategy="enqueue").saved
    assert stored_turns(server.url, "killed-worker") == [(question, ANSWER)]
