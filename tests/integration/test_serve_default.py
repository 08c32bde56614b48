"""`rillet serve` on embedded defaults, as `make run` starts it: gunicorn, 2 uvicorn workers,
the offline extractive model, the bundled docs, in-memory state. Real HTTP and SSE clients."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import psutil
import pytest
from httpx_sse import aconnect_sse, connect_sse

from rillet_runtime.llm.extractive import PREAMBLE
from rillet_runtime.settings import ServerSettings
from tests.support.processes import wait_for
from tests.support.servers import RilletServer, rillet_server

QUESTION = "How do I install Rillet?"


@pytest.fixture(scope="module")
def server(module_tmp: Path) -> Iterator[RilletServer]:
    with rillet_server(module_tmp, workers=2) as process:
        yield process


def stream_events(url: str, body: dict[str, object]) -> list[tuple[str, str, dict[str, object]]]:
    with (
        httpx.Client(timeout=30) as client,
        connect_sse(client, "POST", f"{url}/v1/chat/stream", json=body) as source,
    ):
        assert source.response.headers["content-type"].startswith("text/event-stream")
        assert source.response.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in source.response.headers
        return [(sse.id, sse.event, json.loads(sse.data)) for sse in source.iter_sse()]


def test_streams_an_answer_grounded_in_the_bundled_docs(server: RilletServer) -> None:
    events = stream_events(server.url, {"message": QUESTION})
    names = [name for _, name, _ in events]
    assert names[0] == "metadata"
    assert names[1] == "sources"
    assert names[-1] == "done"
    assert set(names[2:-1]) == {"token"}
    assert [int(event_id) for event_id, _, _ in events] == list(range(1, len(events) + 1))

    sources = events[1][2]["sources"]
    assert isinstance(sources, list)
    assert any(s["source"] == "getting-started.md" for s in sources)
    answer = "".join(str(data["text"]) for _, name, data in events if name == "token")
    assert_quotes_the_docs(answer)
    assert "install" in answer


DOCS = Path(__file__).resolve().parents[2] / "docs"


def assert_quotes_the_docs(answer: str) -> None:
    """Grounded: every quoted unit appears word for word in the bundled docs."""
    assert answer.startswith(PREAMBLE)
    corpus = " ".join(" ".join(p.read_text().split()) for p in DOCS.rglob("*.md"))
    quotes = [
        re.sub(r"\s*\[\d+\]$", "", unit) for unit in answer.removeprefix(PREAMBLE).split("\n\n")
    ]
    assert quotes
    for quote in quotes:
        assert " ".join(quote.split()) in corpus


def test_chat_json_and_thread_lifecycle(server: RilletServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        first = client.post("/v1/chat", json={"message": "hello", "thread_id": "thread-lifecycle"})
        assert first.status_code == 200, first.text
        assert first.json()["sources"] == []  # small talk skips retrieval
        second = client.post(
            "/v1/chat", json={"message": QUESTION, "thread_id": "thread-lifecycle"}
        )
        assert second.json()["sources"]

        thread = client.get("/v1/threads/thread-lifecycle").json()
        roles = [m["role"] for m in thread["messages"]]
        assert roles == ["user", "assistant", "user", "assistant"]
        assert thread["messages"][3]["content"] == second.json()["answer"]

        assert client.delete("/v1/threads/thread-lifecycle").status_code == 204
        assert client.get("/v1/threads/thread-lifecycle").status_code == 404


@pytest.mark.parametrize(
    ("content", "headers", "status", "code", "param"),
    [
        (b'{"message": ', {"content-type": "application/json"}, 400, "malformed_json", None),
        (b"{}", {"content-type": "application/json"}, 422, "invalid_request", "message"),
        (
            b'{"message": ""}',
            {"content-type": "application/json"},
            422,
            "invalid_request",
            "message",
        ),
        (
            b'{"message": "hi", "thread_id": "../etc"}',
            {"content-type": "application/json"},
            422,
            "invalid_request",
            "thread_id",
        ),
        (
            b'{"message": "hi", "colour": 1}',
            {"content-type": "application/json"},
            422,
            "invalid_request",
            "colour",
        ),
        (
            b"message=hi",
            {"content-type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
            None,
        ),
        (
            b'{"message": "' + b"x" * 2_000_000 + b'"}',
            {"content-type": "application/json"},
            413,
            "body_too_large",
            None,
        ),
    ],
    ids=[
        "malformed-json",
        "missing-message",
        "empty-message",
        "bad-thread-id",
        "unknown-field",
        "wrong-content-type",
        "oversized",
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat", "/v1/chat/stream"])
def test_bad_requests_get_a_clear_4xx(
    server: RilletServer,
    path: str,
    content: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
    param: str | None,
) -> None:
    response = httpx.post(server.url + path, content=content, headers=headers, timeout=30)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["param"] == param
    assert "Traceback" not in response.text


def test_unknown_thread_is_404(server: RilletServer) -> None:
    for method in ("GET", "DELETE"):
        response = httpx.request(method, f"{server.url}/v1/threads/never-seen", timeout=10)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "thread_not_found"


async def test_official_openai_sdk_streams_from_chat_completions(server: RilletServer) -> None:
    """The official `openai` SDK, unchanged, against Rillet's OpenAI-compatible API."""
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    models = [m.id async for m in client.models.list()]
    assert "rillet" in models

    stream = await client.chat.completions.create(
        model="rillet",
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    finish_reasons: list[str | None] = []
    usage = None
    async for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish_reasons.append(chunk.choices[0].finish_reason)
        if chunk.usage:
            usage = chunk.usage
    streamed = "".join(pieces)
    assert_quotes_the_docs(streamed)
    assert finish_reasons[-1] == "stop"
    assert usage is not None
    assert usage.completion_tokens > 0

    whole = await client.chat.completions.create(
        model="rillet", messages=[{"role": "user", "content": QUESTION}]
    )
    assert whole.choices[0].message.content == streamed

    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(
            model="gpt-nope", messages=[{"role": "user", "content": "hi"}]
        )
    await client.close()


def _metric(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$"
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))


