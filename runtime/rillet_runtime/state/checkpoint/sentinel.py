"""Redis behind Sentinel: clients that find the master through the sentinels and follow it
through a failover.

redis-py's Sentinel pool asks the sentinels for the master each time it opens a connection
from the pool. But a command whose connection drops reconnects, inside its own retries, to
the address it had (redis/redis-py#3874: `connect_check_health` skips the sentinels), so it
knocks on the dead master until its retries run out. The connections here ask the sentinels
again on every reconnect, and the retries (connection errors only, with a jittered backoff)
last long enough to ride through a failover of `failover_seconds`. A timeout is not
retried: a Redis that hangs costs one socket timeout, as without sentinels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aredis
from redis.asyncio.connection import SSLConnection as AsyncSSLConnection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.asyncio.sentinel import SentinelManagedConnection as AsyncSentinelConnection
from redis.backoff import EqualJitterBackoff, NoBackoff
from redis.connection import SSLConnection
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

# Reconnects come 50 ms, 100 ms, 200 ms, then 250-500 ms apart: quick at first, and no
# storm of reconnects on the new master from every worker at once.
BACKOFF_BASE_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 0.5
MIN_RETRIES = 2  # as many as a client without sentinels gets


@dataclass(frozen=True)
class SentinelSet:
    """The sentinels that watch one master; their own credentials, if they have any."""

    master_name: str
    addresses: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    failover_seconds: float = 5.0


def failover_retries(seconds: float) -> int:
    """Retries whose backoff sleeps at least `seconds` in all (equal jitter sleeps between
    half and all of each step, so at most about twice that)."""
    retries, slept = 0, 0.0
    while slept < seconds:
        retries += 1
        slept += min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**retries) / 2
    return max(retries, MIN_RETRIES)


def _backoff() -> EqualJitterBackoff:
    return EqualJitterBackoff(cap=BACKOFF_CAP_SECONDS, base=BACKOFF_BASE_SECONDS)


def _master_options(url_options: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The URL's options for the master's connections (its host and port are the
    sentinels' to say), and whether they use TLS."""
    connection_class = url_options.pop("connection_class", None)
    url_options.pop("host", None)
    url_options.pop("port", None)
    if url_options.pop("path", None) is not None:
        raise ValueError("a unix:// URL cannot name a master found through sentinels")
    tls = connection_class is not None and issubclass(
        connection_class, SSLConnection | AsyncSSLConnection
    )
    return url_options, tls


def _sentinel_options(
    sentinels: SentinelSet, url_options: dict[str, Any], tls: bool, options: dict[str, Any]
) -> dict[str, Any]:
    """How to reach the sentinels: their own credentials, the URL's TLS, no retries (the
    next sentinel is the retry)."""
    tls_options = {k: v for k, v in url_options.items() if k.startswith("ssl_")}
    return {
        "socket_timeout": options["socket_timeout"],
        "socket_connect_timeout": options["socket_connect_timeout"],
        "username": sentinels.username,
        "password": sentinels.password,
        **({"ssl": True, **tls_options} if tls else {}),
        **{k: v for k, v in options.items() if k in {"lib_version", "driver_info"}},
    }


# -- async ----------------------------------------------------------------------------------


class _FollowingConnection(AsyncSentinelConnection):
    """Asks the sentinels where the master is on every reconnect, not only on the pool's."""

    _address_fresh = False

    async def connect_to(self, address: tuple[str, int]) -> None:
        self._address_fresh = True  # just asked: connect_check_health need not ask again
        try:
            await super().connect_to(address)  # type: ignore[no-untyped-call]
        finally:
            self._address_fresh = False

    async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        if not self.is_connected and not self._address_fresh:
            self.host, self.port = await self.connection_pool.get_master_address()
            kwargs["retry_socket_connect"] = False  # the command's retries ask again
        await super().connect_check_health(*args, **kwargs)


class _FollowingSSLConnection(_FollowingConnection, AsyncSSLConnection):
    pass


class _BlockingSentinelPool(AsyncSentinelPool, aredis.BlockingConnectionPool):
    """Bounded and blocking, as the pool without sentinels: under load a command waits for
    a connection instead of failing with "Too many connections"."""


class _AsyncMaster(aredis.Redis):
    """The master's client; closing it closes its connections to the sentinels too."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool: Any = self.connection_pool
        for sentinel in pool.sentinel_manager.sentinels:
            await sentinel.aclose()


def async_master(
    url: str,
    sentinels: SentinelSet,
    *,
    max_connections: int,
    pool_timeout: float,
    options: dict[str, Any],
) -> aredis.Redis:
    """A client of the master the sentinels name, following it through a failover."""
    master_options, tls = _master_options(dict(aredis.connection.parse_url(url)))
    no_retry = {"retry": AsyncRetry(NoBackoff(), 0)}
    manager: Any = AsyncSentinel(  # type: ignore[no-untyped-call]
        list(sentinels.addresses),
        sentinel_kwargs={**_sentinel_options(sentinels, master_options, tls, options), **no_retry},
    )
    retry = AsyncRetry(
        _backoff(), failover_retries(sentinels.failover_seconds), (redis.ConnectionError,)
    )
    client: aredis.Redis = manager.master_for(
        sentinels.master_name,
        redis_class=_AsyncMaster,
        connection_pool_class=_BlockingSentinelPool,
        connection_class=_FollowingSSLConnection if tls else _FollowingConnection,
        max_connections=max_connections,
        timeout=pool_timeout,
        retry=retry,
        **{**master_options, **options},
    )
    return client


# -- sync -----------------------------------------------------------------------------------


class _SyncFollowingConnection(SentinelManagedConnection):
    """`_FollowingConnection` for redis-py's sync client."""

    _address_fresh = False

    def connect_to(self, address: tuple[str, int]) -> None:
        self._address_fresh = True
        try:
            super().connect_to(address)  # type: ignore[no-untyped-call]
        finally:
            self._address_fresh = False

    def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        if self._sock is None and not self._address_fresh:
            self.host, self.port = self.connection_pool.get_master_address()
            kwargs["retry_socket_connect"] = False
        super().connect_check_health(*args, **kwargs)


class _SyncFollowingSSLConnection(_SyncFollowingConnection, SSLConnection):
    pass


class _SyncMaster(redis.Redis):
    """The master's client; closing it closes its connections to the sentinels too."""

    def close(self) -> None:
        super().close()
        pool: Any = self.connection_pool
        for sentinel in pool.sentinel_manager.sentinels:
            sentinel.close()


def sync_master(url: str, sentinels: SentinelSet, *, options: dict[str, Any]) -> redis.Redis:
    """`async_master` for the sync API (LangGraph's sync graph methods)."""
    url_options = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    master_options, tls = _master_options(dict(url_options))
    manager: Any = Sentinel(  # type: ignore[no-untyped-call]
        list(sentinels.addresses),
        sentinel_kwargs={
            **_sentinel_options(sentinels, master_options, tls, options),
            "retry": Retry(NoBackoff(), 0),
        },
    )
    retry = Retry(
        _backoff(), failover_retries(sentinels.failover_seconds), (redis.ConnectionError,)
    )
    client: redis.Redis = manager.master_for(
        sentinels.master_name,
        redis_class=_SyncMaster,
        connection_class=_SyncFollowingSSLConnection if tls else _SyncFollowingConnection,
        retry=retry,
        **{**master_options, **options},
    )
    return client
