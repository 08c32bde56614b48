"""Memory pressure on a real redis-server, through real `rillet serve`.

With `noeviction` (the managed default), a Redis at its `maxmemory` refuses writes: a new run
is refused with 503 `state_full` before any token and writes nothing; a run whose final save
is refused finishes its answer, ends with `state_saved: false` and the reason, and leaves the
thread as it was before the turn; reads, deletes and probes keep working, and no thread loses
a message. With an evicting policy Redis drops keys one by one instead: a thread it half
evicted reads back as `state_corrupt`, or is gone whole (404), never without its messages.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
from httpx_sse import connect_sse
from prometheus_client.parser import text_string_to_metric_families

from rillet_runtime.fakellm import answer_tokens
from tests.support.processes import RedisServer, wait_for
from tests.support.servers import FakeLLM, RilletServer, fake_llm_process, rillet_server

TOKENS = 40  # 50 ms apart: a 2 s answer, time enough to fill Redis under it
EXPECTED = "".join(answer_tokens(TOKENS))
MAXMEMORY = 32 * 1024 * 1024
FILLER = b"x" * (256 * 1024)
QUESTION = "How do I install Rillet?"  # finds sources: its answer goes to the response cache
Events = list[tuple[str, dict[str, object]]]


@pytest.fixture(scope="module")
def fake(module_tmp: Path) -> Iterator[FakeLLM]:
    flags = ["--ttft-ms", "20", "--token-delay-ms", "50", "--answer-tokens", str(TOKENS)]
    with fake_llm_process(module_tmp, *flags) as process:
        yield process


@pytest.fixture(scope="module")
def full_redis(module_tmp: Path) -> Iterator[RedisServer]:
    server = RedisServer(
        module_tmp / "noeviction-redis",
        *("--maxmemory", str(MAXMEMORY), "--maxmemory-policy", "noeviction"),
    )
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def served(module_tmp: Path, fake: FakeLLM, full_redis: RedisServer) -> Iterator[RilletServer]:
    settings = redis_state(fake, full_redis.url, state__response_cache="true")
    with rillet_server(module_tmp, workers=1, **settings) as server:
        yield server


def redis_state(fake: FakeLLM, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        **fake.openai_settings(),
        "state__checkpointer": "redis",
        "state__redis_url": redis_url,
        **extra,
    }


def fill(url: str) -> int:
    """Filler keys until Redis refuses one, then its limit set just under what it holds, so
    it is firmly past it (not at the edge, where a small write may still slip in). The
    count of filler keys."""
    client = redis.Redis.from_url(url)
    count = 0
    while True:
        try:
            client.set(f"filler:{count}", FILLER)
        except redis.exceptions.OutOfMemoryError:
            break
        count += 1
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used - 2 * len(FILLER))
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("one-more", "x")
    return count


def free(url: str) -> None:
    """The filler gone and the limit back: writes are accepted again."""
    client = redis.Redis.from_url(url)
    for key in client.scan_iter("filler:*", count=1000):
        client.delete(key)
    client.config_set("maxmemory", MAXMEMORY)
    client.set("one-more", "x")  # accepted again
    client.delete("one-more")


def stream(server: RilletServer, body: dict[str, object], on_token: object = None) -> Events:
    events: Events = []
    with (
        httpx.Client(timeout=60) as client,
        connect_sse(client, "POST", f"{server.url}/v1/chat/stream", json=body) as source,
    ):
        for sse in source.iter_sse():
            events.append((sse.event, json.loads(sse.data)))
            if sse.event == "token" and callable(on_token):
                on_token()
    return events


def text_of(events: Events) -> str:
    return "".join(str(data["text"]) for name, data in events if name == "token")


def messages(server: RilletServer, thread_id: str) -> list[tuple[str, str]]:
    response = httpx.get(f"{server.url}/v1/threads/{thread_id}", timeout=10)
    assert response.status_code == 200, response.text
    return [(m["role"], m["content"]) for m in response.json()["messages"]]


def state_errors(server: RilletServer) -> dict[tuple[str, str], float]:
    """rillet_state_errors_total by (reason, operation), summed over the workers."""
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(server.metrics()):
        for sample in family.samples:
            if sample.name == "rillet_state_errors_total":
                key = (sample.labels["reason"], sample.labels["operation"])
                found[key] = found.get(key, 0.0) + sample.value
    return found


def thread_keys(url: str, thread_id: str) -> list[bytes]:
    return sorted(redis.Redis.from_url(url).scan_iter(f"rillet:cp:{{*{thread_id}}}:*"))


def test_a_full_redis_refuses_new_runs_before_any_token(
    served: RilletServer, full_redis: RedisServer
) -> None:
    kept, doomed, new = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("kept", "doomed", "new"))
    raw = redis.Redis.from_url(full_redis.url)
    for thread_id in (kept, kept, doomed):
        name, done = stream(served, {"message": QUESTION, "thread_id": thread_id})[-1]
        assert (name, done["state_saved"]) == ("done", True)
    before = messages(served, kept)
    assert len(before) == 4
    kept_keys = {key: raw.dump(key) for key in thread_keys(full_redis.url, kept)}
    refused_before = state_errors(served).get(("state_full", "admission"), 0.0)

    fill(full_redis.url)
    try:
        for path, thread_id in (
            ("/v1/chat/stream", new),
            ("/v1/chat/stream", kept),
            ("/v1/chat", new),
        ):
            response = httpx.post(
                f"{served.url}{path}",
                json={"message": "are you there?", "thread_id": thread_id},
                timeout=30,
            )
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/json"  # not a stream
            assert response.json()["error"]["code"] == "state_full"
            assert int(response.headers["Retry-After"]) >= 1
        # LangGraph's API refuses a thread record it cannot write the same way.
        created = httpx.post(f"{served.url}/threads", json={}, timeout=10)
        assert created.status_code == 503
        assert created.json()["error"]["code"] == "state_full"

        # Nothing was half-written: the new thread has no key, the kept one is as it was.
        assert thread_keys(full_redis.url, new) == []
        assert {key: raw.dump(key) for key in thread_keys(full_redis.url, kept)} == kept_keys
        # Reads still work on a full Redis, and so does the probe: the pod stays in service.
        assert messages(served, kept) == before
        assert httpx.get(f"{served.url}/readyz", timeout=5).status_code == 200
        # A delete frees memory, so it goes ahead on a full Redis.
        assert httpx.delete(f"{served.url}/v1/threads/{doomed}", timeout=10).status_code == 204
        assert httpx.get(f"{served.url}/v1/threads/{doomed}", timeout=10).status_code == 404
        assert thread_keys(full_redis.url, doomed) == []
        refused = state_errors(served).get(("state_full", "admission"), 0.0)
        assert refused - refused_before == 3
    finally:
        free(full_redis.url)

    # Memory back: the kept thread lost nothing and takes its next turn.
    name, done = stream(served, {"message": "and now?", "thread_id": kept})[-1]
    assert (name, done["state_saved"]) == ("done", True)
    after = messages(served, kept)
    assert after[:4] == before
    assert after[4:] == [("user", "and now?"), ("assistant", EXPECTED)]


def test_a_run_whose_final_save_is_refused_ends_unsaved_and_leaves_the_thread_whole(
    served: RilletServer, full_redis: RedisServer
) -> None:
    thread_id = f"late-{uuid.uuid4().hex[:8]}"
    first = stream(served, {"message": "hello", "thread_id": thread_id})
    assert first[-1][1]["state_saved"] is True
    before = messages(served, thread_id)
    saves_refused = state_errors(served).get(("state_full", "checkpoint_save"), 0.0)

    filled: list[int] = []

    def fill_once() -> None:  # Redis fills up under the answer, after its first token
        if not filled:
            filled.append(fill(full_redis.url))

    try:
        events = stream(served, {"message": QUESTION, "thread_id": thread_id}, fill_once)
        assert filled
        name, done = events[-1]
        assert name == "done"
        assert text_of(events) == EXPECTED  # the answer is whole
        assert done["state_saved"] is False
        assert done["state_saved_error"] == "state_full"
        # Nothing of the turn is in the thread: not its question without its answer.
        assert messages(served, thread_id) == before
        counted = state_errors(served).get(("state_full", "checkpoint_save"), 0.0)
        assert counted - saves_refused == 1
    finally:
        free(full_redis.url)

    assert messages(served, thread_id) == before
    again = stream(served, {"message": QUESTION, "thread_id": thread_id})
    assert again[-1][1]["state_saved"] is True
    assert messages(served, thread_id) == [*before, ("user", QUESTION), ("assistant", EXPECTED)]


def test_the_non_streaming_answer_says_its_turn_was_not_saved(
    served: RilletServer, full_redis: RedisServer, fake: FakeLLM
) -> None:
    """`POST /v1/chat` carries the same `state_saved` and reason as the stream's `done`."""
    thread_id = f"answer-{uuid.uuid4().hex[:8]}"
    saved = httpx.post(
        f"{served.url}/v1/chat", json={"message": "hi", "thread_id": thread_id}, timeout=60
    )
    assert saved.status_code == 200
    assert (saved.json()["state_saved"], saved.json()["state_saved_error"]) == (True, None)
    before = messages(served, thread_id)

    started = int(str(fake.stats()["started"]))
    body = {"message": "hi again", "thread_id": thread_id}
    with ThreadPoolExecutor(1) as pool:
        answering = pool.submit(httpx.post, f"{served.url}/v1/chat", json=body, timeout=60)
        wait_for("the model to answer", lambda: int(str(fake.stats()["started"])) > started)
        try:
            fill(full_redis.url)  # under the answer, before its final save
            answer = answering.result()
        finally:
            free(full_redis.url)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["answer"] == EXPECTED
    assert (result["state_saved"], result["state_saved_error"]) == (False, "state_full")
    assert messages(served, thread_id) == before


