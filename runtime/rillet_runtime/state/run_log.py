"""Resumable streams: every run's events in a log, replayable and followed live.

With Redis the log is a Redis stream, readable from any worker: the worker running a run
appends each event under its own id (`<seq>-0`) and keeps an owner key alive. A client
that lost its connection asks any worker for the run's stream with `Last-Event-ID`: it
replays what it missed, then follows live. If the owner key lapses before a terminal
event, the run's process died: the reader ends with `run_interrupted` instead of waiting
forever. Without Redis the log lives in the worker (background runs and rejoins of
LangGraph's API need one even on `make run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
import redis

from rillet_runtime.events import RunEvent, dumps_data, refused_for_memory
from rillet_runtime.metrics import STATE_ERRORS
from rillet_runtime.settings import StreamingSettings

log = logging.getLogger(__name__)

TERMINAL = frozenset({"done", "error", "end"})
_OWNER_TTL_MS = 3000
_BEAT_SECONDS = 1.0


def run_key(run_id: str, part: str) -> str:
    """Every key of a run, in its cluster slot: `events`, `owner` (the process running it),
    `reader` (someone resuming), `principal` and `cancel` (state/runs.py)."""
    return f"rillet:run:{{{run_id}}}:{part}"


def _keys(run_id: str) -> tuple[str, str, str]:
    return run_key(run_id, "events"), run_key(run_id, "owner"), run_key(run_id, "reader")


def interrupted_event(last_id: int) -> RunEvent:
    return RunEvent(
        last_id + 1,
        "error",
        {
            "code": "run_interrupted",
            "message": "the process running this run stopped; start a new run",
            "retryable": True,
            "error": "RunInterrupted",  # the name LangGraph's clients read
        },
    )


def unreadable_event(last_id: int) -> RunEvent:
    """The log could not be read (Redis unreachable) while the run may go on: under the id
    of the last event delivered, so resuming from it later misses nothing."""
    return RunEvent(
        last_id,
        "error",
        {
            "code": "state_unavailable",
            "message": "the run's event log cannot be read now; resume from the last event id",
            "retryable": True,
            "error": "StateUnavailable",
        },
    )


def follow_block_ms(socket_timeout_seconds: float) -> int:
    """How long a follower's XREAD waits for events: a second, or less than the socket
    timeout when that is shorter, so Redis answers before the client gives up on the
    socket (and never 0, which would block for ever)."""
    return max(1, min(1000, int(socket_timeout_seconds * 500)))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _nothing() -> AsyncGenerator[RunEvent]:
    return
    yield  # an async generator that ends at once


@dataclass
class RunLog(ABC):
    """Where runs publish their events and followers read them; `shared` when any worker
    (or pod) can follow a run another one runs."""

    ttl_ms: int
    max_events: int
    _detached: set[asyncio.Task[None]] = field(default_factory=set)

    shared: ClassVar[bool]

    @property
    def beat_ms(self) -> int:
        """How long a beat keeps a live run's log: its lifetime, or longer when that is
        shorter than the beats are apart."""
        return max(self.ttl_ms, _OWNER_TTL_MS)

    def kept_ms(self, batch: tuple[RunEvent, ...]) -> int:
        """How long appending `batch` keeps the log: `ttl_ms` from a terminal event, else as
        long as a beat does, since the run's first beat may come before its first event
        (and so before its log exists to be kept) and the next one a second later."""
        return self.ttl_ms if any(event.event in TERMINAL for event in batch) else self.beat_ms

    @abstractmethod
    async def append(self, run_id: str, *batch: RunEvent) -> None: ...

    @abstractmethod
    async def beat(self, run_id: str) -> bool:
        """Keep the run known to be alive; True while some follower is reading."""

    @abstractmethod
    async def follow(
        self, run_id: str, last_event_id: int | None
    ) -> AsyncGenerator[RunEvent] | None:
        """Replay after `last_event_id` (None: from now on), then follow; None when the run
        is unknown."""

    @abstractmethod
    def ended(self, run_id: str) -> None:
        """The run's publisher stopped (with or without a terminal event)."""

    @abstractmethod
    async def alive(self, run_id: str) -> bool:
        """Some worker is publishing the run now (its beat is fresh)."""

    @abstractmethod
    async def forget(self, run_ids: list[str]) -> None:
        """These runs' logs go now (their thread was deleted), not when they expire."""

    def publish(
        self,
        run_id: str,
        events: AsyncGenerator[RunEvent],
        origin: asyncio.Queue[RunEvent | None] | None,
        grace: float | None,
    ) -> Callable[[], None]:
        """Run to the end in the background, logging every event and feeding the origin client.

        Returns `detach`: call it (once or more) when the origin client leaves. The run then
        goes on for `grace` seconds (None: to its end), and longer while a follower reads;
        otherwise it is cancelled. No origin: detached from the start.
        """
        detached_at: list[float] = [] if origin is not None else [time.monotonic()]
        unwritten: asyncio.Queue[RunEvent | None] = asyncio.Queue()
        ending = asyncio.Event()

        async def write_behind() -> None:
            """Appends off the token path: each round trip takes every event that arrived
            during the previous one, so a slow Redis batches instead of delaying tokens."""
            while True:
                batch = [await unwritten.get()]
                while not unwritten.empty():
                    batch.append(unwritten.get_nowait())
                done = batch[-1] is None
                written = [event for event in batch if event is not None]
                if written:
                    try:
                        await self.append(run_id, *written)
                    except redis.RedisError as exc:  # the run goes on; a resume may miss these
                        if refused_for_memory(exc):
                            STATE_ERRORS.labels("state_full", "run_log").inc()
                if done:
                    return

        async def keep_alive() -> None:
            """Each second while the run lives, events or not (a node may think for long):
            its owner key stays, a follower reading extends the grace, and past the grace
            the run is stopped. Ends between beats, never mid-beat: a beat landing after the
            terminal event would bring the owner back and keep the ended run's log longer."""
            while not ending.is_set():
                now = time.monotonic()
                with contextlib.suppress(redis.RedisError):
                    if await self.beat(run_id) and detached_at:
                        detached_at[:] = [now]
                if grace is not None and detached_at and now - detached_at[0] > grace:
                    log.info("run %s: nobody resumed within the grace period; cancelling", run_id)
                    task.cancel()
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ending.wait(), _BEAT_SECONDS)

        async def pump() -> None:
            writer = self.spawn(write_behind(), f"run-log-{run_id}")
            beating = self.spawn(keep_alive(), f"run-alive-{run_id}")
            try:
                async for event in events:
                    if origin is not None and not detached_at:
                        await origin.put(event)
                    unwritten.put_nowait(event)
            finally:
                ending.set()
                await events.aclose()
                await asyncio.wait([beating])  # its last beat lands before the terminal event
                unwritten.put_nowait(None)
                await asyncio.shield(writer)  # the terminal event is logged before we end
                self.ended(run_id)
                if origin is not None and not detached_at:
                    await origin.put(None)

        task = self.spawn(pump(), f"publish-{run_id}")

        def detach() -> None:
            if not detached_at:
                detached_at.append(time.monotonic())
            while origin is not None and not origin.empty():  # unblock the pump
                origin.get_nowait()
            if grace == 0:  # now, not at the next beat
                task.cancel()

        return detach

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A task of the worker's runs: kept alive while it runs, cancelled on shutdown."""
        task = asyncio.create_task(work, name=name)
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)
        return task

    async def aclose(self) -> None:
        for task in list(self._detached):
            task.cancel()
        await asyncio.gather(*self._detached, return_exceptions=True)


