"""The runtime on Redis state, as in production: two `rillet serve` replicas share a real
redis-server, then a real 3-master Redis Cluster (the same tests on each); the model is
`rillet fake-llm` speaking OpenAI's wire protocol."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from rillet_runtime.fakellm import answer_tokens
from tests.support.keys import api_key_settings, write_api_keys
from tests.support.processes import RedisServer
from tests.support.redis_cluster import StateRedis
from tests.support.servers import FakeLLM, Process, fake_llm_process, rillet_server

TOKENS = 60  # 40 ms apart: a 2.4 s answer
EXPECTED = "".join(answer_tokens(TOKENS))
Events = list[tuple[str, str, dict[str, object]]]


@pytest.fixture(scope="module")
def fake(module_tmp: Path) -> Iterator[FakeLLM]:
    flags = ["--ttft-ms", "50", "--token-delay-ms", "40", "--answer-tokens", str(TOKENS)]
    with fake_llm_process(module_tmp, *flags) as process:
        yield process


def redis_settings(fake: FakeLLM, store: StateRedis, **extra: str) -> dict[str, str]:
    return {
        **fake.openai_settings(),
        **store.settings(),
        "streaming__resume_grace_seconds": "5",
        **extra,
    }


@pytest.fixture(scope="module")
def replicas(
    module_tmp: Path, fake: FakeLLM, state_redis: StateRedis
) -> Iterator[tuple[Process, Process]]:
    settings = redis_settings(fake, state_redis)
    with (
        rillet_server(module_tmp, workers=1, **settings) as a,
        rillet_server(module_tmp, workers=1, **settings) as b,
    ):
        yield a, b


def read(
    url: str,
    method: str = "POST",
    path: str = "/v1/chat/stream",
    stop_after: int | None = None,
    **kwargs: object,
) -> Events:
    events: Events = []
    with (
        httpx.Client(timeout=60) as client,
        connect_sse(client, method, url + path, **kwargs) as source,
    ):  # type: ignore[arg-type]
        for sse in source.iter_sse():
            events.append((sse.id, sse.event, json.loads(sse.data)))
            if stop_after is not None and len(events) >= stop_after:
                break  # the connection is cut here, mid-answer
    return events


def text_of(events: Events) -> str:
    return "".join(str(data["text"]) for _, name, data in events if name == "token")


def test_a_cut_stream_resumes_on_another_replica_without_loss(
    replicas: tuple[Process, Process],
) -> None:
    a, b = replicas
    first = read(a.url, json={"message": "tell me about streams"}, stop_after=6)
    run_id = str(first[0][2]["run_id"])
    last_id = first[-1][0]
    rest = read(b.url, "GET", f"/v1/runs/{run_id}/stream", headers={"Last-Event-ID": last_id})
    assert [int(i) for i, _, _ in first + rest] == list(range(1, len(first) + len(rest) + 1))
    assert rest[-1][1] == "done"
    assert text_of(first) + text_of(rest) == EXPECTED

    replay = read(b.url, "GET", f"/v1/runs/{run_id}/stream")  # from the start, after the end
    assert text_of(replay) == EXPECTED


def test_the_thread_is_shared_by_the_replicas(replicas: tuple[Process, Process]) -> None:
    a, b = replicas
    events = read(a.url, json={"message": "hello", "thread_id": "shared-thread"})
    assert events[-1][2]["state_saved"] is True
    thread = httpx.get(f"{b.url}/v1/threads/shared-thread", timeout=10).json()
    assert [m["role"] for m in thread["messages"]] == ["user", "assistant"]
    assert thread["messages"][1]["content"] == EXPECTED


def test_response_cache_answers_a_repeat_without_the_model(
    module_tmp: Path, fake: FakeLLM, state_redis: StateRedis
) -> None:
    """Per principal, whichever replica answers: another principal's repeat is a miss."""
    keys = write_api_keys(module_tmp / "cache-keys", {"tenant-a": "key-a", "tenant-b": "key-b"})
    settings = redis_settings(
        fake, state_redis, state__response_cache="true", **api_key_settings(keys)
    )
    question = {"message": "How do I install Rillet?"}
    with (
        rillet_server(module_tmp, workers=1, **settings) as a,
        rillet_server(module_tmp, workers=1, **settings) as b,
    ):
        first = read(a.url, json=question, headers={"Authorization": "Bearer key-a"})
        calls = fake.stats()["started"]
        second = read(b.url, json=question, headers={"Authorization": "Bearer key-a"})
        assert text_of(second) == text_of(first) == EXPECTED
        assert fake.stats()["started"] == calls  # served from the cache, on the other replica
        assert "sources" not in [name for _, name, _ in second]
        other_tenant = read(b.url, json=question, headers={"Authorization": "Bearer key-b"})
        assert fake.stats()["started"] == calls + 1
        assert text_of(other_tenant) == EXPECTED


