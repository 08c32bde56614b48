"""The native chat API: `POST /v1/chat/stream` (SSE), `POST /v1/chat`, threads."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Response
from langchain_core.messages import BaseMessage, HumanMessage
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse

from rillet_runtime.api.deps import RuntimeDep, admit_stream, collect, events_for, new_run
from rillet_runtime.api.errors import ApiError, require_json
from rillet_runtime.api.sse import SlotEventSourceResponse, from_origin, sse_events
from rillet_runtime.app_state import Runtime
from rillet_runtime.events import RunEvent

router = APIRouter(prefix="/v1", tags=["chat"])

THREAD_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
ThreadIdPath = Annotated[str, Path(pattern=THREAD_ID_PATTERN)]
TenantHeader = Annotated[
    str | None, Header(alias="X-Rillet-Tenant", pattern=r"^[A-Za-z0-9._:-]{1,128}$")
]


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=32_000, description="the user's message")
    thread_id: str | None = Field(
        None, pattern=THREAD_ID_PATTERN, description="continue this thread; omitted: a new one"
    )


class ChatAnswer(BaseModel):
    thread_id: str
    run_id: str
    answer: str
    sources: list[dict[str, Any]]
    finish_reason: str
    usage: dict[str, int]
    timings: dict[str, float | None]


class ThreadMessage(BaseModel):
    id: str | None
    role: str
    content: str


class ThreadView(BaseModel):
    thread_id: str
    messages: list[ThreadMessage]
    sources: list[dict[str, Any]]
    updated_at: str | None


def _run_for(runtime: Runtime, body: ChatRequest, endpoint: str, tenant: str | None) -> Any:
    thread_id = body.thread_id or uuid.uuid4().hex
    graph_input = {"messages": [HumanMessage(content=body.message)]}
    return new_run(runtime, graph_input, thread_id, endpoint, tenant)


@router.post(
    "/chat/stream",
    dependencies=[Depends(require_json)],
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat_stream(
    body: ChatRequest, runtime: RuntimeDep, tenant: TenantHeader = None
) -> EventSourceResponse:
    """Stream an answer as SSE events: metadata, sources, token..., then done or error."""
    slot = admit_stream(runtime, "chat_stream")
    run = _run_for(runtime, body, "chat_stream", tenant)
    events = events_for(runtime, run, slot)
    heartbeat = runtime.settings.streaming.heartbeat_seconds
    if runtime.run_log is None:
        return SlotEventSourceResponse(sse_events(events), slot, heartbeat)
    # Resumable: the run belongs to the worker, not to this connection.
    origin: asyncio.Queue[RunEvent | None] = asyncio.Queue(
        runtime.settings.streaming.queue_max_events
    )
    detach = runtime.run_log.publish(run.run_id, events, origin)
    return EventSourceResponse(from_origin(origin, detach), ping=heartbeat, sep="\n")


@router.post("/chat", dependencies=[Depends(require_json)])
async def chat(body: ChatRequest, runtime: RuntimeDep, tenant: TenantHeader = None) -> ChatAnswer:
    """The same run as /v1/chat/stream, answered as one JSON document."""
    slot = admit_stream(runtime, "chat")
    run = _run_for(runtime, body, "chat", tenant)
    try:
        collected = await collect(events_for(runtime, run, slot))
    finally:
        slot.release()
    return ChatAnswer(
        thread_id=collected.thread_id,
        run_id=collected.run_id,
        answer=collected.answer,
        sources=collected.sources,
        finish_reason=collected.done.get("finish_reason", "stop"),
        usage=collected.done.get("usage", {}),
        timings=collected.done.get("timings", {}),
    )


def _thread_message(message: BaseMessage) -> ThreadMessage:
    role = {"human": "user", "ai": "assistant"}.get(message.type, message.type)
    return ThreadMessage(id=message.id, role=role, content=str(message.text))


async def _existing_thread_state(runtime: Runtime, thread_id: str) -> Any:
    state = await runtime.graph.aget_state({"configurable": {"thread_id": thread_id}})
    if state.created_at is None:
        raise ApiError(
            404, "thread_not_found", f"thread {thread_id!r} does not exist", param="thread_id"
        )
    return state


@router.get("/threads/{thread_id}")
async def get_thread(thread_id: ThreadIdPath, runtime: RuntimeDep) -> ThreadView:
    state = await _existing_thread_state(runtime, thread_id)
    values = state.values if isinstance(state.values, dict) else {}
    return ThreadView(
        thread_id=thread_id,
        messages=[_thread_message(m) for m in values.get("messages", [])],
        sources=list(values.get("sources", [])),
        updated_at=state.created_at,
    )


@router.delete("/threads/{thread_id}", status_code=204)
async def delete_thread(thread_id: ThreadIdPath, runtime: RuntimeDep) -> Response:
    await _existing_thread_state(runtime, thread_id)
    await runtime.checkpointer.adelete_thread(thread_id)
    return Response(status_code=204)
