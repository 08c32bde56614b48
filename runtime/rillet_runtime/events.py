"""What a run produces and what it notes while running: its events, the state saves that
failed, and stored state that cannot be read back. Shared by the streaming core, the API and
the state store, so none of them imports another."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One SSE event: the native API's (metadata, sources, token, done, error) or LangGraph's
    (metadata, values, updates, messages, custom, error, end)."""

    id: int
    event: str
    data: Any


def _to_json(value: Any) -> Any:
    """What orjson cannot write itself, as LangGraph's server writes it: LangChain messages
    and other pydantic models dumped, sets as lists, bytes in base64, anything else as its
    text."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump()
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)


def dumps_data(data: Any) -> bytes:
    return orjson.dumps(data, default=_to_json)


@dataclass
class Usage:
    """A run's model tokens as it goes: what the provider reported, and how many chunks
    streamed, which is what is charged when the run ends before the provider reports (a
    client that left, a cancel, a timeout)."""

    reported: dict[str, int] = field(default_factory=dict)
    streamed_chunks: int = 0

    @property
    def charge(self) -> int:
        completion = max(self.reported.get("completion_tokens", 0), self.streamed_chunks)
        return self.reported.get("prompt_tokens", 0) + completion


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


def saves_stopped() -> bool:
    """A save of the streamed run failed already: later ones are not written, as they may
    reference values the failed one held (a thread keeps its last whole checkpoint)."""
    return bool(_save_failures.get())


def refused_for_memory(exc: BaseException) -> bool:
    """Redis refused a write because it is at `maxmemory` (policy `noeviction`, or nothing
    left to evict). By shape, not by import: redis-py's OutOfMemoryError, or the OOM
    reply wrapped by a Lua script on Redis 6."""
    return type(exc).__name__ == "OutOfMemoryError" or (
        type(exc).__module__.startswith("redis")
        and "command not allowed when used memory" in str(exc)
    )


class CheckpointCorrupt(Exception):
    """A stored checkpoint cannot be read back as it was written: a value it references is
    missing, or its bytes do not decode (a payload the serializer refuses, such as pickle).
    Raised, never read as empty: an empty read would silently drop the thread's history,
    and the next save would make the loss permanent."""

    def __init__(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str,
        part: str,
        reason: str,
        channel: str | None = None,
    ) -> None:
        namespace = f" (namespace {checkpoint_ns!r})" if checkpoint_ns else ""
        super().__init__(
            f"thread {thread_id!r}, checkpoint {checkpoint_id}{namespace}: {part} {reason}"
        )
        self.thread_id = thread_id
        self.checkpoint_ns = checkpoint_ns
        self.checkpoint_id = checkpoint_id
        self.part = part  # "the checkpoint", "its metadata", "channel 'messages'", ...
        self.reason = reason
        self.channel = channel  # the channel whose value it is, when it is one


class ThreadTooLarge(Exception):
    """A checkpoint (or a pending write) that would grow its thread past the byte cap: not
    written, and the run's earlier checkpoints were taken back with it, so the thread is
    as it was before the run (`state.max_thread_bytes`)."""

    def __init__(self, thread_id: str, would_hold: int, limit: int) -> None:
        super().__init__(
            f"thread {thread_id!r} would hold {would_hold} bytes, over its cap of {limit}"
        )
        self.thread_id = thread_id
        self.would_hold = would_hold
        self.limit = limit


class CheckpointPruned(LookupError):
    """A checkpoint asked for by id that retention dropped (`state.keep_checkpoints` keeps
    the newest): raised rather than read as no checkpoint, which would start the thread
    over from empty state."""

    def __init__(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> None:
        namespace = f" (namespace {checkpoint_ns!r})" if checkpoint_ns else ""
        super().__init__(
            f"thread {thread_id!r}, checkpoint {checkpoint_id}{namespace}: no longer kept "
            "(only the newest checkpoints of a thread are)"
        )
        self.thread_id = thread_id
        self.checkpoint_ns = checkpoint_ns
        self.checkpoint_id = checkpoint_id
