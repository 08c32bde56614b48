"""A hostile-client suite against `rillet serve` (2 workers) on a real redis-server, with the
model a real `rillet fake-llm`: who may call, whose data they reach, and the limits that
hold across workers and processes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import openai
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric import rsa
from httpx_sse import connect_sse

from rillet_runtime.app import create_app
from rillet_runtime.auth import Principal
from rillet_runtime.fakellm import answer_tokens
from rillet_runtime.settings import Settings
from rillet_runtime.state.runs import lease_key
from tests.support.keys import api_key_settings, write_api_keys
from tests.support.processes import RedisServer, free_port, wait_for
from tests.support.servers import FakeLLM, Process, fake_llm_process, rillet_server

TOKENS = 60  # 40 ms apart: a 2.4 s answer, long enough to overlap streams
EXPECTED = "".join(answer_tokens(TOKENS))
KEYS = {"alice": "key-alice-0123456789", "bob": "key-bob-0123456789"}
AUDIENCE = "rillet-tests"
Events = list[tuple[str, str, dict[str, Any]]]


def bearer(principal: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[principal]}"}


def read(
    url: str,
    path: str = "/v1/chat/stream",
    method: str = "POST",
    stop_after_tokens: int | None = None,
    **kwargs: Any,
) -> Events:
    """A stream's events; with `stop_after_tokens`, the connection is cut there."""
    events: Events = []
    with (
        httpx.Client(timeout=60) as client,
        connect_sse(client, method, url + path, **kwargs) as source,
    ):
        tokens = 0
        for sse in source.iter_sse():
            events.append((sse.id, sse.event, json.loads(sse.data)))
            tokens += sse.event == "token"
            if tokens == stop_after_tokens:
                break
    return events


def text_of(events: Events) -> str:
    return "".join(str(data["text"]) for _, name, data in events if name == "token")


@pytest.fixture(scope="module")
def fake(module_tmp: Path) -> Iterator[FakeLLM]:
    flags = ["--ttft-ms", "50", "--token-delay-ms", "40", "--answer-tokens", str(TOKENS)]
    with fake_llm_process(module_tmp, *flags) as process:
        yield process


def keyed_settings(fake: FakeLLM, redis_url: str, keys: Path, **extra: str) -> dict[str, str]:
    return {
        **fake.openai_settings(),
        "state__checkpointer": "redis",
        "state__redis_url": redis_url,
        **api_key_settings(keys),
        **extra,
    }


@pytest.fixture(scope="module")
def keys_dir(module_tmp: Path) -> Path:
    return write_api_keys(module_tmp / "api-keys", KEYS)


@pytest.fixture(scope="module")
def server(
    module_tmp: Path, fake: FakeLLM, redis_server: RedisServer, keys_dir: Path
) -> Iterator[Process]:
    settings = keyed_settings(fake, redis_server.url, keys_dir, limits__concurrent_streams="3")
    with rillet_server(module_tmp, workers=2, **settings) as process:
        yield process


def test_every_route_but_the_probes_needs_credentials(server: Process) -> None:
    paths = create_app(Settings()).openapi()["paths"]
    routes = {(method.upper(), path) for path, methods in paths.items() for method in methods}
    assert {("GET", "/healthz"), ("POST", "/v1/chat/stream")} <= routes
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for method, path in sorted(routes):
            concrete = path.replace("{thread_id}", "t1").replace(
                "{run_id}", "00000000-0000-0000-0000-000000000000"
            )
            response = client.request(method, concrete, json={"message": "hi"})
            if path in {"/healthz", "/readyz", "/ok"}:
                assert response.status_code == 200, path
                continue
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert response.json()["error"]["code"] == "unauthenticated"


