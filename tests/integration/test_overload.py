"""Overload against a real gunicorn with 2 uvicorn workers and `rillet fake-llm` speaking
OpenAI's wire protocol: three times the stream cap at once gets the excess refused with 503
and Retry-After while every admitted stream completes and no worker is restarted; a worker
whose event loop runs late refuses new streams whatever its count."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from tests.support.faults import worker_pids
from tests.support.servers import fake_llm_process, rillet_server

CAP_PER_WORKER = 5
WORKERS = 2
TOKENS = 60  # 50 ms apart: each admitted stream runs about 3 s, past the last arrival


async def one_stream(url: str) -> tuple[int, dict[str, str], str]:
    """(status, headers, the last event's name or the error code)."""
    async with (
        httpx.AsyncClient(base_url=url, timeout=60) as client,
        aconnect_sse(client, "POST", "/v1/chat/stream", json={"message": "hello"}) as source,
    ):
        response = source.response
        if response.status_code != 200:
            await response.aread()
            return response.status_code, dict(response.headers), response.json()["error"]["code"]
        last = ""
        async for sse in source.aiter_sse():
            last = sse.event
        return 200, dict(response.headers), last


async def test_three_times_the_cap_sheds_the_excess_and_keeps_every_worker(
    tmp_path: Path,
) -> None:
    flags = ["--ttft-ms", "50", "--token-delay-ms", "50", "--answer-tokens", str(TOKENS)]
    with (
        fake_llm_process(tmp_path, *flags) as fake,
        rillet_server(
            tmp_path,
            workers=WORKERS,
            **fake.openai_settings(),
            server__max_streams_per_worker=str(CAP_PER_WORKER),
        ) as server,
    ):
        workers_before = worker_pids(server.proc.pid)
        assert len(workers_before) == WORKERS
        cap = CAP_PER_WORKER * WORKERS
        results = await asyncio.gather(*(one_stream(server.url) for _ in range(3 * cap)))

        admitted = [last for status, _, last in results if status == 200]
        refused = [(headers, code) for status, headers, code in results if status != 200]
        assert all(status in (200, 503) for status, _, _ in results), results
        assert admitted == ["done"] * len(admitted)  # every admitted stream completed
        assert 0 < len(admitted) <= cap
        assert len(refused) >= 2 * cap
        assert {code for _, code in refused} == {"over_capacity"}
        assert all(headers.get("retry-after") for headers, _ in refused)
        assert worker_pids(server.proc.pid) == workers_before  # none killed or restarted

        metrics = server.metrics()
        completed = (
            f'rillet_requests_total{{endpoint="chat_stream",outcome="completed"}} {len(admitted)}.0'
        )
        assert completed in metrics


async def test_a_late_event_loop_refuses_new_streams(tmp_path: Path) -> None:
    """A lag budget no loop meets (a microsecond): every new stream is refused, as a
    CPU-saturated worker's would be, and the lag is in /metrics; the worker stays ready."""
    with (
        fake_llm_process(tmp_path) as fake,
        rillet_server(
            tmp_path, workers=1, **fake.openai_settings(), server__max_event_loop_lag_ms="0.001"
        ) as server,
    ):
        status, headers, code = await one_stream(server.url)
        assert (status, code) == (503, "over_capacity")
        assert headers["retry-after"] == "2"
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            refused = await client.post("/v1/chat/stream", json={"message": "hello"})
            assert "event loop runs" in refused.json()["error"]["message"]
            assert (await client.get("/readyz")).status_code == 200
        metrics = server.metrics()
        assert 'outcome="rejected_loop_lag"} 2.0' in metrics
        samples = next(
            line
            for line in metrics.splitlines()
            if line.startswith("rillet_event_loop_lag_seconds_count")
        )
        assert float(samples.split()[-1]) > 0
