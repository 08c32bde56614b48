"""What a run produces and what it notes while running: its events, and the state saves
that failed. Shared by the streaming core and the state store, so neither imports the other."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

EventName = Literal["metadata", "sources", "token", "done", "error"]


@dataclass(frozen=True, slots=True)
class RunEvent:
    id: int
    event: EventName
    data: dict[str, Any]


# The run being streamed collects save failures here instead of failing mid-answer.
_save_failures: ContextVar[list[BaseException] | None] = ContextVar("save_failures", default=None)


@contextmanager
def collecting_save_failures() -> Iterator[list[BaseException]]:
    """Around a streamed run: saves that fail are listed, not raised."""
    failures: list[BaseException] = []
    token = _save_failures.set(failures)
    try:
        yield failures
    finally:
        _save_failures.reset(token)


def save_failed(exc: BaseException) -> None:
    """Inside a streamed run: note it and let the answer finish; elsewhere: raise."""
    failures = _save_failures.get()
    if failures is None:
        raise exc
    failures.append(exc)