def test_bad_keys_are_refused_and_good_ones_work_either_way(server: Process) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        body = {"message": "hello"}
        wrong = client.post("/v1/chat", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert "Traceback" not in wrong.text
        assert client.post("/v1/chat", json=body, headers={"x-api-key": "nope"}).status_code == 401
        assert client.post("/v1/chat", json=body, headers=bearer("alice")).status_code == 200
        by_header = client.post("/v1/chat", json=body, headers={"x-api-key": KEYS["bob"]})
        assert by_header.status_code == 200


def test_another_principal_reaches_nothing_of_yours(server: Process) -> None:
    alice_run = read(
        server.url, json={"message": "what is rillet?", "thread_id": "t1"}, headers=bearer("alice")
    )
    run_id = str(alice_run[0][2]["run_id"])
    assert alice_run[-1][1] == "done"
    with httpx.Client(base_url=server.url, timeout=30) as client:
        before = client.get("/v1/threads/t1", headers=bearer("alice")).json()
        assert len(before["messages"]) == 2

        for method, path in [
            ("GET", "/v1/threads/t1"),
            ("DELETE", "/v1/threads/t1"),
            ("GET", f"/v1/runs/{run_id}/stream"),
            ("POST", f"/v1/runs/{run_id}/cancel"),
        ]:
            response = client.request(method, path, headers=bearer("bob"))
            assert response.status_code == 404, (method, path)
            assert response.json()["error"]["code"] in {"thread_not_found", "run_not_found"}

        # Bob naming Alice's thread id continues a thread of his own, never hers.
        bobs = client.post(
            "/v1/chat", json={"message": "tell me", "thread_id": "t1"}, headers=bearer("bob")
        )
        assert bobs.status_code == 200
        bob_thread = client.get("/v1/threads/t1", headers=bearer("bob")).json()
        assert bob_thread["messages"][0]["content"] == "tell me"
        assert len(bob_thread["messages"]) == 2
        after = client.get("/v1/threads/t1", headers=bearer("alice")).json()
        assert after == before


def test_the_openai_sdk_streams_with_a_key(server: Process) -> None:
    """The real `openai` SDK against Rillet's OpenAI-compatible API, the key as its api_key."""
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEYS["alice"])
    stream = client.chat.completions.create(
        model="rillet", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == EXPECTED
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong").models.list()


def test_a_key_added_to_the_secret_works_without_a_restart(server: Process, keys_dir: Path) -> None:
    headers = {"Authorization": "Bearer key-carol-0123456789"}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/v1/models", headers=headers).status_code == 401
        write_api_keys(keys_dir, {"carol": "key-carol-0123456789"})
        deadline = time.monotonic() + 15  # both workers re-read every 0.5 s
        seen = []
        while time.monotonic() < deadline and seen[-4:] != [200] * 4:
            seen.append(client.get("/v1/models", headers=headers).status_code)
            time.sleep(0.1)
        assert seen[-4:] == [200] * 4, seen
        (keys_dir / "carol").unlink()


def _open_stream(url: str, principal: str, opened: threading.Event) -> int:
    """Hold a stream open until its answer ends; the status of the response."""
    with (
        httpx.Client(timeout=60) as client,
        client.stream(
            "POST", f"{url}/v1/chat/stream", json={"message": "hi"}, headers=bearer(principal)
        ) as response,
    ):
        opened.set()
        for _ in response.iter_bytes():
            pass
        return response.status_code


def test_the_fourth_concurrent_stream_gets_429_whichever_worker_it_reaches(
    server: Process,
) -> None:
    with ThreadPoolExecutor(3) as pool:
        openings = [threading.Event() for _ in range(3)]
        streams = [pool.submit(_open_stream, server.url, "alice", e) for e in openings]
        for opened in openings:
            assert opened.wait(30)
        statuses = []
        for _ in range(4):  # fresh connections: gunicorn spreads them over both workers
            with httpx.Client(timeout=30) as client:
                response = client.post(
                    f"{server.url}/v1/chat", json={"message": "hi"}, headers=bearer("alice")
                )
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert int(response.headers["Retry-After"]) >= 1
                assert response.headers["RateLimit-Policy"] == '"concurrent";q=3'
                assert response.json()["error"]["code"] == "rate_limited"
        other = httpx.post(
            f"{server.url}/v1/chat", json={"message": "hi"}, headers=bearer("bob"), timeout=30
        )
        assert [s.result() for s in streams] == [200, 200, 200]
    assert statuses == [429] * 4
    assert other.status_code == 200  # limits are per principal


def test_two_runs_on_one_thread_one_wins_the_other_gets_409(server: Process) -> None:
    body = {"message": "a race", "thread_id": "race"}

    def post() -> int:
        with httpx.Client(timeout=60) as client:
            return client.post(
                f"{server.url}/v1/chat", json=body, headers=bearer("bob")
            ).status_code

    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(pool.map(lambda _: post(), range(2)))
    assert statuses == [200, 409]
    thread = httpx.get(f"{server.url}/v1/threads/race", headers=bearer("bob"), timeout=10).json()
    assert [m["role"] for m in thread["messages"]] == ["user", "assistant"]


def test_enqueue_waits_for_the_thread_and_interrupt_cancels_its_run(server: Process) -> None:
    def post(thread_id: str, strategy: str, message: str) -> httpx.Response:
        body = {"message": message, "thread_id": thread_id, "multitask_strategy": strategy}
        with httpx.Client(timeout=60) as client:
            return client.post(f"{server.url}/v1/chat", json=body, headers=bearer("bob"))

    for strategy in ("enqueue", "interrupt"):
        thread_id = f"multi-{strategy}"
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(post, thread_id, "reject", "first")
            time.sleep(0.5)  # the first run holds the thread (its answer takes 2.4 s)
            second = pool.submit(post, thread_id, strategy, "second")
            first_response, second_response = first.result(), second.result()
        thread = httpx.get(
            f"{server.url}/v1/threads/{thread_id}", headers=bearer("bob"), timeout=10
        ).json()
        users = [m["content"] for m in thread["messages"] if m["role"] == "user"]
        assert second_response.status_code == 200
        if strategy == "enqueue":
            assert first_response.status_code == 200
            assert users == ["first", "second"]
        else:
            assert first_response.status_code == 409
            assert first_response.json()["error"]["code"] == "run_cancelled"
            assert users[-1] == "second"


def test_cancelling_your_run_stops_it(server: Process, fake: FakeLLM) -> None:
    events: Events = []
    with (
        httpx.Client(timeout=60) as client,
        connect_sse(
            client,
            "POST",
            f"{server.url}/v1/chat/stream",
            json={"message": "go"},
            headers=bearer("bob"),
        ) as source,
    ):
        for sse in source.iter_sse():
            events.append((sse.id, sse.event, json.loads(sse.data)))
            if sse.event == "token" and len(events) == 3:
                run_id = events[0][2]["run_id"]
                cancelled = client.post(
                    f"{server.url}/v1/runs/{run_id}/cancel", headers=bearer("bob")
                )
                assert cancelled.status_code == 202
    assert events[-1][1] == "error"
    assert events[-1][2]["code"] == "run_cancelled"
    assert len(text_of(events)) < len(EXPECTED)


def test_deleting_a_thread_while_it_runs_cancels_the_run_first(
    server: Process, redis_server: RedisServer
) -> None:
    """The run is stopped (from whichever worker the delete lands on) and has let go of the
    thread before anything is removed, so it cannot save over the deleted thread; nothing
    of the thread is left in Redis."""
    url, thread = f"{server.url}/v1/threads/busy-delete", "busy-delete"
    first = {"message": "hello", "thread_id": thread}
    saved = httpx.post(f"{server.url}/v1/chat", json=first, headers=bearer("bob"), timeout=60)
    assert saved.status_code == 200
    thread_key = f"{Principal('bob').key}/{thread}"
    store = redis.Redis.from_url(redis_server.url)
    with ThreadPoolExecutor(1) as pool:
        body = {"message": "long", "thread_id": thread}
        running = pool.submit(
            httpx.post, f"{server.url}/v1/chat", json=body, headers=bearer("bob"), timeout=60
        )
        wait_for("the run to hold the thread", lambda: store.exists(lease_key(thread_key)), 30)
        deleted = httpx.delete(url, headers=bearer("bob"), timeout=30)
        cancelled = running.result()
    assert deleted.status_code == 204
    assert cancelled.status_code == 409
    assert cancelled.json()["error"]["code"] == "run_cancelled"
    assert httpx.get(url, headers=bearer("bob"), timeout=10).status_code == 404
    assert list(store.scan_iter(match=f"*{{{thread_key}}}*")) == []


def test_a_client_that_leaves_early_still_pays_for_what_streamed(
    module_tmp: Path, fake: FakeLLM, redis_server: RedisServer, keys_dir: Path
) -> None:
    """The provider reports usage only at the end; a stream cut after 10 tokens is charged
    those 10, so with 5 tokens a minute the next run waits."""
    settings = keyed_settings(
        fake,
        redis_server.url,
        keys_dir,
        limits__tokens_per_minute="5",
        streaming__resumable="false",  # a resumable run goes on for a resumer: not cut
    )
    with rillet_server(module_tmp, workers=1, **settings) as limited:
        read(limited.url, json={"message": "hi"}, headers=bearer("alice"), stop_after_tokens=10)
        time.sleep(1.5)  # the worker notices the disconnect, stops the run and charges it
        refused = httpx.post(
            f"{limited.url}/v1/chat", json={"message": "hi"}, headers=bearer("alice"), timeout=60
        )
    assert refused.status_code == 429  # the very next run: charged 0, it would have run
    assert refused.headers["RateLimit-Policy"] == '"tokens";q=5;w=60'


def test_requests_per_minute_hold_across_two_processes(
    module_tmp: Path, fake: FakeLLM, redis_server: RedisServer, keys_dir: Path
) -> None:
    """40 runs at once, half to each process: the limit allows 20 a minute (the refill
    during the second they take may add one)."""
    settings = keyed_settings(fake, redis_server.url, keys_dir, limits__requests_per_minute="20")
    with (
        rillet_server(module_tmp, workers=1, **settings) as a,
        rillet_server(module_tmp, workers=1, **settings) as b,
    ):

        def start(url: str) -> int:
            with httpx.Client(timeout=60) as client:
                return client.post(
                    f"{url}/v1/chat", json={"message": "hi"}, headers=bearer("alice")
                ).status_code

        with ThreadPoolExecutor(40) as pool:
            results = list(pool.map(start, [a.url, b.url] * 20))
    assert 19 <= results.count(200) <= 21, results
    assert results.count(200) + results.count(429) == 40


# --- JWT ---------------------------------------------------------------------------------


class Jwks:
    """A JWKS endpoint on a loopback port, serving whatever keys the test sets."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                body = json.dumps(jwks.document).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, kid: str, key: rsa.RSAPrivateKey) -> None:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        self.document["keys"].append({**public, "kid": kid, "alg": "RS256", "use": "sig"})


def token(key: rsa.RSAPrivateKey, kid: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "alice", "aud": AUDIENCE, "iat": now, "exp": now + 300, **claims}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
def jwks() -> Iterator[Jwks]:
    endpoint = Jwks()
    yield endpoint
    endpoint.server.shutdown()


@pytest.fixture(scope="module")
def jwt_server(
    module_tmp: Path, fake: FakeLLM, redis_server: RedisServer, jwks: Jwks
) -> Iterator[Process]:
    settings = {
        **fake.openai_settings(),
        "state__checkpointer": "redis",
        "state__redis_url": redis_server.url,
        "auth__mode": "jwt",
        "auth__jwt__audience": AUDIENCE,
        "auth__jwt__jwks_url": jwks.url,
    }
    with rillet_server(module_tmp, workers=2, **settings) as process:
        yield process


def test_jwts_are_checked_and_new_signing_keys_are_fetched(jwt_server: Process, jwks: Jwks) -> None:
    first, second = (rsa.generate_private_key(65537, 2048) for _ in range(2))
    jwks.publish("k1", first)
    now = int(time.time())

    def status(bearer_token: str) -> int:
        headers = {"Authorization": f"Bearer {bearer_token}"}
        return httpx.get(f"{jwt_server.url}/v1/models", headers=headers, timeout=10).status_code

    unsigned = jwt.encode(
        {"sub": "alice", "aud": AUDIENCE, "exp": now + 300}, None, algorithm="none"
    )
    assert status(token(first, "k1")) == 200
    assert status(token(first, "k1", exp=now - 120)) == 401  # expired (past the leeway)
    assert status(token(first, "k1", nbf=now + 600)) == 401  # not valid yet
    assert status(token(first, "k1", aud="another-service")) == 401
    assert status(unsigned) == 401  # alg: none
    assert status(token(second, "k1")) == 401  # signed by a key that is not k1
    assert status("not-a-jwt") == 401
    jwks.publish("k2", second)  # a rotated key: an unknown kid makes the workers refetch
    fetches = jwks.fetches
    deadline = time.monotonic() + 30  # refetches are at most one per 10 s per worker
    seen = [status(token(second, "k2"))]
    while seen[-2:] != [200, 200] and time.monotonic() < deadline:
        time.sleep(0.5)
        seen.append(status(token(second, "k2")))
    assert seen[-2:] == [200, 200], seen
    assert jwks.fetches > fetches
