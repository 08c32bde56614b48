"""Clear errors: the right status, the field named, never a stack trace.

One body shape everywhere, `{"error": {"code", "message", "type", "param"}, "detail"}`:
`error` is what OpenAI SDKs parse and `detail` (the message again) what LangGraph's SDKs
show, so neither compatible API needs a format of its own.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rillet_runtime.events import (
    CheckpointCorrupt,
    CheckpointPruned,
    ThreadTooLarge,
    refused_for_memory,
)
from rillet_runtime.llm.errors import classify_error
from rillet_runtime.metrics import STATE_ERRORS

log = logging.getLogger(__name__)

_CODE_BY_STATUS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(StarletteHTTPException):
    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, message, headers)
        self.code = code
        self.param = param


class ErrorDetail(BaseModel):
    code: str
    message: str
    type: str
    param: str | None


class ErrorBody(BaseModel):
    """Every error's body (a 422 adds `fields`, one per invalid field)."""

    model_config = ConfigDict(extra="allow")
    error: ErrorDetail
    detail: str


_DESCRIPTIONS = {
    400: "malformed JSON",
    401: "missing or bad credentials (with WWW-Authenticate)",
    404: "no such thread, run or model for this principal, or a checkpoint of the thread "
    "no longer kept (checkpoint_not_found)",
    409: "the thread has a run in progress, or the run was cancelled",
    413: "the body is too large, or the thread is over its size cap (thread_too_large)",
    415: "the body is not JSON",
    422: "a field is invalid (named in param)",
    429: "a per-principal limit (with Retry-After, RateLimit and RateLimit-Policy)",
    500: "internal error, or the thread's stored state is damaged (state_corrupt)",
    502: "the model provider refused the request",
    503: "over capacity, draining, or the state store is unavailable or out of memory "
    "(state_full), with Retry-After",
    504: "the model provider or the stream timed out",
}
# What an authenticated route may answer besides its success, in the one error shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in _DESCRIPTIONS.items()
}


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
    return {
        "error": {"code": code, "message": message, "type": kind, "param": param},
        "detail": message,
    }


def error_response(
    status: int,
    code: str,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {**error_body(status, code, message, param), **extra}
    return JSONResponse(body, status_code=status, headers=headers)


def _field_name(loc: tuple[int | str, ...]) -> str:
    parts = (
        [str(p) for p in loc[1:]]
        if loc and loc[0] in {"body", "query", "path", "header", "cookie"}
        else [str(p) for p in loc]
    )
    return ".".join(parts) or str(loc[0] if loc else "body")


async def validation_exception_handler(
    request: Request, exc: RequestValidationError
) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (detail.get("ctx") or {}).get("error", "invalid JSON")
        return error_response(400, "malformed_json", f"request body is not valid JSON: {reason}")
    fields = [{"field": _field_name(tuple(e["loc"])), "message": e["msg"]} for e in errors]
    first = fields[0]
    message = f"{first['field']}: {first['message']}"
    return error_response(422, "invalid_request", message, first["field"], fields=fields)


async def http_exception_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = getattr(exc, "code", None) or _CODE_BY_STATUS.get(exc.status_code, "error")
    return error_response(
        exc.status_code,
        code,
        str(exc.detail),
        getattr(exc, "param", None),
        dict(exc.headers or {}) or None,
    )


async def state_corrupt_handler(request: Request, exc: CheckpointCorrupt) -> JSONResponse:
    """500 `state_corrupt`: which checkpoint and value go to the log, not to the client."""
    log.error("%s %s: %s", request.method, request.url.path, exc)
    info = classify_error(exc)
    STATE_ERRORS.labels(info.code, "checkpoint_read").inc()
    return error_response(500, info.code, info.message)


# Replies that say "not now" rather than "wrong": a cluster moving a slot (TRYAGAIN).
_TRY_AGAIN = (redis.exceptions.TryAgainError,)


async def redis_reply_handler(request: Request, exc: redis.ResponseError) -> JSONResponse:
    """503 (with Retry-After) for a reply error outside a run that a retry may cure: a write
    Redis refused at its memory limit (`state_full`), or a cluster asking to try again
    (`state_unavailable`); any other reply error is unexpected: 500."""
    if not (refused_for_memory(exc) or isinstance(exc, _TRY_AGAIN)):
        return await unhandled_exception_handler(request, exc)
    return _state_refused(request, exc)


async def state_unavailable_handler(request: Request, exc: redis.RedisError) -> JSONResponse:
    """503 `state_unavailable` (with Retry-After) when Redis cannot be reached, or a cluster
    is failing over, outside a run (a thread read, a resume, a delete): a retryable answer,
    not a 500."""
    return _state_refused(request, exc)


def _state_refused(request: Request, exc: redis.RedisError) -> JSONResponse:
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    info = classify_error(exc)
    STATE_ERRORS.labels(info.code, "request").inc()
    retry_after = str(request.app.state.settings.server.retry_after_seconds)
    return error_response(503, info.code, info.message, headers={"Retry-After": retry_after})


async def thread_too_large_handler(request: Request, exc: ThreadTooLarge) -> JSONResponse:
    """413 `thread_too_large` for a change outside a run (a state update) over the cap."""
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    info = classify_error(exc)
    return error_response(413, info.code, info.message, "thread_id")


async def checkpoint_pruned_handler(request: Request, exc: CheckpointPruned) -> JSONResponse:
    """404 `checkpoint_not_found`: a checkpoint asked for by id that retention dropped."""
    info = classify_error(exc)
    return error_response(404, info.code, info.message, "checkpoint_id")


async def unhandled_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal error")


def require_json(request: Request) -> None:
    """A FastAPI dependency: 415 instead of a confusing validation error."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ApiError(415, "unsupported_media_type", "content-type must be application/json")


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 before reading a body that is too large, declared or chunked."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = error_response(
            413, "body_too_large", f"request body exceeds {self.max_bytes} bytes"
        )
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await too_large(scope, receive, send)
            return

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await too_large(scope, receive, send)