# -- eviction --------------------------------------------------------------------------

THREAD_SUFFIXES = ("ns", ":idx", ":cps", ":blobs", ":writes", ":wfields")
WHOLE = set(THREAD_SUFFIXES)
FAST = ("--ttft-ms", "0", "--token-delay-ms", "0", "--answer-tokens", "200")


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru"])
def test_a_half_evicted_thread_is_an_error_never_a_thread_without_its_messages(
    module_tmp: Path, policy: str
) -> None:
    """Redis with an evicting policy and a small `maxmemory`, filled by real turns until it
    evicts: each thread reads back whole (all of its keys there), as `state_corrupt` (some
    of them gone), or 404 (none left, or only values no checkpoint names); never with
    fewer messages than it was given. A half-evicted thread cannot be continued either (no
    empty thread saved over it), but it can be deleted, every key of it."""
    server = RedisServer(
        module_tmp / f"{policy}-redis", "--maxmemory", "3mb", "--maxmemory-policy", policy
    )
    server.start()
    raw = redis.Redis.from_url(server.url)
    try:
        with (
            fake_llm_process(module_tmp, *FAST) as fast,
            rillet_server(module_tmp, workers=1, **redis_state(fast, server.url)) as served,
            httpx.Client(base_url=served.url, timeout=60) as client,
        ):
            written: list[str] = []
            while int(raw.info("stats")["evicted_keys"]) < 200:
                thread_id = f"{policy}-{len(written)}"
                answer = client.post("/v1/chat", json={"message": "hi", "thread_id": thread_id})
                assert answer.status_code == 200, answer.text
                written.append(thread_id)
                assert len(written) < 2000, "Redis never evicted"
            raw.config_set("maxmemory", 0)  # no eviction while the threads are read back

            outcomes: dict[str, list[str]] = {"whole": [], "corrupt": [], "gone": []}
            for thread_id in written:
                present = {
                    suffix
                    for suffix in THREAD_SUFFIXES
                    if any(k.endswith(suffix.encode()) for k in thread_keys(server.url, thread_id))
                }
                response = client.get(f"/v1/threads/{thread_id}")
                if response.status_code == 200:
                    roles = [m["role"] for m in response.json()["messages"]]
                    assert roles == ["user", "assistant"], (thread_id, present, roles)
                    # Both of the pending writes' keys gone is not told from none: they
                    # only matter to time travel into the middle of a past run.
                    assert present in (WHOLE, WHOLE - {":writes", ":wfields"}), present
                    outcomes["whole"].append(thread_id)
                elif response.status_code == 500:
                    assert response.json()["error"]["code"] == "state_corrupt"
                    assert present, thread_id
                    outcomes["corrupt"].append(thread_id)
                else:
                    assert response.status_code == 404, response.text
                    assert present <= {"ns", ":blobs"}, (thread_id, present)
                    outcomes["gone"].append(thread_id)
            assert outcomes["corrupt"], outcomes  # eviction did leave half threads

            damaged = outcomes["corrupt"][0]
            body = {"message": "still there?", "thread_id": damaged}
            continued = client.post("/v1/chat", json=body)
            assert continued.status_code == 500
            assert continued.json()["error"]["code"] == "state_corrupt"
            assert client.delete(f"/v1/threads/{damaged}").status_code == 204
            assert client.get(f"/v1/threads/{damaged}").status_code == 404
            assert thread_keys(server.url, damaged) == []
            assert "is missing" in served.log.read_text()
    finally:
        server.kill()
