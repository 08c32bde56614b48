"""Per-principal limits, shared by every worker and pod through Redis: concurrent streams,
requests per minute and model tokens per minute.

Rates use GCRA (the generic cell rate algorithm, as in redis-cell): one stored timestamp per
limit, a full minute's quota available at once, refilled smoothly. Requests are counted on
admission; tokens are only known when a run ends, so they are charged then and a principal
that overdrew its minute is refused until it is paid back. Open streams are a sorted set of
stream ids scored by expiry, renewed while the stream lives, so a crashed worker's streams
lapse on their own. Admission is one Lua script (one round trip, atomic) on keys that share
the principal's hash tag (one cluster slot). Without Redis the same rules run in memory,
per worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from rillet_runtime.settings import LimitsSettings

Reason = Literal["concurrent_streams", "requests_per_minute", "tokens_per_minute"]
WINDOW_MS = 60_000


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: Reason
    limit: int
    retry_after_seconds: float


def _keys(principal_key: str) -> list[str]:
    base = f"rillet:limit:{{{principal_key}}}"
    return [f"{base}:streams", f"{base}:requests", f"{base}:tokens"]


# KEYS: streams requests tokens. ARGV: stream_id max_streams stream_ttl_ms rpm tpm (0 = none).
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max_streams, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local rpm, tpm = tonumber(ARGV[4]), tonumber(ARGV[5])
if max_streams > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= max_streams then
    return {'concurrent_streams', 0}
  end
end
if tpm > 0 then
  local owed = tonumber(redis.call('GET', KEYS[3]) or '0') - now - 60000
  if owed > 0 then return {'tokens_per_minute', owed} end
end
if rpm > 0 then
  local interval = 60000 / rpm
  local tat = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now) + interval
  if tat - 60000 > now then return {'requests_per_minute', tat - 60000 - now} end
  redis.call('SET', KEYS[2], string.format('%.3f', tat), 'PX', math.max(1, math.ceil(tat - now)))
end
if max_streams > 0 then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return {'', 0}
"""

# KEYS: streams. ARGV: stream_id ttl_ms. Re-adds a stream that lapsed (Redis was away
# longer than its expiry), so a live stream is always counted.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: streams tokens. ARGV: stream_id tokens tpm (0 = none).
_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
local tokens, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
if tokens > 0 and tpm > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local tat = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now) + tokens * 60000 / tpm
  redis.call('SET', KEYS[2], string.format('%.3f', tat), 'PX', math.max(1, math.ceil(tat - now)))
end
return 1
"""


class Limiter(Protocol):
    async def admit(self, principal_key: str, stream_id: str) -> Refusal | None: ...

    async def renew(self, principal_key: str, stream_id: str) -> None: ...

    async def release(self, principal_key: str, stream_id: str, tokens: int) -> None: ...


def _refusal(settings: LimitsSettings, reason: Reason, wait_ms: float) -> Refusal:
    limit = getattr(settings, reason)
    assert isinstance(limit, int)
    return Refusal(reason, limit, max(wait_ms / 1000, 0.0))


@dataclass
class RedisLimiter:
    client: Any  # redis.asyncio.Redis or RedisCluster
    settings: LimitsSettings
    stream_ttl_ms: int

    async def admit(self, principal_key: str, stream_id: str) -> Refusal | None:
        s = self.settings
        if not (s.concurrent_streams or s.requests_per_minute or s.tokens_per_minute):
            return None  # no limits: no round trip
        reason, wait_ms = await self.client.eval(
            _ADMIT,
            3,
            *_keys(principal_key),
            stream_id,
            s.concurrent_streams or 0,
            self.stream_ttl_ms,
            s.requests_per_minute or 0,
            s.tokens_per_minute or 0,
        )
        reason = reason.decode() if isinstance(reason, bytes) else reason
        return _refusal(s, cast(Reason, reason), float(wait_ms)) if reason else None

    async def renew(self, principal_key: str, stream_id: str) -> None:
        if self.settings.concurrent_streams:
            streams = _keys(principal_key)[0]
            await self.client.eval(_RENEW, 1, streams, stream_id, self.stream_ttl_ms)

    async def release(self, principal_key: str, stream_id: str, tokens: int) -> None:
        tpm = self.settings.tokens_per_minute or 0
        if not (self.settings.concurrent_streams or tpm):
            return
        streams, _, token_key = _keys(principal_key)
        await self.client.eval(_RELEASE, 2, streams, token_key, stream_id, tokens, tpm)


@dataclass
class _Account:
    streams: set[str] = field(default_factory=set)
    requests_tat: float = 0.0
    tokens_tat: float = 0.0


def _now_ms() -> float:
    return time.monotonic() * 1000


@dataclass
class MemoryLimiter:
    """The same rules for one worker, when there is no Redis to share them through."""

    settings: LimitsSettings
    _accounts: dict[str, _Account] = field(default_factory=dict)

    async def admit(self, principal_key: str, stream_id: str) -> Refusal | None:
        s, now = self.settings, _now_ms()
        account = self._accounts.setdefault(principal_key, _Account())
        if s.concurrent_streams and len(account.streams) >= s.concurrent_streams:
            return _refusal(s, "concurrent_streams", 0)
        if s.tokens_per_minute and (owed := account.tokens_tat - now - WINDOW_MS) > 0:
            return _refusal(s, "tokens_per_minute", owed)
        if s.requests_per_minute:
            tat = max(account.requests_tat, now) + WINDOW_MS / s.requests_per_minute
            if tat - WINDOW_MS > now:
                return _refusal(s, "requests_per_minute", tat - WINDOW_MS - now)
            account.requests_tat = tat
        if s.concurrent_streams:
            account.streams.add(stream_id)
        return None

    async def renew(self, principal_key: str, stream_id: str) -> None:
        return None  # a worker's own streams cannot outlive it

    async def release(self, principal_key: str, stream_id: str, tokens: int) -> None:
        account = self._accounts.get(principal_key)
        if account is None:
            return
        account.streams.discard(stream_id)
        now = _now_ms()
        if tokens and self.settings.tokens_per_minute:
            interval = WINDOW_MS / self.settings.tokens_per_minute
            account.tokens_tat = max(account.tokens_tat, now) + tokens * interval
        if not account.streams and max(account.requests_tat, account.tokens_tat) < now:
            del self._accounts[principal_key]  # nothing owed: forget the principal
