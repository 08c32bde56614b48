"""OpenAI-compatible `POST /v1/chat/completions` and `GET /v1/models`.

The API is stateless (the client sends the whole conversation), so each request runs on
a throwaway thread that is deleted when the run ends.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Request
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import ServerSentEvent

from rillet_runtime.api.caps import check_input
from rillet_runtime.api.deps import (
    PrincipalDep,
    RuntimeDep,
    collect,
    get_principal,
    new_run,
    start_run,
    thread_key,
)
from rillet_runtime.api.errors import ERROR_RESPONSES, ApiError, error_body, require_json
from rillet_runtime.api.sse import ClosingEventSourceResponse
from rillet_runtime.app_state import Runtime
from rillet_runtime.events import RunEvent

router = APIRouter(
    prefix="/v1", tags=["openai"], dependencies=[Depends(get_principal)], responses=ERROR_RESPONSES
)

_STARTED = int(time.time())


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class CompletionMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    # OpenAI clients send many optional knobs; unknown ones are accepted and ignored.
    model_config = ConfigDict(extra="allow")

    model: str
    messages: Annotated[list[CompletionMessage], Field(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None


def served_models(runtime: Runtime) -> list[str]:
    return list(dict.fromkeys(["rillet", runtime.settings.model.name]))


@router.get("/models")
async def list_models(runtime: RuntimeDep) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": _STARTED, "owned_by": "rillet"}
            for name in served_models(runtime)
        ],
    }


def to_langchain(messages: list[CompletionMessage]) -> list[BaseMessage]:
    converted: list[BaseMessage] = []
    for message in messages:
        text = message.text()
        if message.role in {"system", "developer"}:
            converted.append(SystemMessage(content=text))
        elif message.role == "user":
            converted.append(HumanMessage(content=text))
        elif message.role == "assistant":
            converted.append(AIMessage(content=text))
    return converted


def _chunk(
    completion_id: str, model: str, created: int, delta: dict[str, Any], finish: str | None
) -> ServerSentEvent:
    body = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    return ServerSentEvent(data=orjson.dumps(body).decode(), sep="\n")


def _usage(usage: dict[str, int]) -> dict[str, int]:
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


async def openai_chunks(
    events: AsyncGenerator[RunEvent], model: str, include_usage: bool
) -> AsyncGenerator[ServerSentEvent]:
    """Run events in OpenAI's chunk format, ending with `[DONE]` (or an error object)."""
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    async with contextlib.aclosing(events):
        async for event in events:
            match event.event:
                case "metadata":
                    yield _chunk(
                        completion_id, model, created, {"role": "assistant", "content": ""}, None
                    )
                case "token":
                    yield _chunk(
                        completion_id, model, created, {"content": event.data["text"]}, None
                    )
                case "done":
                    yield _chunk(completion_id, model, created, {}, "stop")
                    if include_usage:
                        usage_chunk = {
                            "id": completion_id,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "choices": [],
                            "usage": _usage(event.data.get("usage", {})),
                        }
                        yield ServerSentEvent(data=orjson.dumps(usage_chunk).decode(), sep="\n")
                    yield ServerSentEvent(data="[DONE]", sep="\n")
                case "error":
                    body = error_body(500, event.data["code"], event.data["message"])
                    yield ServerSentEvent(data=orjson.dumps(body).decode(), sep="\n")


async def _with_thread_cleanup(
    runtime: Runtime, thread_id: str, events: AsyncGenerator[ServerSentEvent]
) -> AsyncIterator[ServerSentEvent]:
    """The throwaway thread goes once the run has stopped (closing the events stops it)."""
    try:
        async with contextlib.aclosing(events):
            async for event in events:
                yield event
    finally:
        await runtime.checkpointer.adelete_thread(thread_id)


@router.post("/chat/completions", dependencies=[Depends(require_json)], response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, runtime: RuntimeDep, principal: PrincipalDep
) -> Any:
    if body.model not in served_models(runtime):
        raise ApiError(
            404, "model_not_found", f"model {body.model!r} is not served here", param="model"
        )
    if body.messages[-1].role != "user":
        raise ApiError(
            422,
            "invalid_request",
            "messages: the last message must be from the user",
            param="messages",
        )
    check_input([m.text() for m in body.messages], runtime.settings.limits, "messages")
    # `user` is the client's end-user tag, never whose data is touched: that is the principal.
    graph_input = {"messages": to_langchain(body.messages)}
    run = new_run(runtime, principal, graph_input, f"oai-{uuid.uuid4().hex}", "chat_completions")
    started = await start_run(
        runtime, request.is_disconnected, principal, run, throwaway_thread=True
    )
    thread = thread_key(principal, started.request.thread_id)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = openai_chunks(started.events, body.model, include_usage)
        return ClosingEventSourceResponse(
            _with_thread_cleanup(runtime, thread, chunks),
            started.close,
            runtime.settings.streaming.heartbeat_seconds,
        )
    try:
        collected = await collect(started.events)
    finally:
        await started.close()
        await runtime.checkpointer.adelete_thread(thread)
    return {
        "id": f"chatcmpl-{collected.run_id}",
        "object": "chat.completion",
        "created": collected.created,
        "model": body.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": collected.answer},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": _usage(collected.done.get("usage", {})),
    }
