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
from typing import Any, Literal, Protocol, cast
from uuid import UUID

import anyio
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.constants import TAG_HIDDEN, TAG_NOSTREAM
from langgraph.pregel import Pregel
from langgraph.types import StreamMode

from rillet_runtime.events import RunEvent, Usage, collecting_save_failures
from rillet_runtime.llm.errors import RunCancelled, classify_error
from rillet_runtime.metrics import (
    INTER_TOKEN_LATENCY,
    REQUESTS,
    STATE_ERRORS,
    TIME_TO_FIRST_TOKEN,
    TOKENS_STREAMED,
)
from rillet_runtime.settings import StreamingSettings

log = logging.getLogger(__name__)


class Slot(Protocol):
    """What admission gave the stream (`admission.StreamSlot`): released when the run ends."""

    def release(self) -> None: ...


@dataclass(slots=True)
class ModelCall:
    """One chat model call of the run, for a dialect that names where tokens came from."""

    metadata: dict[str, Any]
    namespace: tuple[str, ...]
    message_id: str | None = None


# What the run task puts on the queue: tokens (with their model call when the dialect asks),
# other events as the dialect names them, the end, or the failure.
_Token = tuple[Literal["token"], str, ModelCall | None]
_Event = tuple[Literal["event"], str, Any]
_End = tuple[Literal["end"], dict[str, Any], None]
_Failed = tuple[Literal["failed"], BaseException, None]
_Item = _Token | _Event | _End | _Failed


class Dialect(Protocol):
    """How one API writes a run: what it asks the graph to stream and how each piece
    becomes an event. One instance per run (it may remember what it saw)."""

    stream_mode: list[StreamMode]
    streams_tokens: bool

    def model_call(
        self, metadata: dict[str, Any] | None, tags: list[str] | None, name: str | None
    ) -> ModelCall | None:
        """A chat model call starts; what its tokens carry (and coalesce by), if anything."""
        ...

    def start(self, request: RunRequest) -> tuple[str, Any]: ...

    def output(
        self, namespace: tuple[str, ...], mode: str, chunk: Any, seen: set[str]
    ) -> list[_Token | _Event]:
        """What the graph streamed (`astream(..., subgraphs=True)`), as queue items; `seen`:
        the ids of messages the client has (streamed, or a node's input)."""
        ...

    def token(self, text: str, call: ModelCall | None) -> tuple[str, Any]: ...

    def chunk(self, message: Any, call: ModelCall) -> tuple[str, Any] | None:
        """A streamed chunk that is more than text (a tool call); None: not written."""
        ...

    def end(
        self, outcome: dict[str, Any], timings: dict[str, float | None]
    ) -> list[tuple[str, Any]]: ...

    def error(self, code: str, message: str, retryable: bool) -> tuple[str, Any]: ...


