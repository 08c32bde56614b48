"""SSE framing and responses shared by the chat and runs routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from rillet_runtime.events import RunEvent, dumps_data


def to_sse(event: RunEvent) -> ServerSentEvent:
    return ServerSentEvent(
        data=dumps_data(event.data).decode(), event=event.event, id=str(event.id), sep="\n"
    )


async def sse_events(events: AsyncGenerator[RunEvent]) -> AsyncIterator[ServerSentEvent]:
    """Closes the run's events when the client leaves, so the run stops and what it holds
    is given back (its tokens charged) now, not whenever the generator is collected."""
    async with contextlib.aclosing(events):
        async for event in events:
            yield to_sse(event)


async def from_origin(
    origin: asyncio.Queue[RunEvent | None], detach: Callable[[], None]
) -> AsyncIterator[ServerSentEvent]:
    """The origin client's view of a resumable run that the run log drives."""
    try:
        while (event := await origin.get()) is not None:
            yield to_sse(event)
    finally:
        detach()


class ClosingEventSourceResponse(EventSourceResponse):
    """Gives back what the run holds even if the client left before the body started."""

    def __init__(
        self,
        content: AsyncIterator[ServerSentEvent],
        close: Callable[[], Awaitable[None]],
        ping: float,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(content, ping=ping, sep="\n", headers=headers)
        self._close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _then(super().__call__(scope, receive, send), self._close)


class ClosingStreamingResponse(StreamingResponse):
    """The same for a plain streamed body (a JSON answer sent when ready)."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        close: Callable[[], Awaitable[None]],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(content, media_type="application/json", headers=headers)
        self._close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _then(super().__call__(scope, receive, send), self._close)


async def _then(response: Awaitable[None], close: Callable[[], Awaitable[None]]) -> None:
    try:
        await response
    finally:
        with anyio.CancelScope(shield=True):  # the client may be gone: finish anyway
            await close()


def closer(detach: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    """`detach` (idempotent) as a response's `close`."""

    async def close() -> None:
        detach()

    return close
