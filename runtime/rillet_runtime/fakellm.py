"""`rillet fake-llm`: a local server speaking OpenAI's and Anthropic's streaming wire formats,
and OpenAI's /v1/embeddings (vectors from the offline hashing embedder, so searches with
them find what a lexical model would).

Tests drive the real SDKs (openai, anthropic, langchain-openai, langchain-anthropic) and
the real runtime against it, and the benchmarks use it as a model with a known time to
first token and delay between tokens. It records every stream's outcome, so a test can
see from the provider's side that a client disconnect stopped the upstream request.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_WORDS = [
    "streams",
    "flow",
    "from",
    "the",
    "model",
    "through",
    "the",
    "graph",
    "to",
    "the",
    "client",
    "one",
    "token",
    "at",
    "a",
    "time",
    "while",
    "the",
    "service",
    "keeps",
    "every",
    "latency",
    "target",
    "it",
    "promised",
]


@dataclass(frozen=True)
class FakeLLMConfig:
    ttft_ms: float = 200
    token_delay_ms: float = 20
    answer_tokens: int = 64
    error_rate: float = 0.0
    seed: int = 0


def iter_answer_tokens(count: int) -> Iterator[str]:
    """Lazily, so an endless answer (benchmarks hold streams open) costs no memory."""
    for i in range(count):
        yield _WORDS[i % len(_WORDS)] if i == 0 else " " + _WORDS[i % len(_WORDS)]


def answer_tokens(count: int) -> list[str]:
    """The deterministic answer: tests compare what came through against this."""
    return list(iter_answer_tokens(count))


def _per_request(config: FakeLLMConfig, request: Request) -> tuple[FakeLLMConfig, int | None]:
    headers = request.headers
    overridden = replace(
        config,
        ttft_ms=float(headers.get("x-fake-ttft-ms", config.ttft_ms)),
        token_delay_ms=float(headers.get("x-fake-token-delay-ms", config.token_delay_ms)),
        answer_tokens=int(headers.get("x-fake-answer-tokens", config.answer_tokens)),
    )
    forced = headers.get("x-fake-error")
    return overridden, int(forced) if forced else None


class _Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.active = 0
        self.started = 0
        self.completed = 0
        self.cancelled = 0
        self.requests: deque[dict[str, Any]] = deque(maxlen=1000)
        self.last_request: dict[str, Any] = {}
        self.embedded_texts = 0

    def open(self, api: str) -> dict[str, Any]:
        record = {
            "id": uuid.uuid4().hex,
            "api": api,
            "started_at": time.time(),
            "ended_at": None,
            "tokens_sent": 0,
            "outcome": "running",
        }
        self.requests.append(record)
        self.active += 1
        self.started += 1
        return record

    def close(self, record: dict[str, Any], outcome: str) -> None:
        record["outcome"] = outcome
        record["ended_at"] = time.time()
        self.active -= 1
        if outcome == "completed":
            self.completed += 1
        elif outcome == "cancelled":
            self.cancelled += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "active_streams": self.active,
            "started": self.started,
            "completed": self.completed,
            "cancelled": self.cancelled,
            "requests": list(self.requests),
            "embedded_texts": self.embedded_texts,
        }


Frame = Callable[[int, str], bytes]


async def _paced(
    config: FakeLLMConfig,
    stats: _Stats,
    record: dict[str, Any],
    head: list[bytes],
    frame: Frame,
    tail: list[bytes],
) -> AsyncIterator[bytes]:
    """Tokens on a fixed schedule from the request's start, so delays never drift."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    outcome = "cancelled"
    try:
        for chunk in head:
            yield chunk
        for i, token in enumerate(iter_answer_tokens(config.answer_tokens)):
            due = start + (config.ttft_ms + i * config.token_delay_ms) / 1000
            await asyncio.sleep(max(0.0, due - loop.time()))
            yield frame(i, token)
            record["tokens_sent"] = i + 1
        for chunk in tail:
            yield chunk
        outcome = "completed"
    finally:
        stats.close(record, outcome)


def _sse(data: Any, event: str | None = None) -> bytes:
    prefix = f"event: {event}\n".encode() if event else b""
    return prefix + b"data: " + orjson.dumps(data) + b"\n\n"


def _openai_error(status: int) -> Response:
    kind = "rate_limit_error" if status == 429 else "server_error"
    body = {"error": {"message": f"injected {status}", "type": kind, "param": None, "code": None}}
    headers = {"retry-after": "1"} if status == 429 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _anthropic_error(status: int) -> Response:
    kind = "rate_limit_error" if status == 429 else "api_error"
    body = {"type": "error", "error": {"type": kind, "message": f"injected {status}"}}
    headers = {"retry-after": "1"} if status == 429 else None
    return JSONResponse(body, status_code=status, headers=headers)