def test_a_dead_owner_gives_run_interrupted(
    module_tmp: Path, fake: FakeLLM, state_redis: StateRedis, replicas: tuple[Process, Process]
) -> None:
    _, b = replicas
    with rillet_server(module_tmp, workers=1, **redis_settings(fake, state_redis)) as doomed:
        first = read(doomed.url, json={"message": "a long story"}, stop_after=4)
        os.killpg(doomed.proc.pid, signal.SIGKILL)
        doomed.proc.wait()
    run_id = str(first[0][2]["run_id"])
    started = time.monotonic()
    rest = read(b.url, "GET", f"/v1/runs/{run_id}/stream", headers={"Last-Event-ID": first[-1][0]})
    assert rest[-1][1] == "error"
    assert rest[-1][2]["code"] == "run_interrupted"
    assert time.monotonic() - started < 10


def test_unknown_runs_and_bad_resume_headers(replicas: tuple[Process, Process]) -> None:
    a, _ = replicas
    unknown = httpx.get(f"{a.url}/v1/runs/00000000-0000-0000-0000-000000000000/stream", timeout=10)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "run_not_found"
    bad = httpx.get(
        f"{a.url}/v1/runs/00000000-0000-0000-0000-000000000000/stream",
        headers={"Last-Event-ID": "soon"},
        timeout=10,
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["param"] == "Last-Event-ID"


def test_redis_going_down_mid_stream(module_tmp: Path, fake: FakeLLM) -> None:
    """In-flight streams finish and say their state was not saved; new ones are refused fast
    with a clear, retryable 503; after Redis is back, everything works again."""
    redis = RedisServer(module_tmp / "flaky-redis")
    redis.start()
    store = StateRedis(redis.url, cluster=False)
    settings = redis_settings(fake, store, state__redis_timeout_seconds="1")
    with rillet_server(module_tmp, workers=1, **settings) as server:
        with (
            httpx.Client(timeout=60) as client,
            connect_sse(
                client,
                "POST",
                f"{server.url}/v1/chat/stream",
                json={"message": "hi", "thread_id": "t-down"},
            ) as source,
        ):
            events: Events = []
            for sse in source.iter_sse():
                events.append((sse.id, sse.event, json.loads(sse.data)))
                if len(events) == 4:
                    redis.kill()
        assert events[-1][1] == "done"
        assert events[-1][2]["state_saved"] is False
        assert text_of(events) == EXPECTED

        started = time.monotonic()
        # A run's thread lease cannot be taken: refused before any stream starts.
        for path in ("/v1/chat/stream", "/v1/chat"):
            refused = httpx.post(f"{server.url}{path}", json={"message": "anyone?"}, timeout=30)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "state_unavailable"
            assert refused.headers["Retry-After"]
        assert time.monotonic() - started < 5

        redis.start()
        recovered = read(server.url, json={"message": "back?"})
        assert recovered[-1][1] == "done"
        assert recovered[-1][2]["state_saved"] is True
    redis.kill()