@dataclass(frozen=True)
class RunRequest:
    graph: Pregel[Any, Any, Any, Any]
    graph_input: Any
    config: RunnableConfig
    thread_id: str
    run_id: str
    endpoint: str
    dialect: Dialect = field(default_factory=lambda: NativeDialect())
    # interrupt_before/after and the like, passed to `astream` as they are.
    options: dict[str, Any] = field(default_factory=dict)
    started_at: float = field(default_factory=time.perf_counter)
    # Set by whoever stops the run (a cancel request, another run interrupting the thread).
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    usage: Usage = field(default_factory=Usage)


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

    def __init__(self, queue: asyncio.Queue[_Item], usage: Usage, dialect: Dialect) -> None:
        self.queue = queue
        self.usage = usage
        self.dialect = dialect
        self.seen_message_ids: set[str] = set()
        self._muted: set[UUID] = set()
        self._calls: dict[UUID, ModelCall] = {}

    async def on_chat_model_start(
        self,
        serialized: Any,
        messages: Any,
        *,
        run_id: UUID,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if tags and (TAG_NOSTREAM in tags or TAG_HIDDEN in tags):
            self._muted.add(run_id)
        elif (call := self.dialect.model_call(metadata, tags, kwargs.get("name"))) is not None:
            self._calls[run_id] = call

    async def on_chain_start(
        self,
        serialized: Any,
        inputs: Any,
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """A node's input messages are the client's already: never new answers."""
        if metadata and kwargs.get("name") == metadata.get("langgraph_node"):
            messages = inputs.get("messages") if isinstance(inputs, dict) else None
            for message in messages if isinstance(messages, list) else ():
                if isinstance(message, BaseMessage) and message.id:
                    self.seen_message_ids.add(message.id)

    async def on_llm_new_token(
        self, token: Any, *, chunk: Any = None, run_id: UUID, **kwargs: Any
    ) -> None:
        if run_id in self._muted:
            return
        message = getattr(chunk, "message", None)
        call = self._calls.get(run_id)
        if message is not None:
            _add_usage(self.usage.reported, message.usage_metadata)
            if message.id:
                self.seen_message_ids.add(message.id)
                if call is not None:
                    call.message_id = message.id
            if call is not None and getattr(message, "tool_call_chunks", None):
                if (event := self.dialect.chunk(message, call)) is not None:
                    await self.queue.put(("event", *event))
                return
        text = str(message.text) if message is not None else str(token or "")
        if text:
            self.usage.streamed_chunks += 1
            if self.dialect.streams_tokens:
                await self.queue.put(("token", text, call))

    async def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._muted.discard(run_id)
        self._calls.pop(run_id, None)

    def tap_output_aiter(self, run_id: UUID, output: AsyncIterator[Any]) -> AsyncIterator[Any]:
        return output

    def tap_output_iter(self, run_id: UUID, output: Iterator[Any]) -> Iterator[Any]:
        return output


def new_answers(update: dict[str, Any], seen: set[str]) -> list[AIMessage]:
    """Answers in a node's update the client has not seen (a cached answer, a non-streaming
    model's), now marked seen: not the streamed ones, not the node's input (an update from
    a subgraph carries its whole message list), and each only once."""
    messages = update.get("messages", [])
    messages = messages if isinstance(messages, list) else [messages]
    new = [m for m in messages if isinstance(m, AIMessage) and m.id not in seen and m.text]
    seen.update(m.id for m in new if m.id)
    return new


class NativeDialect:
    """The native API's events: metadata, sources, token..., then done or error."""

    streams_tokens = True

    def __init__(self) -> None:
        self.stream_mode: list[StreamMode] = ["updates"]
        self.finish_reason = "stop"

    def model_call(
        self, metadata: dict[str, Any] | None, tags: list[str] | None, name: str | None
    ) -> ModelCall | None:
        return None  # every token is plain text, coalesced across calls

    def start(self, request: RunRequest) -> tuple[str, Any]:
        return "metadata", {"thread_id": request.thread_id, "run_id": request.run_id}

    def output(
        self, namespace: tuple[str, ...], mode: str, chunk: Any, seen: set[str]
    ) -> list[_Token | _Event]:
        items: list[_Token | _Event] = []
        for node, update in chunk.items() if isinstance(chunk, dict) else ():
            if node == "__interrupt__":
                self.finish_reason = "interrupted"
            elif isinstance(update, dict):
                if update.get("sources"):
                    items.append(("event", "sources", {"sources": list(update["sources"])}))
                items += [("token", str(m.text), None) for m in new_answers(update, seen)]
        return items

    def token(self, text: str, call: ModelCall | None) -> tuple[str, Any]:
        return "token", {"text": text}

    def chunk(self, message: Any, call: ModelCall) -> tuple[str, Any] | None:
        return None

    def end(
        self, outcome: dict[str, Any], timings: dict[str, float | None]
    ) -> list[tuple[str, Any]]:
        return [("done", {"finish_reason": self.finish_reason, **outcome, "timings": timings})]

    def error(self, code: str, message: str, retryable: bool) -> tuple[str, Any]:
        return "error", {"code": code, "message": message, "retryable": retryable}


async def _run_graph(request: RunRequest, queue: asyncio.Queue[_Item]) -> None:
    dialect = request.dialect
    sink = _TokenSink(queue, request.usage, dialect)
    config: RunnableConfig = {
        **request.config,
        "callbacks": [*(request.config.get("callbacks") or []), sink],  # type: ignore[misc]
    }
    try:
        with collecting_save_failures() as save_failures:
            async for part in request.graph.astream(
                request.graph_input,
                config,
                stream_mode=dialect.stream_mode,
                subgraphs=True,
                **request.options,
            ):
                namespace, mode, chunk = cast(tuple[tuple[str, ...], str, Any], part)
                for item in dialect.output(namespace, mode, chunk, sink.seen_message_ids):
                    await queue.put(item)
        outcome: dict[str, Any] = {"usage": sink.usage.reported, "state_saved": True}
        if save_failures:
            outcome |= await _unsaved(request, save_failures[0])
        await queue.put(("end", outcome, None))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("run %s failed", request.run_id)
        await queue.put(("failed", exc, None))


async def _unsaved(request: RunRequest, failure: BaseException) -> dict[str, Any]:
    """A save of the run failed (Redis unreachable, or full): the answer stands, but the turn
    is taken back out of the thread, so it holds the turn whole or not at all. What the run
    did save goes (when Redis lets it; deletes are allowed even at its memory limit), and
    the end says why: `state_saved_error` is `state_full`, `state_unavailable` or
    `thread_too_large`."""
    code = classify_error(failure).code
    log.warning("run %s: state not saved (%s): %r", request.run_id, code, failure)
    STATE_ERRORS.labels(code, "checkpoint_save").inc()
    checkpointer = request.graph.checkpointer
    if isinstance(checkpointer, BaseCheckpointSaver):
        try:
            await checkpointer.adelete_for_runs([request.run_id])
        except Exception as exc:  # unreachable still: the saves before the failure stay
            log.warning("run %s: what it saved could not be removed: %r", request.run_id, exc)
    return {"state_saved": False, "state_saved_error": code}


async def _stop_when_cancelled(
    cancel: asyncio.Event, task: asyncio.Task[None], queue: asyncio.Queue[_Item]
) -> None:
    await cancel.wait()
    if not task.done():
        task.cancel()
        await queue.put(("failed", RunCancelled(), None))


async def run_events(
    request: RunRequest,
    settings: StreamingSettings,
    max_seconds: float,
    slot: Slot,
) -> AsyncGenerator[RunEvent]:
    """Yield the dialect's events: its start, coalesced tokens and the rest as the graph
    streams them, then its end or an error; always ends."""
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
    dialect = request.dialect
    buffer: list[str] = []
    buffered = 0
    buffered_call: ModelCall | None = None
    flush_at = 0.0

    def event(name: str, data: Any) -> RunEvent:
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
        return event(*dialect.token(text, buffered_call))

    try:
        yield event(*dialect.start(request))
        while True:
            now = loop.time()
            wait_until = min(flush_at, deadline) if buffer else deadline
            if wait_until <= now:
                if buffer and flush_at <= now:
                    yield token_event()
                    continue
                outcome = "timeout"
                yield event(*dialect.error("stream_timeout", "the stream ran past its limit", True))
                return
            if queue.empty():
                try:
                    async with asyncio.timeout(wait_until - now):
                        item = await queue.get()
                except TimeoutError:
                    continue
            else:
                item = queue.get_nowait()  # the common case under load: no timer needed
            if item[0] == "token":
                _, text, call = item
                TOKENS_STREAMED.labels(request.endpoint).inc()
                if buffer and call is not buffered_call:  # another model call: its own event
                    yield token_event()
                buffered_call = call
                buffer.append(text)
                buffered += len(text)
                if first_token_at is None or buffered >= settings.coalesce_max_chars:
                    yield token_event()
                elif len(buffer) == 1:
                    flush_at = loop.time() + max_wait
                continue
            if buffer:
                yield token_event()
            if item[0] == "event":
                yield event(item[1], item[2])
            elif item[0] == "end":
                outcome = "completed"
                ttft = None if first_token_at is None else first_token_at - request.started_at
                timings = {
                    "ttft_ms": None if ttft is None else round(ttft * 1000, 2),
                    "total_ms": round((time.perf_counter() - request.started_at) * 1000, 2),
                }
                for name, data in dialect.end(item[1], timings):
                    yield event(name, data)
                return
            else:
                info = classify_error(item[1])
                if info.code.startswith("state_"):
                    STATE_ERRORS.labels(info.code, "run").inc()
                outcome = "error"
                yield event(*dialect.error(info.code, info.message, info.retryable))
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
