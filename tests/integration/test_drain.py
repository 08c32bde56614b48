"""Graceful drain against a real gunicorn with 2 uvicorn workers: SIGTERM while 20 streams
are open lets all 20 finish, refuses new streams with 503, and exits within the grace
period. The model is `rillet fake-llm` speaking OpenAI's wire protocol."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
from httpx_sse import aconnect_sse

from rillet_runtime.fakellm import answer_tokens
from tests.support.servers import fake_llm_process, rillet_server

TOKENS = 40  # 50 ms apart: each stream runs about 2 s
DRAIN_SECONDS = 3
MAX_STREAM_SECONDS = 20
GRACEFUL_TIMEOUT = MAX_STREAM_SECONDS + DRAIN_SECONDS + 5


async def test_sigterm_drains_open_streams(tmp_path: Path) -> None:
    flags = ["--ttft-ms", "50", "--token-delay-ms", "50", "--answer-tokens", str(TOKENS)]
    with (
        fake_llm_process(tmp_path, *flags) as fake,
        rillet_server(
            tmp_path,
            workers=2,
            **fake.openai_settings(),
            server__drain_seconds=str(DRAIN_SECONDS),
            server__max_stream_seconds=str(MAX_STREAM_SECONDS),
        ) as server,
    ):
        first_tokens = asyncio.Semaphore(0)

        async def one_stream() -> tuple[str, str]:
            async with (
                httpx.AsyncClient(base_url=server.url, timeout=60) as client,
                aconnect_sse(
                    client,
                    "POST",
                    "/v1/chat/stream",
                    json={"message": "hello there, stream please"},
                ) as source,
            ):
                text, last = "", ""
                async for sse in source.aiter_sse():
                    last = sse.event
                    if sse.event == "token":
                        if not text:
                            first_tokens.release()
                        text += json.loads(sse.data)["text"]
                return text, last

        streams = [asyncio.create_task(one_stream()) for _ in range(20)]
        for _ in range(20):
            await asyncio.wait_for(first_tokens.acquire(), 30)

        terminated_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            refused = await client.post("/v1/chat/stream", json={"message": "one more?"})
            readiness = await client.get("/readyz")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "draining"
        assert refused.headers["retry-after"]
        assert readiness.status_code == 503

        results = await asyncio.gather(*streams)
        assert [last for _, last in results] == ["done"] * 20
        assert all(text == "".join(answer_tokens(TOKENS)) for text, _ in results)

        exit_code = await asyncio.to_thread(server.proc.wait, GRACEFUL_TIMEOUT)
        assert exit_code == 0
        assert time.monotonic() - terminated_at < GRACEFUL_TIMEOUT


async def test_prestop_drain_turns_readiness_off_and_keeps_the_workers(tmp_path: Path) -> None:
    """Kubernetes' order: preStop `rillet drain` first (readiness off, new streams 503, the
    workers keep serving what is open), SIGTERM only later. The workers must not exit on
    the drain file alone: gunicorn would restart them and requests would hang meanwhile."""
    drain_file = tmp_path / "draining"
    with rillet_server(tmp_path, workers=2, server__drain_file=str(drain_file)) as server:
        workers_before = {child.pid for child in psutil.Process(server.proc.pid).children()}
        assert len(workers_before) == 2

        env = {**os.environ, "RILLET_SERVER__DRAIN_FILE": str(drain_file)}
        drain = [sys.executable, "-m", "rillet_runtime", "drain", "--wait", "0"]
        await asyncio.to_thread(subprocess.run, drain, env=env, check=True)
        await asyncio.sleep(2)  # each worker looks at the file once a second

        async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
            for _ in range(6):  # both workers, whichever answers
                assert (await client.get("/readyz")).status_code == 503
                refused = await client.post("/v1/chat/stream", json={"message": "hello?"})
                assert refused.status_code == 503
                assert refused.headers["retry-after"]
        workers_after = {child.pid for child in psutil.Process(server.proc.pid).children()}
        assert workers_after == workers_before
