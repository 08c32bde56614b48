"""A LangGraph run from its request to its record: what it runs (input or command, config,
stream modes), on which thread, admitted by the native machinery (`deps.start_run`), and
its record kept true until the client sees it end."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import anyio
import redis
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from rillet_runtime.admission import StreamSlot
from rillet_runtime.api.caps import check_input
from rillet_runtime.api.deps import StartedRun, new_run, start_run, thread_key
from rillet_runtime.api.errors import ApiError
from rillet_runtime.api.langgraph.assistants import graph_id_for
from rillet_runtime.api.langgraph.models import RunCreate
from rillet_runtime.api.langgraph.shapes import assistant_id
from rillet_runtime.api.langgraph.stream import LangGraphDialect
from rillet_runtime.api.langgraph.threads import own_thread, require_checkpoint, thread_not_found
from rillet_runtime.app_state import Runtime
from rillet_runtime.auth import Principal
from rillet_runtime.events import RunEvent
from rillet_runtime.state.threads import RunRecord, RunStatus, ThreadRecord, now_iso

_RUN_STATUS_BY_CODE: dict[str, RunStatus] = {
    "stream_timeout": "timeout",
    "run_cancelled": "interrupted",
}
# configurable keys Rillet sets itself: a client's are ignored.
_RESERVED = frozenset(
    {"thread_id", "checkpoint_id", "checkpoint_ns", "checkpoint_map", "principal", "run_id"}
)
_CONFIG_KEYS = ("tags", "metadata", "recursion_limit", "run_name", "max_concurrency")


def _input_texts(graph_input: Any) -> list[str]:
    messages = graph_input.get("messages", []) if isinstance(graph_input, dict) else []
    texts = []
    for message in messages if isinstance(messages, list) else [messages]:
        content = message.get("content") if isinstance(message, dict) else message
        texts.append(content if isinstance(content, str) else str(content or ""))
    return texts


def _graph_input(body: RunCreate, runtime: Runtime) -> Any:
    limits = runtime.settings.limits
    if body.command is not None:
        command = body.command
        check_input(_input_texts(command.update), limits, "command.update.messages")
        return Command(resume=command.resume, update=command.update, goto=command.goto or ())
    check_input(_input_texts(body.input), limits, "input.messages")
    return body.input


def _config(body: RunCreate, graph_id: str) -> RunnableConfig:
    given = body.config or {}
    configurable = {
        key: value
        for key, value in (given.get("configurable") or {}).items()
        if key not in _RESERVED
    }
    checkpoint = {**(body.checkpoint or {})}
    if body.checkpoint_id:
        checkpoint["checkpoint_id"] = body.checkpoint_id
    configurable.update(
        {key: checkpoint[key] for key in ("checkpoint_id", "checkpoint_ns") if key in checkpoint}
    )
    configurable.update(graph_id=graph_id, assistant_id=assistant_id(graph_id))
    config: dict[str, Any] = {key: given[key] for key in _CONFIG_KEYS if key in given}
    config["metadata"] = {**config.get("metadata", {}), **(body.metadata or {})}
    config["configurable"] = configurable
    return config  # type: ignore[return-value]


def _options(body: RunCreate) -> dict[str, Any]:
    options = {
        "interrupt_before": body.interrupt_before,
        "interrupt_after": body.interrupt_after,
        "context": body.context or None,
    }
    return {key: value for key, value in options.items() if value is not None}


async def _thread_for(
    runtime: Runtime, principal: Principal, thread_id: str, body: RunCreate
) -> ThreadRecord:
    """The run's thread: the caller's, or a new one when `if_not_exists` is `create`."""
    try:
        record, _ = await own_thread(runtime, principal, thread_id)
    except ApiError:
        if body.if_not_exists == "reject":
            raise thread_not_found(thread_id) from None
        record = ThreadRecord(thread_id, metadata=dict(body.metadata or {}))
    return record


class Prepared:
    """A run with everything decided but not yet admitted."""

    def __init__(
        self,
        runtime: Runtime,
        principal: Principal,
        body: RunCreate,
        thread_id: str | None,
        endpoint: str,
        thread: ThreadRecord | None,
    ) -> None:
        graph_id = graph_id_for(runtime, body.assistant_id)
        self.body = body
        self.stateless = thread_id is None
        self.keep_thread = not self.stateless or body.on_completion == "keep"
        self.thread_id = thread_id or str(uuid.uuid4())
        self.thread = thread or ThreadRecord(self.thread_id, metadata=dict(body.metadata or {}))
        self.thread.metadata.update(graph_id=graph_id, assistant_id=assistant_id(graph_id))
        dialect = LangGraphDialect(body.stream_mode, body.stream_subgraphs, self.thread_id)
        self.run = new_run(
            runtime,
            principal,
            _graph_input(body, runtime),
            self.thread_id,
            endpoint,
            dialect=dialect,
            config=_config(body, graph_id),
            options=_options(body),
        )
        self.record = RunRecord(
            self.run.run_id,
            self.thread_id,
            assistant_id(graph_id),
            metadata={**(body.metadata or {}), "graph_id": graph_id},
            multitask_strategy=body.multitask_strategy,
            kwargs={
                "input": body.input,
                "command": body.command and body.command.model_dump(),
                "stream_mode": body.stream_mode,
                "subgraphs": body.stream_subgraphs,
                "resumable": body.stream_resumable,
                "temporary": not self.keep_thread,
            },
        )


async def prepare(
    runtime: Runtime,
    principal: Principal,
    body: RunCreate,
    thread_id: str | None,
    endpoint: str,
) -> Prepared:
    if thread_id is None and body.command is not None and body.command.resume is not None:
        raise ApiError(
            422, "invalid_request", "command.resume needs a thread: resume on /threads/{id}/runs"
        )
    thread = None if thread_id is None else await _thread_for(runtime, principal, thread_id, body)
    if thread_id is not None:  # a run from a checkpoint starts from it, not from empty state
        checkpoint = {**(body.checkpoint or {})}
        if body.checkpoint_id:
            checkpoint["checkpoint_id"] = body.checkpoint_id
        await require_checkpoint(runtime, principal, thread_id, checkpoint)
    return Prepared(runtime, principal, body, thread_id, endpoint, thread)


async def start(
    runtime: Runtime,
    principal: Principal,
    prepared: Prepared,
    client_gone: Callable[[], Awaitable[bool]],
    slot: StreamSlot | None = None,
) -> StartedRun:
    """Admit the run (see `deps.start_run`), record it as running, and wrap its events so
    its record follows it to the end."""
    body = prepared.body
    started = await start_run(
        runtime,
        client_gone,
        principal,
        prepared.run,
        strategy=body.multitask_strategy,
        throwaway_thread=prepared.stateless,
        slot=slot,
    )
    try:
        if started.guard.interrupted is not None and body.multitask_strategy == "rollback":
            await runtime.threads.delete_run(
                principal.key, prepared.thread_id, started.guard.interrupted
            )
        prepared.record.status, prepared.record.updated_at = "running", now_iso()
        if prepared.keep_thread:
            # As it is now (a queued run waited): what the run adds is which graph ran it.
            thread = await runtime.threads.get_thread(principal.key, prepared.thread_id)
            if thread is None:
                thread = prepared.thread
            else:
                thread.metadata.update(
                    {key: prepared.thread.metadata[key] for key in ("graph_id", "assistant_id")}
                )
            thread.updated_at = prepared.record.updated_at
            await runtime.threads.put_thread(principal.key, thread)
            await runtime.threads.put_run(principal.key, prepared.record)
    except BaseException:
        await started.close()
        raise
    started.events = _recorded(started.events, runtime, principal, prepared)
    return started


async def finish(
    runtime: Runtime,
    principal: Principal,
    prepared: Prepared,
    status: RunStatus,
    error: dict[str, Any] | None,
) -> None:
    """The run's record, and its thread's as it is now (metadata patched during the run
    stays): a failure is the thread's error; any other end clears it (a cancel, a
    timeout and a client that left are not the graph failing)."""
    record, thread_id = prepared.record, prepared.thread_id
    record.status, record.updated_at = status, now_iso()
    with contextlib.suppress(redis.RedisError):  # the run is over either way
        if not prepared.keep_thread:
            await runtime.checkpointer.adelete_thread(thread_key(principal, thread_id))
            return
        await runtime.threads.put_run(principal.key, record)
        thread = await runtime.threads.get_thread(principal.key, thread_id) or prepared.thread
        thread.error = error if status == "error" else None
        thread.updated_at = record.updated_at
        await runtime.threads.put_thread(principal.key, thread)


async def _recorded(
    events: AsyncGenerator[RunEvent],
    runtime: Runtime,
    principal: Principal,
    prepared: Prepared,
) -> AsyncGenerator[RunEvent]:
    """The run's events; its record is final before the last of them goes out."""
    finished = False
    try:
        async with contextlib.aclosing(events):
            async for event in events:
                if event.event == "end":
                    await finish(runtime, principal, prepared, "success", None)
                    finished = True
                elif event.event == "error":
                    code = event.data["error"]
                    status = _RUN_STATUS_BY_CODE.get(code, "error")
                    failure = {"error": code, "message": event.data["message"]}
                    await finish(runtime, principal, prepared, status, failure)
                    finished = True
                yield event
    finally:
        if not finished:  # stopped before its end: the client left, or the worker stops
            with anyio.CancelScope(shield=True):
                await finish(runtime, principal, prepared, "interrupted", None)


def response_headers(thread_id: str | None, run_id: str, tail: str | None) -> dict[str, str]:
    if thread_id is None:
        return {"Content-Location": f"/runs/{run_id}"}
    run_path = f"/threads/{thread_id}/runs/{run_id}"
    return {"Content-Location": run_path} | ({"Location": run_path + tail} if tail else {})


def shown_thread(prepared: Prepared) -> str | None:
    """A threadless run's thread is not the client's to find, unless it is kept."""
    return prepared.thread_id if prepared.keep_thread else None


def grace_for(runtime: Runtime, body: RunCreate) -> float | None:
    """How long the run outlives its client: to its end (`continue`), a resume's grace
    (`stream_resumable`), or not at all."""
    if body.on_disconnect == "continue":
        return None
    return runtime.settings.streaming.resume_grace_seconds if body.stream_resumable else 0.0


def publish(
    runtime: Runtime, started: StartedRun, grace: float | None
) -> tuple[asyncio.Queue[RunEvent | None], Callable[[], None]]:
    origin: asyncio.Queue[RunEvent | None] = asyncio.Queue(
        runtime.settings.streaming.queue_max_events
    )
    detach = runtime.run_log.publish(started.request.run_id, started.events, origin, grace)
    return origin, detach
