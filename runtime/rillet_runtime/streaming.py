"""The streaming core: one graph run, turned into a bounded, coalesced stream of events.

The graph runs in its own task and feeds a bounded queue, so a slow client slows its own
producer instead of growing memory. The reader coalesces tokens by size and by time but
never holds back the first one. Closing the stream (client gone, deadline, server
shutdown) cancels the run task, which closes the model's HTTP stream with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel

from rillet_runtime.llm.errors import classify_error
from rillet_runtime.metrics import (
    ACTIVE_STREAMS,
    INTER_TOKEN_LATENCY,
    REQUESTS,
    TIME_TO_FIRST_TOKEN,
    TOKENS_STREAMED,
)
from rillet_runtime.settings import StreamingSettings

log = logging.getLogger(__name__)

EventName = Literal["metadata", "sources", "token", "done", "error"]


@dataclass(frozen=True, slots=True)
class RunEvent:
    id: int
    event: EventName
    data: dict[str, Any]


@dataclass
class StreamSlot:
    """A stream's share of the worker's capacity; released exactly once."""

    release_fn: Callable[[], None]
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.release_fn()
            ACTIVE_STREAMS.dec()


@dataclass(frozen=True)
class RunRequest:
    graph: Pregel[Any, Any, Any, Any]
    graph_input: Any
    config: RunnableConfig
    thread_id: str
    run_id: str
    endpoint: str
    started_at: float = field(default_factory=time.perf_counter)


# What the run task puts on the queue.
_Token = tuple[Literal["token"], str]
_Sources = tuple[Literal["sources"], list[dict[str, Any]]]
_End = tuple[Literal["end"], dict[str, Any]]
_Failed = tuple[Literal["failed"], BaseException]
_Item = _Token | _Sources | _End | _Failed


def _add_usage(total: dict[str, int], usage: Any) -> None:
    if usage:
        for ours, theirs in (("prompt_tokens", "input_tokens"), ("completion_tokens", "output_tokens")):
            total[ours] = total.get(ours, 0) + int(usage.get(theirs, 0))


async def _run_graph(request: RunRequest, queue: asyncio.Queue[_Item]) -> None:
    usage: dict[str, int] = {}
    finish_reason = "stop"
    try:
        async for _namespace, mode, payload in request.graph.astream(
            request.graph_input,
            request.config,
            stream_mode=["messages", "updates"],
            subgraphs=True,
        ):
            if mode == "messages":
                message, _meta = payload
                if isinstance(message, AIMessageChunk | AIMessage):
                    _add_usage(usage, message.usage_metadata)
                    text = str(message.text)
                    if text:
                        await queue.put(("token", text))
            elif mode == "updates":
                for node, update in payload.items():
                    if node == "__interrupt__":
                        finish_reason = "interrupted"
                    elif isinstance(update, dict) and update.get("sources"):
                        await queue.put(("sources", list(update["sources"])))
        await queue.put(("end", {"finish_reason": finish_reason, "usage": usage}))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("run %s failed", request.run_id)
        await queue.put(("failed", exc))


async def run_events(
    request: RunRequest,
    settings: StreamingSettings,
    max_seconds: float,
    slot: StreamSlot,
) -> AsyncIterator[RunEvent]:
    """Yield metadata, sources, coalesced tokens, then done or error; always ends."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=settings.queue_max_events)
    task = asyncio.create_task(_run_graph(request, queue), name=f"run-{request.run_id}")
    deadline = loop.time() + max_seconds
    max_wait = settings.coalesce_max_ms / 1000
    seq = 0
    outcome = "client_disconnected"
    first_token_at: float | None = None
    last_token_at = 0.0
    buffer: list[str] = []
    buffered = 0
    flush_at = 0.0

    def event(name: EventName, data: dict[str, Any]) -> RunEvent:
        nonlocal seq
        seq += 1
        return RunEvent(seq, name, data)

    def token_event() -> RunEvent:
        nonlocal buffered, first_token_at, last_token_at
        now = time.perf_counter()
        if first_token_at is None:
            first_token_at = now
            TIME_TO_FIRST_TOKEN.labels(request.endpoint).observe(now - request.started_at)
        else:
            INTER_TOKEN_LATENCY.labels(request.endpoint).observe(now - last_token_at)
        last_token_at = now
        text = "".join(buffer)
        buffer.clear()
        buffered = 0
        return event("token", {"text": text})

    try:
        yield event("metadata", {"thread_id": request.thread_id, "run_id": request.run_id})
        while True:
            now = loop.time()
            wait_until = min(flush_at, deadline) if buffer else deadline
            if wait_until <= now:
                if buffer and flush_at <= now:
                    yield token_event()
                    continue
                outcome = "timeout"
                yield event("error", {"code": "stream_timeout", "message": "the stream ran past its limit"})
                return
            try:
                async with asyncio.timeout(wait_until - now):
                    item = await queue.get()
            except TimeoutError:
                continue
            kind = item[0]
            if kind == "token":
                TOKENS_STREAMED.labels(request.endpoint).inc()
                buffer.append(item[1])
                buffered += len(item[1])
                if first_token_at is None or buffered >= settings.coalesce_max_chars:
                    yield token_event()
                elif len(buffer) == 1:
                    flush_at = loop.time() + max_wait
                continue
            if buffer:
                yield token_event()
            if kind == "sources":
                yield event("sources", {"sources": item[1]})
            elif kind == "end":
                outcome = "completed"
                ttft = None if first_token_at is None else first_token_at - request.started_at
                yield event(
                    "done",
                    {
                        **item[1],
                        "timings": {
                            "ttft_ms": None if ttft is None else round(ttft * 1000, 2),
                            "total_ms": round((time.perf_counter() - request.started_at) * 1000, 2),
                        },
                    },
                )
                return
            else:
                info = classify_error(item[1])
                outcome = "error"
                yield event(
                    "error",
                    {"code": info.code, "message": info.message, "retryable": info.retryable},
                )
                return
    finally:
        REQUESTS.labels(request.endpoint, outcome).inc()
        slot.release()
        if not task.done():
            task.cancel()
            # Shielded: the caller may itself be cancelled (client gone), and we still
            # want the run to unwind before the slot is reused.
            with anyio.CancelScope(shield=True), anyio.move_on_after(settings.cancel_timeout_seconds):
                await asyncio.wait({task})
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("run %s ended with %r", request.run_id, task.exception())
