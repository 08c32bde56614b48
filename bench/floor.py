"""The floor for Python SSE on this machine: a bare Starlette endpoint that relays the
model's tokens as SSE events, with no graph, no state and no SSE library. The streaming
benchmark serves it with the same gunicorn and uvicorn worker as Rillet.

    RILLET_FLOOR_MODEL_URL=http://127.0.0.1:8400/v1 gunicorn -k uvicorn_worker.UvicornWorker \\
        bench.floor:app
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

MODEL_URL = os.environ.get("RILLET_FLOOR_MODEL_URL", "http://127.0.0.1:8400/v1")


def serve_command(port: int) -> list[str]:
    """One gunicorn worker of uvicorn, as `rillet serve` runs; RILLET_FLOOR_MODEL_URL set."""
    return [
        *(sys.executable, "-m", "gunicorn", "--workers", "1"),
        *("--worker-class", "uvicorn_worker.UvicornWorker", "--bind", f"127.0.0.1:{port}"),
        "bench.floor:app",
    ]


client = httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=None))


async def stream(request: Request) -> StreamingResponse:
    question = (await request.json())["message"]
    body = {"model": "fake", "stream": True, "messages": [{"role": "user", "content": question}]}

    async def events() -> AsyncIterator[bytes]:
        async with client.stream("POST", f"{MODEL_URL}/chat/completions", json=body) as reply:
            async for line in reply.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                text = orjson.loads(line[6:])["choices"][0]["delta"].get("content")
                if text:
                    yield b"event: token\ndata: " + orjson.dumps({"text": text}) + b"\n\n"
        yield b"event: done\ndata: {}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def ready(request: Request) -> StreamingResponse:
    return StreamingResponse(iter([b"ok"]), media_type="text/plain")


app = Starlette(
    routes=[Route("/v1/chat/stream", stream, methods=["POST"]), Route("/readyz", ready)]
)
