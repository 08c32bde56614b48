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
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from uuid import UUID

import anyio
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.constants import TAG_HIDDEN, TAG_NOSTREAM
from langgraph.pregel import Pregel

from rillet_runtime.events import EventName, RunEvent, Usage, collecting_save_failures
from rillet_runtime.llm.errors import RunCancelled, classify_error
from rillet_runtime.metrics import (
    INTER_TOKEN_LATENCY,
    REQUESTS,
    TIME_TO_FIRST_TOKEN,
    TOKENS_STREAMED,
)
from rillet_runtime.settings import StreamingSettings

log = logging.getLogger(__name__)


class Slot(Protocol):
    """What admission gave the stream (`admission.StreamSlot`): released when the run ends."""

    def release(self) -> None: ...


@dataclass(frozen=True)
class RunRequest:
    graph: Pregel[Any, Any, Any, Any]
    graph_input: Any
    config: RunnableConfig
    thread_id: str
    run_id: str
    endpoint: str
    started_at: float = field(default_factory=time.perf_counter)
    # Set by whoever stops the run (a cancel request, another run interrupting the thread).
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    usage: Usage = field(default_factory=Usage)


# What the run task puts on the queue.
_Token = tuple[Literal["token"], str]
_Sources = tuple[Literal["sources"], list[dict[str, Any]]]
_End = tuple[Literal["end"], dict[str, Any]]
_Failed = tuple[Literal["failed"], BaseException]
_Item = _Token | _Sources | _End | _Failed


def _add_usage(total: dict[str, int], usage: Any) -> None:
    if usage:
        for ours, theirs in (
            ("prompt_tokens", "input_tokens"),
            ("completion_tokens", "output_tokens"),
        ):
            total[ours] = total.get(ours, 0) + int(usage.get(theirs, 0))


