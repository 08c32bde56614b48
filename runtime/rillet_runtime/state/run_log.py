"""Resumable streams: every run's events in a Redis stream, replayable from any worker.

The worker running a run appends each event under its own id (`<seq>-0`) and keeps an
owner key alive. A client that lost its connection asks any worker for
`GET /v1/runs/{run_id}/stream` with `Last-Event-ID`: it replays what it missed, then follows
live. If the owner key lapses before a terminal event, the run's process died: the reader
ends with `run_interrupted` instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
import redis.asyncio as aredis

from rillet_runtime.events import RunEvent, dumps_data
from rillet_runtime.settings import StreamingSettings

log = logging.getLogger(__name__)

TERMINAL = frozenset({"done", "error"})
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
        },
    )


@dataclass
class RunLog:
    client: Any  # redis.asyncio.Redis or RedisCluster
    ttl_ms: int
    max_events: int
    grace_seconds: float
    _detached: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def for_settings(
        cls, client: aredis.Redis | aredis.RedisCluster, settings: StreamingSettings
    ) -> RunLog | None:
        if not settings.resumable:
            return None
        return cls(
            client,
            int(settings.resume_ttl_seconds * 1000),
            settings.resume_max_events,
            settings.resume_grace_seconds,
        )

    async def append(self, run_id: str, *batch: RunEvent) -> None:
        """Append events in one round trip (a pipeline of XADDs, their TTL, the owner)."""
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
        pipe.pexpire(events, self.ttl_ms)
        if any(event.event in TERMINAL for event in batch):
            pipe.delete(owner)
        for reply in await pipe.execute(raise_on_error=False):
            # A retry after a lost reply finds its own event already there: ids are ours.
            if isinstance(reply, redis.ResponseError) and "equal or smaller" not in str(reply):
                raise reply

    async def beat(self, run_id: str) -> bool:
        """Keep the owner key alive; True while some resumer is reading."""
        _, owner, reader = _keys(run_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(owner, "1", px=_OWNER_TTL_MS)
        pipe.exists(reader)
        _, readers = await pipe.execute()
        return bool(readers)

    def publish(
        self,
        run_id: str,
        events: AsyncGenerator[RunEvent],
        origin: asyncio.Queue[RunEvent | None],
    ) -> Callable[[], None]:
        """Run to the end in the background, logging every event and feeding the origin client.

        Returns `detach`: call it when the origin client leaves. The run then goes on for
        `grace_seconds`, and longer while a resumer reads; otherwise it is cancelled.
        """
        detached_at: list[float] = []
        unwritten: asyncio.Queue[RunEvent | None] = asyncio.Queue()

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
                    with contextlib.suppress(redis.RedisError):
                        await self.append(run_id, *written)
                if done:
                    return

        async def pump() -> None:
            last_beat = 0.0
            writer = asyncio.create_task(write_behind(), name=f"run-log-{run_id}")
            self._detached.add(writer)
            writer.add_done_callback(self._detached.discard)
            try:
                async for event in events:
                    if not detached_at:
                        await origin.put(event)
                    unwritten.put_nowait(event)
                    now = time.monotonic()
                    if now - last_beat >= _BEAT_SECONDS:
                        last_beat = now
                        with contextlib.suppress(redis.RedisError):
                            if await self.beat(run_id):
                                detached_at[:] = [now] if detached_at else []
                    if detached_at and now - detached_at[0] > self.grace_seconds:
                        log.info(
                            "run %s: nobody resumed within the grace period; cancelling", run_id
                        )
                        return
            finally:
                await events.aclose()
                unwritten.put_nowait(None)
                await asyncio.shield(writer)  # the terminal event is in Redis before we end
                if not detached_at:
                    await origin.put(None)

        task = asyncio.create_task(pump(), name=f"publish-{run_id}")
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)

        def detach() -> None:
            if not detached_at:
                detached_at.append(time.monotonic())
            while not origin.empty():  # unblock the pump; nobody reads these now
                origin.get_nowait()

        return detach

    async def aclose(self) -> None:
        for task in list(self._detached):
            task.cancel()
        await asyncio.gather(*self._detached, return_exceptions=True)

    async def follow(self, run_id: str, last_event_id: int) -> AsyncGenerator[RunEvent] | None:
        """Replay after `last_event_id`, then follow; None when the run is unknown."""
        events, owner, reader = _keys(run_id)
        if not await self.client.exists(events):
            return None
        return self._follow(events, owner, reader, last_event_id)

    async def _follow(
        self, events: str, owner: str, reader: str, last_id: int
    ) -> AsyncGenerator[RunEvent]:
        cursor = f"{last_id}-0"
        while True:
            await self.client.set(reader, "1", px=_OWNER_TTL_MS)
            reply: Any = await self.client.xread({events: cursor}, count=256, block=1000)
            entries = reply[0][1] if reply else []
            for entry_id, fields in entries:
                cursor = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
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
