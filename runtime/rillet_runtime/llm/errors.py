"""Run failures (the provider's, the state store's) as stable error codes for the `error`
SSE event and the API's error bodies."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from rillet_runtime.events import (
    CheckpointCorrupt,
    CheckpointPruned,
    ThreadTooLarge,
    refused_for_memory,
)


class ProviderUnavailableError(RuntimeError):
    """Every configured provider is failing or its circuit is open."""


class RunCancelled(Exception):
    """Someone stopped the run: a cancel request, or a newer run interrupting its thread."""


@dataclass(frozen=True)
class ErrorInfo:
    code: str
    message: str
    retryable: bool


def _status_code(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def classify_error(exc: BaseException) -> ErrorInfo:
    """Map SDK exceptions (openai, anthropic, httpx) by shape, not by import."""
    name = type(exc).__name__
    status = _status_code(exc)
    if isinstance(exc, RunCancelled):
        return ErrorInfo("run_cancelled", "the run was cancelled", False)
    if isinstance(exc, CheckpointCorrupt):
        return ErrorInfo(
            "state_corrupt", "the thread's stored state is damaged and cannot be read", False
        )
    if isinstance(exc, ThreadTooLarge):
        return ErrorInfo(
            "thread_too_large", "the thread is over its size cap; start a new thread", False
        )
    if isinstance(exc, CheckpointPruned):
        return ErrorInfo(
            "checkpoint_not_found",
            "that checkpoint of the thread is no longer kept (only the newest are)",
            False,
        )
    if refused_for_memory(exc):
        return ErrorInfo("state_full", "the thread state store is out of memory", True)
    if type(exc).__module__.startswith("redis"):
        return ErrorInfo("state_unavailable", "the thread state store is unavailable", True)
    if isinstance(exc, ProviderUnavailableError) or name == "OpenedState":
        return ErrorInfo("provider_unavailable", "the model provider is unavailable", True)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError) or "Timeout" in name:
        return ErrorInfo("provider_timeout", "the model provider timed out", True)
    if status == 429:
        return ErrorInfo("provider_rate_limited", "the model provider is rate limiting", True)
    if status is not None and status >= 500:
        return ErrorInfo("provider_unavailable", "the model provider failed", True)
    if "Connect" in name or any(cls.__name__ == "TransportError" for cls in type(exc).__mro__):
        # The SDKs' connection errors, or httpx's under them: refused, reset or cut short.
        return ErrorInfo(
            "provider_unavailable",
            "the model provider could not be reached, or its connection broke mid-answer",
            True,
        )
    if status is not None:
        return ErrorInfo(
            "provider_error", f"the model provider refused the request ({status})", False
        )
    return ErrorInfo("internal_error", "the run failed", False)


def is_provider_health_failure(exc: BaseException) -> bool:
    """What should count against a provider's circuit: not our bad requests, not cancels."""
    return classify_error(exc).code in {"provider_unavailable", "provider_timeout"}
