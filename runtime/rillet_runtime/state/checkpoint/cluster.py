"""Redis Cluster: redis-py's async cluster client, made to wait for a connection.

The plain client's blocking pool makes a command wait for a free connection; redis-py's
async RedisCluster instead fails it at once with MaxConnectionsError ("Too many
connections") when its node's connections are all busy, so a burst of runs on one worker
failed their saves. This client waits: at most `max_connections` requests (a command, or a
pipeline across nodes) are in flight at once, so no node ever needs more connections than
that, and a request waits up to `pool_timeout` for its turn, then fails with the blocking
pool's ConnectionError.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import ClusterPipeline

# The client's own topology refreshes (CLUSTER SLOTS after a MOVED) borrow a node's
# connection beside the requests in flight.
REFRESH_HEADROOM = 2

# Set while a request holds its turn: a pipeline that re-sends a command after a
# redirection goes through `execute_command` again, and must not wait for a second turn.
_IN_TURN: ContextVar[bool] = ContextVar("rillet_cluster_in_turn", default=False)


class WaitingRedisCluster(aredis.RedisCluster):
    def __init__(self, *, max_connections: int, pool_timeout: float, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections + REFRESH_HEADROOM, **kwargs)
        self._turns = asyncio.Semaphore(max_connections)
        self._pool_timeout = pool_timeout

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if _IN_TURN.get():
            yield
            return
        try:
            async with asyncio.timeout(self._pool_timeout):
                await self._turns.acquire()
        except TimeoutError:
            raise redis.ConnectionError("No connection available.") from None
        held = _IN_TURN.set(True)
        try:
            yield
        finally:
            _IN_TURN.reset(held)
            self._turns.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.turn():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if transaction or shard_hint:  # redis-py's own answer (a refusal, or MULTI)
            return super().pipeline(transaction, shard_hint)
        return _WaitingPipeline(self)  # type: ignore[abstract]  # as redis-py builds its own


class _WaitingPipeline(ClusterPipeline):
    """Sent in one turn, whichever nodes its commands go to."""

    def __init__(self, client: WaitingRedisCluster) -> None:
        super().__init__(client)
        self._waiting_client = client

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        async with self._waiting_client.turn():
            return await super().execute(*args, **kwargs)
