"""The native chat API: `POST /v1/chat/stream` (SSE), `POST /v1/chat`, threads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse

from rillet_runtime.api.caps import check_input
from rillet_runtime.api.deps import (
    PrincipalDep,
    RuntimeDep,
    StartedRun,
    collect,
    get_principal,
    new_run,
    remove_thread,
    start_run,
    thread_key,
)
from rillet_runtime.api.errors import ERROR_RESPONSES, ApiError, require_json
from rillet_runtime.api.sse import ClosingEventSourceResponse, closer, from_origin, sse_events
from rillet_runtime.app_state import Runtime
from rillet_runtime.auth import Principal
from rillet_runtime.events import CheckpointCorrupt, RunEvent
from rillet_runtime.run_guard import MultitaskStrategy

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/v1", tags=["chat"], dependencies=[Depends(get_principal)], responses=ERROR_RESPONSES
)

THREAD_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
ThreadIdPath = Annotated[str, Path(pattern=THREAD_ID_PATTERN)]


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=32_000, description="the user's message")
    thread_id: str | None = Field(
        None,
        pattern=THREAD_ID_PATTERN,
        description="continue this thread of yours (ids are per principal); omitted: a new one",
    )
    multitask_strategy: MultitaskStrategy = Field(
        "reject",
        description="when the thread has a run in progress: reject (409 thread_busy), "
        "enqueue (wait for it), interrupt (cancel it, then run), rollback (cancel it and "
        "remove what it saved, then run)",
    )


class ChatAnswer(BaseModel):
    thread_id: str
    run_id: str
    answer: str
    sources: list[dict[str, Any]]
    finish_reason: str
    usage: dict[str, int]
    timings: dict[str, float | None]
    state_saved: bool = Field(
        description="false when the thread store failed during the run: the answer is "
        "whole, but this turn is not in the thread"
    )
    state_saved_error: str | None = Field(
        None, description="why it was not saved: state_full, state_unavailable or thread_too_large"
    )


class ThreadMessage(BaseModel):
    id: str | None
    role: str
    content: str


class ThreadView(BaseModel):
    thread_id: str
    messages: list[ThreadMessage]
    sources: list[dict[str, Any]]
    updated_at: str | None


async def _start(
    runtime: Runtime, request: Request, principal: Principal, body: ChatRequest, endpoint: str
) -> StartedRun:
    check_input([body.message], runtime.settings.limits, "message")
    graph_input = {"messages": [HumanMessage(content=body.message)]}
    thread_id = body.thread_id or uuid.uuid4().hex
    # A turn is written once, when the run ends: a worker or a Redis that dies mid-run
    # leaves the thread at its last whole turn, never a question without its answer.
    options = {"durability": "exit"}
    run = new_run(runtime, principal, graph_input, thread_id, endpoint, options=options)
    started = await start_run(
        runtime, request.is_disconnected, principal, run, strategy=body.multitask_strategy
    )
    started.events = _whole_turns(started.events, runtime, run.run_id)
    return started


# Errors after which the run's task may still be unwinding: its thread is left as it is.
_STOPPED = frozenset({"run_cancelled", "stream_timeout"})


async def _whole_turns(
    events: AsyncGenerator[RunEvent], runtime: Runtime, run_id: str
) -> AsyncGenerator[RunEvent]:
    """A run that failed (the model, the state store) takes back what it saved of its turn
    before its client hears of it, while it still holds the thread: a retry of the same
    question finds the thread as it was, not the question twice."""
    async with contextlib.aclosing(events):
        async for event in events:
            if event.event == "error" and event.data["code"] not in _STOPPED:
                try:
                    await runtime.checkpointer.adelete_for_runs([run_id])
                except Exception as exc:  # Redis unreachable: its question may stay behind
                    log.warning("run %s: its failed turn could not be taken back: %r", run_id, exc)
            yield event


@router.post(
    "/chat/stream",
    dependencies=[Depends(require_json)],
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat_stream(
    body: ChatRequest, request: Request, runtime: RuntimeDep, principal: PrincipalDep
) -> EventSourceResponse:
    """Stream an answer as SSE events: metadata, sources, token..., then done or error."""
    started = await _start(runtime, request, principal, body, "chat_stream")
    heartbeat = runtime.settings.streaming.heartbeat_seconds
    if not runtime.resumable:
        return ClosingEventSourceResponse(sse_events(started.events), started.close, heartbeat)
    # Resumable: the run belongs to the worker, not to this connection.
    origin: asyncio.Queue[RunEvent | None] = asyncio.Queue(
        runtime.settings.streaming.queue_max_events
    )
    grace = runtime.settings.streaming.resume_grace_seconds
    detach = runtime.run_log.publish(started.request.run_id, started.events, origin, grace)
    return ClosingEventSourceResponse(from_origin(origin, detach), closer(detach), heartbeat)


@router.post("/chat", dependencies=[Depends(require_json)])
async def chat(
    body: ChatRequest, request: Request, runtime: RuntimeDep, principal: PrincipalDep
) -> ChatAnswer:
    """The same run as /v1/chat/stream, answered as one JSON document."""
    started = await _start(runtime, request, principal, body, "chat")
    try:
        collected = await collect(started.events)
    finally:
        await started.close()
    return ChatAnswer(
        thread_id=collected.thread_id,
        run_id=collected.run_id,
        answer=collected.answer,
        sources=collected.sources,
        finish_reason=collected.done.get("finish_reason", "stop"),
        usage=collected.done.get("usage", {}),
        timings=collected.done.get("timings", {}),
        state_saved=collected.done.get("state_saved", True),
        state_saved_error=collected.done.get("state_saved_error"),
    )


def _thread_message(message: BaseMessage) -> ThreadMessage:
    role = {"human": "user", "ai": "assistant"}.get(message.type, message.type)
    return ThreadMessage(id=message.id, role=role, content=str(message.text))


async def _existing_thread_state(runtime: Runtime, principal: Principal, thread_id: str) -> Any:
    """The caller's thread; another principal's thread of the same id is not theirs: 404."""
    config: RunnableConfig = {"configurable": {"thread_id": thread_key(principal, thread_id)}}
    state = await runtime.graph.aget_state(config)
    if state.created_at is None:
        raise ApiError(
            404, "thread_not_found", f"thread {thread_id!r} does not exist", param="thread_id"
        )
    return state


@router.get("/threads/{thread_id}")
async def get_thread(
    thread_id: ThreadIdPath, runtime: RuntimeDep, principal: PrincipalDep
) -> ThreadView:
    state = await _existing_thread_state(runtime, principal, thread_id)
    values = state.values if isinstance(state.values, dict) else {}
    return ThreadView(
        thread_id=thread_id,
        messages=[_thread_message(m) for m in values.get("messages", [])],
        sources=list(values.get("sources", [])),
        updated_at=state.created_at,
    )


@router.delete("/threads/{thread_id}", status_code=204)
async def delete_thread(
    thread_id: ThreadIdPath, runtime: RuntimeDep, principal: PrincipalDep
) -> Response:
    with contextlib.suppress(CheckpointCorrupt):  # a damaged thread can still be deleted
        await _existing_thread_state(runtime, principal, thread_id)
    await remove_thread(runtime, principal, thread_id)
    return Response(status_code=204)