@dataclass
class RedisRunLog(RunLog):
    client: Any = field(kw_only=True)  # redis.asyncio.Redis or RedisCluster
    block_ms: int = field(default=1000, kw_only=True)  # follow_block_ms of the socket timeout
    shared: ClassVar[bool] = True

    def ended(self, run_id: str) -> None:
        """Nothing to do: the terminal event deleted the owner key, or it lapses."""

    async def alive(self, run_id: str) -> bool:
        return bool(await self.client.exists(run_key(run_id, "owner")))

    async def append(self, run_id: str, *batch: RunEvent) -> None:
        """Append events in one round trip (a pipeline of XADDs, their TTL, the owner). The
        terminal event is added before the owner key goes: a follower that finds no owner
        then finds the event (see `follow`)."""
        events, owner, _ = _keys(run_id)
        pipe = self.client.pipeline(transaction=False)
        for event in batch:
            pipe.xadd(
                events,
                {"e": event.event, "d": dumps_data(event.data)},
                id=f"{event.id}-0",
                maxlen=self.max_events,
                approximate=True,
            )
        pipe.pexpire(events, self.kept_ms(batch))
        if any(event.event in TERMINAL for event in batch):
            pipe.delete(owner)
        for reply in await pipe.execute(raise_on_error=False):
            # A retry after a lost reply finds its own event already there: ids are ours.
            if isinstance(reply, redis.ResponseError) and "equal or smaller" not in str(reply):
                raise reply

    async def beat(self, run_id: str) -> bool:
        """Keep the owner key alive, and the log (a live run's log lasts `beat_ms` after its
        last event or beat, so a quiet run keeps what it logged); True while some resumer is
        reading."""
        events, owner, reader = _keys(run_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(owner, "1", px=_OWNER_TTL_MS)
        pipe.pexpire(events, self.beat_ms)
        pipe.exists(reader)
        *_, readers = await pipe.execute()
        return bool(readers)

    async def forget(self, run_ids: list[str]) -> None:
        if run_ids:  # one key at a time: in a cluster each run has a slot of its own
            pipe = self.client.pipeline(transaction=False)
            for key in (key for run_id in run_ids for key in _keys(run_id)):
                pipe.delete(key)
            await pipe.execute()

    async def follow(
        self, run_id: str, last_event_id: int | None
    ) -> AsyncGenerator[RunEvent] | None:
        events, owner, reader = _keys(run_id)
        # The owner is read before the log (in order, on one connection): a run that ends
        # between the two reads has its terminal event logged by then, so it is never seen
        # with neither.
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(owner)
        pipe.xrevrange(events, count=1)
        publishing, newest = await pipe.execute()
        if not newest:  # nothing logged yet: known if its publisher beats
            if not publishing:
                return None
            return self._follow(events, owner, reader, last_event_id or 0)
        if last_event_id is None:  # from now on: nothing if the run is over
            entry_id, fields = newest[0]
            if fields[b"e"].decode() in TERMINAL:
                return _nothing()
            last_event_id = int(_text(entry_id).split("-")[0])
        return self._follow(events, owner, reader, last_event_id)

    async def _follow(
        self, events: str, owner: str, reader: str, last_id: int
    ) -> AsyncGenerator[RunEvent]:
        cursor = f"{last_id}-0"
        try:
            while True:
                await self.client.set(reader, "1", px=_OWNER_TTL_MS)
                reply: Any = await self.client.xread(
                    {events: cursor}, count=256, block=self.block_ms
                )
                entries = reply[0][1] if reply else []
                for entry_id, fields in entries:
                    cursor = _text(entry_id)
                    event = RunEvent(
                        int(cursor.split("-")[0]),
                        fields[b"e"].decode(),
                        orjson.loads(fields[b"d"]),
                    )
                    yield event
                    if event.event in TERMINAL:
                        return
                # No owner and nothing new, even at one last look: the run's process is gone.
                if (
                    not entries
                    and not await self.client.exists(owner)
                    and not await self.client.xread({events: cursor}, count=1)
                ):
                    yield interrupted_event(int(cursor.split("-")[0]))
                    return
        except redis.RedisError as exc:  # an error event, not a connection cut mid-stream
            log.warning("following %s: %r", events, exc)
            yield unreadable_event(int(cursor.split("-")[0]))


@dataclass
class _Logged:
    events: list[RunEvent] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    expires_at: float = 0.0
    ended: bool = False

    def wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


@dataclass
class MemoryRunLog(RunLog):
    """One worker's runs: followed from this worker only (the in-memory state is per worker)."""

    shared: ClassVar[bool] = False
    _runs: dict[str, _Logged] = field(default_factory=dict)

    def _kept(self, run_id: str, keep_ms: int) -> _Logged:
        """The run's log, kept `keep_ms` from now (its last event or beat); a new run's
        first drops the expired."""
        now = time.monotonic()
        if run_id not in self._runs:
            for expired in [key for key, run in self._runs.items() if run.expires_at < now]:
                del self._runs[expired]
        logged = self._runs.setdefault(run_id, _Logged())
        logged.expires_at = now + keep_ms / 1000
        return logged

    async def append(self, run_id: str, *batch: RunEvent) -> None:
        logged = self._kept(run_id, self.kept_ms(batch))
        logged.events += batch
        del logged.events[: -self.max_events]
        logged.wake()

    async def beat(self, run_id: str) -> bool:
        """Known (followable) from its first beat, and kept while it lives."""
        self._kept(run_id, self.beat_ms)
        return False  # a follower here extends nothing: the run is in this process

    async def alive(self, run_id: str) -> bool:
        logged = self._runs.get(run_id)
        return logged is not None and not logged.ended

    def ended(self, run_id: str) -> None:
        if (logged := self._runs.get(run_id)) is not None:
            logged.ended = True
            logged.wake()

    async def forget(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            self._runs.pop(run_id, None)

    async def follow(
        self, run_id: str, last_event_id: int | None
    ) -> AsyncGenerator[RunEvent] | None:
        logged = self._runs.get(run_id)
        if logged is None or logged.expires_at < time.monotonic():  # expired, as on Redis
            return None
        if last_event_id is None:  # from now on: nothing if the run is over
            newest = logged.events[-1] if logged.events else None
            if newest is not None and newest.event in TERMINAL:
                return _nothing()
            last_event_id = 0 if newest is None else newest.id
        return self._follow(logged, last_event_id)

    async def _follow(self, logged: _Logged, last_id: int) -> AsyncGenerator[RunEvent]:
        while True:
            changed = logged.changed
            for event in [event for event in logged.events if event.id > last_id]:
                last_id = event.id
                yield event
                if event.event in TERMINAL:
                    return
            if logged.ended:  # stopped without an end (cancelled): as if its process died
                yield interrupted_event(last_id)
                return
            await changed.wait()


def open_run_log(
    client: Any | None, settings: StreamingSettings, socket_timeout_seconds: float = 2
) -> RunLog:
    """On Redis when there is one (its commands time out after `socket_timeout_seconds`),
    else in the worker."""
    limits = (int(settings.run_log_ttl_seconds * 1000), settings.resume_max_events)
    if client is None:
        return MemoryRunLog(*limits)
    return RedisRunLog(*limits, client=client, block_ms=follow_block_ms(socket_timeout_seconds))