def create_fake_llm_app(config: FakeLLMConfig) -> Starlette:
    stats = _Stats()
    rng = random.Random(config.seed)
    current = [config]  # `POST /_fake/config` swaps the defaults between benchmark phases

    async def prepare(
        request: Request, api: str
    ) -> tuple[dict[str, Any], FakeLLMConfig, int | None]:
        body: dict[str, Any] = orjson.loads(await request.body())
        stats.last_request = body
        effective, forced = _per_request(current[0], request)
        if forced is None and effective.error_rate and rng.random() < effective.error_rate:
            forced = 500
        if forced:
            stats.close(stats.open(api), "error")
        return body, effective, forced

    async def whole_answer(effective: FakeLLMConfig, api: str) -> str:
        """A non-streaming answer takes as long as the stream would have."""
        record = stats.open(api)
        await asyncio.sleep(
            (effective.ttft_ms + effective.answer_tokens * effective.token_delay_ms) / 1000
        )
        record["tokens_sent"] = effective.answer_tokens
        stats.close(record, "completed")
        return "".join(answer_tokens(effective.answer_tokens))

    async def openai_chat(request: Request) -> Response:
        body, effective, forced = await prepare(request, "openai")
        if forced:
            return _openai_error(forced)
        model = body.get("model", "fake")
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        usage = {
            "prompt_tokens": 10,
            "completion_tokens": effective.answer_tokens,
            "total_tokens": 10 + effective.answer_tokens,
        }

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }

        if not body.get("stream"):
            text = await whole_answer(effective, "openai")
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "logprobs": None,
                            "message": {
                                "role": "assistant",
                                "content": text,
                            },
                        }
                    ],
                    "usage": usage,
                }
            )
        tail = [_sse(chunk({}, "stop"))]
        if (body.get("stream_options") or {}).get("include_usage"):
            tail.append(_sse({**chunk({}, None), "choices": [], "usage": usage}))
        tail.append(b"data: [DONE]\n\n")
        head = [_sse(chunk({"role": "assistant", "content": ""}, None))]
        stream = _paced(
            effective,
            stats,
            stats.open("openai"),
            head,
            lambda _i, token: _sse(chunk({"content": token}, None)),
            tail,
        )
        return StreamingResponse(stream, media_type="text/event-stream")

    async def anthropic_messages(request: Request) -> Response:
        body, effective, forced = await prepare(request, "anthropic")
        if forced:
            return _anthropic_error(forced)
        model = body.get("model", "claude-fake")
        message_id = f"msg_{uuid.uuid4().hex}"
        if not body.get("stream"):
            text = await whole_answer(effective, "anthropic")
            return JSONResponse(
                {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": 10, "output_tokens": effective.answer_tokens},
                }
            )
        head = [
            _sse(
                {
                    "type": "message_start",
                    "message": {
                        "id": message_id,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": 10, "output_tokens": 1},
                    },
                },
                "message_start",
            ),
            _sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            ),
            _sse({"type": "ping"}, "ping"),
        ]
        tail = [
            _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            _sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": effective.answer_tokens},
                },
                "message_delta",
            ),
            _sse({"type": "message_stop"}, "message_stop"),
        ]

        def frame(_i: int, token: str) -> bytes:
            delta = {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": token},
            }
            return _sse(delta, "content_block_delta")

        stream = _paced(effective, stats, stats.open("anthropic"), head, frame, tail)
        return StreamingResponse(stream, media_type="text/event-stream")

    async def models(_: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": "fake", "object": "model", "created": 0, "owned_by": "rillet-fake-llm"}
                ],
            }
        )

    async def embeddings(request: Request) -> Response:
        """OpenAI's embeddings API; `authorization: Bearer bad` gets its 401."""
        from rillet_runtime.retrieval.embeddings import OfflineEmbedder

        if request.headers.get("authorization") == "Bearer bad":
            return JSONResponse(
                {
                    "error": {
                        "message": "Incorrect API key provided",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
                status_code=401,
            )
        body = orjson.loads(await request.body())
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        stats.embedded_texts += len(texts)
        vectors = OfflineEmbedder(body.get("dimensions") or 384).embed_sync(texts)
        return JSONResponse(
            {
                "object": "list",
                "model": body["model"],
                "data": [
                    {"object": "embedding", "index": i, "embedding": v.tolist()}
                    for i, v in enumerate(vectors)
                ],
                "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)},
            }
        )

    async def get_stats(_: Request) -> Response:
        return JSONResponse(stats.as_json())

    async def reset(_: Request) -> Response:
        stats.reset()
        return Response(status_code=204)

    async def set_config(request: Request) -> Response:
        current[0] = replace(current[0], **orjson.loads(await request.body()))
        return JSONResponse(asdict(current[0]))

    async def last_request(_: Request) -> Response:
        return JSONResponse(stats.last_request)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", openai_chat, methods=["POST"]),
            Route("/v1/messages", anthropic_messages, methods=["POST"]),
            Route("/v1/models", models),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/_fake/stats", get_stats),
            Route("/_fake/reset", reset, methods=["POST"]),
            Route("/_fake/last_request", last_request),
            Route("/_fake/config", set_config, methods=["POST"]),
        ]
    )


def serve_fake_llm(config: FakeLLMConfig, host: str = "127.0.0.1", port: int = 8400) -> None:
    uvicorn.run(
        create_fake_llm_app(config),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        backlog=4096,
    )