class _TokenSink(AsyncCallbackHandler):
    """Every chat model token of the run, from any node or subgraph, into the bounded queue.

    A callback rather than LangGraph's `messages` stream mode, because this one is awaited
    by the model's own streaming loop: when the queue is full the model stops reading its
    HTTP response, so a slow client slows its producer all the way to the provider.
    It has the methods of LangChain's streaming-handler protocol, which is what makes
    models stream instead of answering in one piece.
    """

    run_inline = True  # awaited in place: no task and no gather per token

    def __init__(self, queue: asyncio.Queue[_Item], usage: Usage) -> None:
        self.queue = queue
        self.usage = usage
        self.streamed_message_ids: set[str] = set()
        self._muted: set[UUID] = set()

    async def on_chat_model_start(
        self,
        serialized: Any,
        messages: Any,
        *,
        run_id: UUID,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if tags and (TAG_NOSTREAM in tags or TAG_HIDDEN in tags):
            self._muted.add(run_id)

    async def on_llm_new_token(
        self, token: Any, *, chunk: Any = None, run_id: UUID, **kwargs: Any
    ) -> None:
        if run_id in self._muted:
            return
        message = getattr(chunk, "message", None)
        if message is not None:
            _add_usage(self.usage.reported, message.usage_metadata)
            if message.id:
                self.streamed_message_ids.add(message.id)
        text = str(message.text) if message is not None else str(token or "")
        if text:
            self.usage.streamed_chunks += 1
            await self.queue.put(("token", text))

    async def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._muted.discard(run_id)

    def tap_output_aiter(self, run_id: UUID, output: AsyncIterator[Any]) -> AsyncIterator[Any]:
        return output

    def tap_output_iter(self, run_id: UUID, output: Iterator[Any]) -> Iterator[Any]:
        return output


def _unstreamed_answers(update: dict[str, Any], streamed: set[str]) -> list[str]:
    """Answers a node returned without streaming them (a cached answer, a non-streaming model)."""
    messages = update.get("messages", [])
    messages = messages if isinstance(messages, list) else [messages]
    return [
        str(m.text)
        for m in messages
        if isinstance(m, AIMessage) and m.id not in streamed and m.text
    ]


async def _run_graph(request: RunRequest, queue: asyncio.Queue[_Item]) -> None:
    sink = _TokenSink(queue, request.usage)
    config: RunnableConfig = {
        **request.config,
        "callbacks": [*(request.config.get("callbacks") or []), sink],  # type: ignore[misc]
    }
    finish_reason = "stop"
    try:
        with collecting_save_failures() as save_failures:
            async for _namespace, update_by_node in request.graph.astream(
                request.graph_input, config, stream_mode="updates", subgraphs=True
            ):
                if not isinstance(update_by_node, dict):
                    continue
                for node, update in update_by_node.items():
                    if node == "__interrupt__":
                        finish_reason = "interrupted"
                    elif isinstance(update, dict):
                        if update.get("sources"):
                            await queue.put(("sources", list(update["sources"])))
                        for text in _unstreamed_answers(update, sink.streamed_message_ids):
                            await queue.put(("token", text))
        if save_failures:
            log.warning("run %s: state not saved: %r", request.run_id, save_failures[0])
        end = {
            "finish_reason": finish_reason,
            "usage": sink.usage.reported,
            "state_saved": not save_failures,
        }
        await queue.put(("end", end))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("run %s failed", request.run_id)
        await queue.put(("failed", exc))


async def _stop_when_cancelled(
    cancel: asyncio.Event, task: asyncio.Task[None], queue: asyncio.Queue[_Item]
) -> None:
    await cancel.wait()
    if not task.done():
        task.cancel()
        await queue.put(("failed", RunCancelled()))


async def run_events(
    request: RunRequest,
    settings: StreamingSettings,
    max_seconds: float,
    slot: Slot,
) -> AsyncGenerator[RunEvent]:
    """Yield metadata, sources, coalesced tokens, then done or error; always ends."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=settings.queue_max_events)
    task = asyncio.create_task(_run_graph(request, queue), name=f"run-{request.run_id}")
    stopper = asyncio.create_task(_stop_when_cancelled(request.cancel, task, queue))
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
                yield event(
                    "error", {"code": "stream_timeout", "message": "the stream ran past its limit"}
                )
                return
            if queue.empty():
                try:
                    async with asyncio.timeout(wait_until - now):
                        item = await queue.get()
                except TimeoutError:
                    continue
            else:
                item = queue.get_nowait()  # the common case under load: no timer needed
            kind, value = item
            if isinstance(value, str):
                TOKENS_STREAMED.labels(request.endpoint).inc()
                buffer.append(value)
                buffered += len(value)
                if first_token_at is None or buffered >= settings.coalesce_max_chars:
                    yield token_event()
                elif len(buffer) == 1:
                    flush_at = loop.time() + max_wait
                continue
            if buffer:
                yield token_event()
            if kind == "sources" and isinstance(value, list):
                yield event("sources", {"sources": value})
            elif kind == "end" and isinstance(value, dict):
                outcome = "completed"
                ttft = None if first_token_at is None else first_token_at - request.started_at
                yield event(
                    "done",
                    {
                        **value,
                        "timings": {
                            "ttft_ms": None if ttft is None else round(ttft * 1000, 2),
                            "total_ms": round((time.perf_counter() - request.started_at) * 1000, 2),
                        },
                    },
                )
                return
            elif isinstance(value, BaseException):
                info = classify_error(value)
                outcome = "error"
                yield event(
                    "error",
                    {"code": info.code, "message": info.message, "retryable": info.retryable},
                )
                return
    finally:
        stopper.cancel()
        REQUESTS.labels(request.endpoint, outcome).inc()
        slot.release()
        if not task.done():
            task.cancel()
            # Shielded: the caller may itself be cancelled (client gone), and we still
            # want the run to unwind before the slot is reused.
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(settings.cancel_timeout_seconds),
            ):
                await asyncio.wait({task})
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("run %s ended with %r", request.run_id, task.exception())