async def test_metrics_sum_all_workers(server: RilletServer) -> None:
    """Waves of 20 streams held open at once until both workers have served some (which
    worker accepts a connection is up to the kernel): /metrics, served by gunicorn's master
    on its own port, shows the sum of both."""
    async with httpx.AsyncClient(timeout=30) as client:
        before = (await client.get(server.metrics_url)).text
        completed_label = '{endpoint="chat_stream",outcome="completed"}'
        started = _metric(before, "rillet_requests_total", completed_label)

        async def one_stream() -> None:
            async with (
                httpx.AsyncClient(base_url=server.url, timeout=30) as own,  # own connection
                aconnect_sse(own, "POST", "/v1/chat/stream", json={"message": QUESTION}) as source,
            ):
                async for _ in source.aiter_sse():
                    pass

        def worker_files() -> set[str]:
            """The processes that wrote counters, but the master (it imports the metrics
            with the worker class, and serves them)."""
            files = server_metrics_dir(server).glob("counter_*.db")
            return {p.name.rsplit("_", 1)[-1] for p in files} - {f"{server.proc.pid}.db"}

        waves = 0
        while waves < 10 and (waves == 0 or len(worker_files()) < 2):
            await asyncio.gather(*(one_stream() for _ in range(20)))
            waves += 1
        after = (await client.get(server.metrics_url)).text

    assert len(worker_files()) == 2, "both workers should have written counters"
    assert _metric(after, "rillet_requests_total", completed_label) - started == 20 * waves
    assert (
        _metric(after, "rillet_time_to_first_token_seconds_count", '{endpoint="chat_stream"}')
        >= 20 * waves
    )
    assert _metric(after, "rillet_stage_duration_seconds_count", '{stage="retrieval"}') >= 20
    assert _metric(after, "rillet_active_streams") == 0


def test_a_replaced_worker_leaves_the_live_gauges(tmp_path: Path) -> None:
    """A worker killed outright is replaced by gunicorn; its live gauges leave the sums
    (`child_exit` marks it dead), so the pod's capacity stays two workers' worth."""
    capacity = "rillet_stream_capacity"
    two_workers = 2 * ServerSettings().max_streams_per_worker
    with rillet_server(tmp_path, workers=2) as server:
        master = psutil.Process(server.proc.pid)
        wait_for("both workers' gauges", lambda: _metric(server.metrics(), capacity) == two_workers)
        workers_before = master.children()
        doomed = workers_before[0]
        doomed.kill()
        doomed.wait(timeout=10)

        def replaced() -> bool:
            workers = master.children()
            return len(workers) == 2 and doomed.pid not in {w.pid for w in workers}

        wait_for("gunicorn to replace the worker", replaced, timeout=30)
        files = server_metrics_dir(server)
        assert not list(files.glob(f"gauge_live*_{doomed.pid}.db"))
        (new_pid,) = {w.pid for w in master.children()} - {w.pid for w in workers_before}
        wait_for("the new worker's gauges", lambda: list(files.glob(f"gauge_live*_{new_pid}.db")))
        wait_for(
            "two workers' capacity", lambda: _metric(server.metrics(), capacity) == two_workers
        )
        assert _metric(server.metrics(), "rillet_active_streams") == 0


def test_the_api_port_serves_no_metrics_and_no_docs(server: RilletServer) -> None:
    """A smaller surface by default: metrics only on their own port, no schema or docs."""
    assert "rillet_stream_capacity" in server.metrics()
    for path in ("/metrics", "/docs", "/openapi.json", "/redoc"):
        response = httpx.get(server.url + path, timeout=10)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"


def server_metrics_dir(server: RilletServer) -> Path:
    port = server.url.rsplit(":", 1)[-1]
    return server.log.parent / f"metrics-{port}"
