"""A LangGraph checkpointer for plain Redis >= 6.2, Valkey and managed Redis, cluster mode too.

No Redis modules: hashes, sorted sets and Lua only. Every key of a thread carries the same
hash tag, `{thread}`, so a thread lives in one cluster slot and each operation is a single
atomic Lua script: a crash or a lost connection between writes cannot leave a checkpoint
that reads back without its channel values. Per thread and namespace:

    rillet:cp:{t}:ns            SET    namespaces of the thread
    rillet:cp:{t}:<ns>:idx      ZSET   checkpoint ids (score 0, ordered by id: newest last)
    rillet:cp:{t}:<ns>:cps      HASH   <id> checkpoint, <id>\\0m metadata, <id>\\0p parent,
                                       <id>\\0v the blob fields it references
    rillet:cp:{t}:<ns>:blobs    HASH   <channel>\\0<version> -> value, written once per version
    rillet:cp:{t}:<ns>:writes   HASH   <id>\\0<task>\\0<idx> -> pending write
    rillet:cp:{t}:<ns>:wfields  ZSET   the writes' fields, for lookup by checkpoint id

Values are LangGraph's serializer output, zstd-compressed above a threshold, with a one-byte
marker so reads know. Every access refreshes the whole thread's TTL.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aredis
import zstandard
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from rillet_runtime.events import save_failed

ROOT = "rillet:cp"
_NS_SUFFIXES = (":idx", ":cps", ":blobs", ":writes", ":wfields")
_RAW, _ZSTD = b"r", b"z"
_BATCH = 20

_TOUCH = """
local function touch(prefix, ns_set, ttl)
  if ttl <= 0 then return end
  redis.call('PEXPIRE', ns_set, ttl)
  for _, ns in ipairs(redis.call('SMEMBERS', ns_set)) do
    for _, suffix in ipairs({':idx', ':cps', ':blobs', ':writes', ':wfields'}) do
      redis.call('PEXPIRE', prefix .. ns .. suffix, ttl)
    end
  end
end
"""

# KEYS: ns_set idx cps blobs. ARGV: prefix ttl ns cid checkpoint metadata parent vfields n
#   then n pairs of (blob field, value).
_PUT = (
    _TOUCH
    + """
redis.call('SADD', KEYS[1], ARGV[3])
local n = tonumber(ARGV[9])
for i = 0, n - 1 do
  redis.call('HSET', KEYS[4], ARGV[10 + 2 * i], ARGV[11 + 2 * i])
end
local cid = ARGV[4]
redis.call('HSET', KEYS[3], cid, ARGV[5], cid .. '\\0m', ARGV[6], cid .. '\\0p', ARGV[7],
           cid .. '\\0v', ARGV[8])
redis.call('ZADD', KEYS[2], 0, cid)
touch(ARGV[1], KEYS[1], tonumber(ARGV[2]))
return 1
"""
)

# KEYS: ns_set writes wfields. ARGV: prefix ttl ns n then n triples (field, value, overwrite).
_PUT_WRITES = (
    _TOUCH
    + """
redis.call('SADD', KEYS[1], ARGV[3])
local n = tonumber(ARGV[4])
for i = 0, n - 1 do
  local field, value = ARGV[5 + 3 * i], ARGV[6 + 3 * i]
  if ARGV[7 + 3 * i] == '1' then
    redis.call('HSET', KEYS[2], field, value)
  else
    redis.call('HSETNX', KEYS[2], field, value)
  end
  redis.call('ZADD', KEYS[3], 0, field)
end
touch(ARGV[1], KEYS[1], tonumber(ARGV[2]))
return 1
"""
)

# KEYS: ns_set idx cps blobs writes wfields. ARGV: prefix ttl cid ('' = latest).
_GET = (
    _TOUCH
    + """
local cid = ARGV[3]
if cid == '' then
  local latest = redis.call('ZRANGE', KEYS[2], '+', '-', 'BYLEX', 'REV', 'LIMIT', 0, 1)
  if #latest == 0 then return false end
  cid = latest[1]
end
local rec = redis.call('HMGET', KEYS[3], cid, cid .. '\\0m', cid .. '\\0p', cid .. '\\0v')
if not rec[1] then return false end
local vfields = {}
for f in string.gmatch(rec[4], '[^\\1]+') do table.insert(vfields, f) end
local bvals = {}
if #vfields > 0 then bvals = redis.call('HMGET', KEYS[4], unpack(vfields)) end
local wf = redis.call('ZRANGE', KEYS[6], '[' .. cid .. '\\0', '[' .. cid .. '\\0\\255', 'BYLEX')
local wv = {}
if #wf > 0 then wv = redis.call('HMGET', KEYS[5], unpack(wf)) end
touch(ARGV[1], KEYS[1], tonumber(ARGV[2]))
return {cid, rec[1], rec[2], rec[3], vfields, bvals, wf, wv}
"""
)

# KEYS: ns_set. ARGV: prefix. Deletes every key of the thread (all share its slot).
_DELETE_THREAD = """
for _, ns in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  for _, suffix in ipairs({':idx', ':cps', ':blobs', ':writes', ':wfields'}) do
    redis.call('DEL', ARGV[1] .. ns .. suffix)
  end
end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: idx cps writes wfields. ARGV: cid. One checkpoint and its writes.
_DELETE_CHECKPOINT = """
local cid = ARGV[1]
redis.call('ZREM', KEYS[1], cid)
redis.call('HDEL', KEYS[2], cid, cid .. '\\0m', cid .. '\\0p', cid .. '\\0v')
local wf = redis.call('ZRANGE', KEYS[4], '[' .. cid .. '\\0', '[' .. cid .. '\\0\\255', 'BYLEX')
if #wf > 0 then
  redis.call('HDEL', KEYS[3], unpack(wf))
  redis.call('ZREM', KEYS[4], unpack(wf))
end
return 1
"""

# KEYS: idx cps blobs writes wfields. Keeps the newest checkpoint and the blobs it uses.
_KEEP_LATEST = """
local ids = redis.call('ZRANGE', KEYS[1], '+', '-', 'BYLEX', 'REV')
if #ids == 0 then return 0 end
local keep = {}
for f in string.gmatch(redis.call('HGET', KEYS[2], ids[1] .. '\\0v') or '', '[^\\1]+') do
  keep[f] = true
end
for i = 2, #ids do
  local cid = ids[i]
  redis.call('ZREM', KEYS[1], cid)
  redis.call('HDEL', KEYS[2], cid, cid .. '\\0m', cid .. '\\0p', cid .. '\\0v')
  local wf = redis.call('ZRANGE', KEYS[5], '[' .. cid .. '\\0', '[' .. cid .. '\\0\\255', 'BYLEX')
  if #wf > 0 then
    redis.call('HDEL', KEYS[4], unpack(wf))
    redis.call('ZREM', KEYS[5], unpack(wf))
  end
end
for _, field in ipairs(redis.call('HKEYS', KEYS[3])) do
  if not keep[field] then redis.call('HDEL', KEYS[3], field) end
end
return #ids - 1
"""


def _escape(part: str) -> str:
    """Keep `{`, `}` and `:` out of key parts so the hash tag and the layout stay intact."""
    return part.replace("%", "%25").replace("{", "%7B").replace("}", "%7D").replace(":", "%3A")


def _unescape(part: str) -> str:
    return part.replace("%3A", ":").replace("%7D", "}").replace("%7B", "{").replace("%25", "%")


@dataclass(frozen=True)
class ThreadKeys:
    thread_id: str

    @property
    def prefix(self) -> str:
        return f"{ROOT}:{{{_escape(self.thread_id)}}}:"

    @property
    def ns_set(self) -> str:
        return self.prefix + "ns"

    def ns(self, checkpoint_ns: str) -> list[str]:
        """idx, cps, blobs, writes, wfields of one namespace."""
        base = self.prefix + _escape(checkpoint_ns)
        return [base + suffix for suffix in _NS_SUFFIXES]

    def all_keys(self, namespaces: Sequence[str]) -> list[str]:
        return [self.ns_set, *(key for ns in namespaces for key in self.ns(ns))]


def _run_key(run_id: str) -> str:
    return f"{ROOT}:run:{{{_escape(run_id)}}}"


_Scope = list[tuple[str, str]]  # (thread id, namespace) pairs; `list` is a method below


def _upper(before: RunnableConfig | None) -> str:
    """The exclusive upper bound of a newest-first listing."""
    before_id = get_checkpoint_id(before) if before else None
    return f"({before_id}" if before_id else "+"


def _thread_of_ns_set(key: bytes | str) -> str:
    return _unescape(_text(key)[len(ROOT) + 2 : -len("}:ns")])


def _checkpoint_keys(member: bytes | str) -> list[str]:
    """idx, cps, writes, wfields and the id, from a run-index member."""
    thread_id, checkpoint_ns, checkpoint_id = _text(member).split("\0")
    idx, cps, _, writes, wfields = ThreadKeys(thread_id).ns(checkpoint_ns)
    return [idx, cps, writes, wfields, checkpoint_id]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


class RedisCheckpointSaver(BaseCheckpointSaver[str]):
    """`RedisCheckpointSaver.from_url("redis://...")`; async and sync APIs both work."""

    def __init__(
        self,
        client: aredis.Redis | aredis.RedisCluster,
        *,
        sync_client: redis.Redis | redis.RedisCluster | Callable[[], Any] | None = None,
        ttl_seconds: float | None = 7 * 24 * 3600,
        compress_min_bytes: int = 1024,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        # Any: redis-py's annotations mix sync and async return types on every command.
        self.client: Any = client
        # A factory is called on first sync use: a sync RedisCluster connects when built.
        self._sync_client: Any = sync_client
        self.ttl_ms = int(ttl_seconds * 1000) if ttl_seconds else 0
        self.compress_min_bytes = compress_min_bytes
        self._compressor = zstandard.ZstdCompressor(level=3)
        self._decompressor = zstandard.ZstdDecompressor()

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        socket_timeout: float = 2.0,
        connect_timeout: float = 1.0,
        max_connections: int = 64,
        **kwargs: Any,
    ) -> RedisCheckpointSaver:
        """A ready saver with its own pools (`aclose()` them, or use `connect`).

        Lost connections (a Redis restart or failover leaves stale ones in the pool) are
        retried twice with a short jittered backoff; timeouts are not, so a Redis that
        hangs costs one `socket_timeout`, not three. The async pool is bounded and
        blocking: under load a command waits (up to `socket_timeout`) for a connection
        instead of failing with "Too many connections".
        """
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout,
            "retry_on_error": [redis.ConnectionError],
        }
        backoff = ExponentialWithJitterBackoff(base=0.02, cap=0.25)
        async_client: Any
        if cluster:  # one pool per node, bounded the same way
            async_client = aredis.RedisCluster.from_url(
                url, retry=AsyncRetry(backoff, 2), max_connections=max_connections, **options
            )
        else:
            pool = aredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=socket_timeout,
                retry=AsyncRetry(backoff, 2),
                **options,
            )
            async_client = aredis.Redis.from_pool(pool)
        sync_cls = redis.RedisCluster if cluster else redis.Redis
        return cls(
            async_client,
            sync_client=lambda: sync_cls.from_url(url, retry=Retry(backoff, 2), **options),
            **kwargs,
        )

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: str, **kwargs: Any) -> AsyncIterator[RedisCheckpointSaver]:
        saver = cls.from_url(url, **kwargs)
        try:
            yield saver
        finally:
            await saver.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()
        if self._sync_client is not None and not callable(self._sync_client):
            self._sync_client.close()

    def _sync(self) -> Any:
        if self._sync_client is None:
            raise RuntimeError("this saver has no sync client: build it with from_url")
        if callable(self._sync_client):
            self._sync_client = self._sync_client()
        return self._sync_client

    # -- encoding -----------------------------------------------------------------------

    def _encode(self, value: Any) -> bytes:
        kind, data = self.serde.dumps_typed(value)
        if len(data) >= self.compress_min_bytes:
            return kind.encode() + b"\0" + _ZSTD + self._compressor.compress(data)
        return kind.encode() + b"\0" + _RAW + data

    def _decode(self, stored: bytes) -> Any:
        kind, _, rest = stored.partition(b"\0")
        marker, data = rest[:1], rest[1:]
        if marker == _ZSTD:
            data = self._decompressor.decompress(data)
        return self.serde.loads_typed((kind.decode(), data))

    def _put_args(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> tuple[list[str], list[Any], RunnableConfig, str | None]:
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        checkpoint_ns = configurable.get("checkpoint_ns", "")
        keys = ThreadKeys(thread_id)
        stored = checkpoint.copy()
        values: dict[str, Any] = stored.pop("channel_values")  # type: ignore[misc]
        blob_pairs: list[Any] = []
        for channel, version in new_versions.items():
            field = f"{channel}\0{version}"
            value = self._encode(values[channel]) if channel in values else b"empty\0" + _RAW
            blob_pairs += [field, value]
        referenced = "\1".join(
            f"{channel}\0{version}" for channel, version in checkpoint["channel_versions"].items()
        )
        full_metadata = get_checkpoint_metadata(config, metadata)
        run_id = full_metadata.get("run_id")
        idx, cps, blobs, _, _ = keys.ns(checkpoint_ns)
        args = [
            keys.prefix,
            self.ttl_ms,
            _escape(checkpoint_ns),
            checkpoint["id"],
            self._encode(stored),
            self._encode(full_metadata),
            configurable.get("checkpoint_id") or "",
            referenced,
            len(new_versions),
            *blob_pairs,
        ]
        next_config: RunnableConfig = {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": checkpoint["id"],
            }
        }
        return [keys.ns_set, idx, cps, blobs], args, next_config, str(run_id) if run_id else None

    def _writes_args(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> tuple[list[str], list[Any]]:
        configurable = config["configurable"]
        keys = ThreadKeys(str(configurable["thread_id"]))
        checkpoint_ns = configurable.get("checkpoint_ns", "")
        checkpoint_id = configurable["checkpoint_id"]
        triples: list[Any] = []
        for idx, (channel, value) in enumerate(writes):
            write_idx = WRITES_IDX_MAP.get(channel, idx)
            field = f"{checkpoint_id}\0{task_id}\0{write_idx}"
            payload = self._encode((task_path, channel, value))
            triples += [field, payload, "1" if write_idx < 0 else "0"]
        _, _, _, writes_key, wfields = keys.ns(checkpoint_ns)
        args = [keys.prefix, self.ttl_ms, _escape(checkpoint_ns), len(writes), *triples]
        return [keys.ns_set, writes_key, wfields], args

    @staticmethod
    def _get_keys(config: RunnableConfig) -> tuple[list[str], str, str, str]:
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        checkpoint_ns = configurable.get("checkpoint_ns", "")
        keys = ThreadKeys(thread_id)
        return [keys.ns_set, *keys.ns(checkpoint_ns)], keys.prefix, thread_id, checkpoint_ns

    def _tuple(self, thread_id: str, checkpoint_ns: str, reply: Any) -> CheckpointTuple | None:
        if not reply:
            return None
        cid_raw, checkpoint_raw, metadata_raw, parent_raw, vfields, bvals, wfields, wvals = reply
        channel_values: dict[str, Any] = {}
        for field, value in zip(vfields, bvals, strict=True):
            if value is None or value.startswith(b"empty\0"):
                continue
            channel_values[_text(field).split("\0", 1)[0]] = self._decode(value)
        pending: list[tuple[str, str, Any, str, int]] = []
        for field, value in zip(wfields, wvals, strict=True):
            if value is None:
                continue
            _, task_id, write_idx = _text(field).split("\0")
            task_path, channel, decoded = self._decode(value)
            pending.append((task_id, channel, decoded, task_path, int(write_idx)))
        pending.sort(key=lambda w: writes_sort_key(w[3], w[0], w[4]))
        checkpoint_id, parent = _text(cid_raw), _text(parent_raw or b"")

        def config_for(cid: str) -> RunnableConfig:
            return {
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": checkpoint_ns,
                    "checkpoint_id": cid,
                }
            }

        checkpoint: Checkpoint = self._decode(checkpoint_raw)
        return CheckpointTuple(
            config=config_for(checkpoint_id),
            checkpoint={**checkpoint, "channel_values": channel_values},
            metadata=self._decode(metadata_raw),
            parent_config=config_for(parent) if parent else None,
            pending_writes=[(task_id, channel, value) for task_id, channel, value, _, _ in pending],
        )

    @staticmethod
    def _matches(tuple_: CheckpointTuple, filter: dict[str, Any] | None) -> bool:
        return not filter or all(tuple_.metadata.get(k) == v for k, v in filter.items())

    # -- async API ----------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        keys, prefix, thread_id, checkpoint_ns = self._get_keys(config)
        args = [prefix, self.ttl_ms, get_checkpoint_id(config) or ""]
        reply = await self.client.eval(_GET, len(keys), *keys, *args)
        return self._tuple(thread_id, checkpoint_ns, reply)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        keys, args, next_config, run_id = self._put_args(config, checkpoint, metadata, new_versions)
        try:
            await self.client.eval(_PUT, len(keys), *keys, *args)
            if run_id:
                await self._index_run(run_id, next_config)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            save_failed(exc)
        return next_config

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        keys, args = self._writes_args(config, writes, task_id, task_path)
        try:
            await self.client.eval(_PUT_WRITES, len(keys), *keys, *args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            save_failed(exc)

    async def _index_run(self, run_id: str, config: RunnableConfig) -> None:
        c = config["configurable"]
        member = f"{c['thread_id']}\0{c['checkpoint_ns']}\0{c['checkpoint_id']}"
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(_run_key(run_id), member)
        if self.ttl_ms:
            pipe.pexpire(_run_key(run_id), self.ttl_ms)
        await pipe.execute()

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        remaining = limit
        for thread_id, checkpoint_ns in await self._alist_scope(config):
            if config and (checkpoint_id := get_checkpoint_id(config)):
                ids = [checkpoint_id]
            else:
                idx = ThreadKeys(thread_id).ns(checkpoint_ns)[0]
                found = await self.client.zrange(idx, _upper(before), "-", bylex=True, desc=True)
                ids = [_text(i) for i in found]
            for start in range(0, len(ids), _BATCH):
                pipe = self.client.pipeline(transaction=False)
                for command in self._get_commands(
                    thread_id, checkpoint_ns, ids[start : start + _BATCH]
                ):
                    pipe.eval(*command)
                for reply in await pipe.execute():
                    tuple_ = self._tuple(thread_id, checkpoint_ns, reply)
                    if tuple_ is None or not self._matches(tuple_, filter):
                        continue
                    if remaining is not None:
                        if remaining <= 0:
                            return
                        remaining -= 1
                    yield tuple_

    async def _alist_scope(self, config: RunnableConfig | None) -> _Scope:
        if config is None:
            keys = self.client.scan_iter(match=f"{ROOT}:{{*}}:ns", count=500)
            thread_ids = [_thread_of_ns_set(key) async for key in keys]
        else:
            thread_ids = [str(config["configurable"]["thread_id"])]
        scope = []
        wanted_ns = config["configurable"].get("checkpoint_ns") if config else None
        for thread_id in thread_ids:
            if wanted_ns is not None:
                scope.append((thread_id, wanted_ns))
                continue
            members = await self.client.smembers(ThreadKeys(thread_id).ns_set)
            scope += [(thread_id, _unescape(_text(m))) for m in sorted(members)]
        return scope

    def _get_commands(
        self, thread_id: str, checkpoint_ns: str, ids: Sequence[str]
    ) -> list[list[Any]]:
        keys = ThreadKeys(thread_id)
        all_keys = [keys.ns_set, *keys.ns(checkpoint_ns)]
        return [[_GET, len(all_keys), *all_keys, keys.prefix, self.ttl_ms, cid] for cid in ids]

    async def adelete_thread(self, thread_id: str) -> None:
        keys = ThreadKeys(thread_id)
        await self.client.eval(_DELETE_THREAD, 1, keys.ns_set, keys.prefix)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        for run_id in run_ids:
            members = await self.client.smembers(_run_key(run_id))
            for member in members:
                await self.client.eval(_DELETE_CHECKPOINT, 4, *_checkpoint_keys(member))
            await self.client.delete(_run_key(run_id))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """DUMP and RESTORE key by key: the two threads live in different slots."""
        source, target = ThreadKeys(source_thread_id), ThreadKeys(target_thread_id)
        namespaces = [_unescape(_text(m)) for m in await self.client.smembers(source.ns_set)]
        await self.adelete_thread(target_thread_id)
        ttl = self.ttl_ms
        for source_key, target_key in zip(
            source.all_keys(namespaces), target.all_keys(namespaces), strict=True
        ):
            dumped = await self.client.dump(source_key)
            if dumped is not None:
                await self.client.restore(target_key, ttl, dumped, replace=True)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """`keep_latest` keeps each namespace's newest checkpoint; not DeltaChannel-aware."""
        for thread_id in thread_ids:
            if strategy == "delete":
                await self.adelete_thread(thread_id)
                continue
            keys = ThreadKeys(thread_id)
            for member in await self.client.smembers(keys.ns_set):
                ns_keys = keys.ns(_unescape(_text(member)))
                await self.client.eval(_KEEP_LATEST, len(ns_keys), *ns_keys)

    # -- sync API: the same scripts through the sync client ------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        keys, prefix, thread_id, checkpoint_ns = self._get_keys(config)
        reply = self._sync().eval(
            _GET, len(keys), *keys, prefix, self.ttl_ms, get_checkpoint_id(config) or ""
        )
        return self._tuple(thread_id, checkpoint_ns, reply)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        keys, args, next_config, run_id = self._put_args(config, checkpoint, metadata, new_versions)
        client = self._sync()
        client.eval(_PUT, len(keys), *keys, *args)
        if run_id:
            c = next_config["configurable"]
            client.sadd(
                _run_key(run_id), f"{c['thread_id']}\0{c['checkpoint_ns']}\0{c['checkpoint_id']}"
            )
            if self.ttl_ms:
                client.pexpire(_run_key(run_id), self.ttl_ms)
        return next_config

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        keys, args = self._writes_args(config, writes, task_id, task_path)
        self._sync().eval(_PUT_WRITES, len(keys), *keys, *args)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        client = self._sync()
        remaining = limit
        for thread_id, checkpoint_ns in self._list_scope(config):
            if config and (checkpoint_id := get_checkpoint_id(config)):
                ids = [checkpoint_id]
            else:
                idx = ThreadKeys(thread_id).ns(checkpoint_ns)[0]
                ids = [
                    _text(i) for i in client.zrange(idx, _upper(before), "-", bylex=True, desc=True)
                ]
            for start in range(0, len(ids), _BATCH):
                pipe = client.pipeline(transaction=False)
                for command in self._get_commands(
                    thread_id, checkpoint_ns, ids[start : start + _BATCH]
                ):
                    pipe.eval(*command)
                for reply in pipe.execute():
                    tuple_ = self._tuple(thread_id, checkpoint_ns, reply)
                    if tuple_ is None or not self._matches(tuple_, filter):
                        continue
                    if remaining is not None:
                        if remaining <= 0:
                            return
                        remaining -= 1
                    yield tuple_

    def _list_scope(self, config: RunnableConfig | None) -> _Scope:
        client = self._sync()
        if config is None:
            keys = client.scan_iter(match=f"{ROOT}:{{*}}:ns", count=500)
            thread_ids = [_thread_of_ns_set(key) for key in keys]
        else:
            thread_ids = [str(config["configurable"]["thread_id"])]
        wanted_ns = config["configurable"].get("checkpoint_ns") if config else None
        scope: _Scope = []
        for thread_id in thread_ids:
            if wanted_ns is not None:
                scope.append((thread_id, wanted_ns))
            else:
                members = client.smembers(ThreadKeys(thread_id).ns_set)
                scope += [(thread_id, _unescape(_text(m))) for m in sorted(members)]
        return scope

    def delete_thread(self, thread_id: str) -> None:
        keys = ThreadKeys(thread_id)
        self._sync().eval(_DELETE_THREAD, 1, keys.ns_set, keys.prefix)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        client = self._sync()
        for run_id in run_ids:
            for member in client.smembers(_run_key(run_id)):
                client.eval(_DELETE_CHECKPOINT, 4, *_checkpoint_keys(member))
            client.delete(_run_key(run_id))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        client = self._sync()
        source, target = ThreadKeys(source_thread_id), ThreadKeys(target_thread_id)
        namespaces = [_unescape(_text(m)) for m in client.smembers(source.ns_set)]
        self.delete_thread(target_thread_id)
        for source_key, target_key in zip(
            source.all_keys(namespaces), target.all_keys(namespaces), strict=True
        ):
            dumped = client.dump(source_key)
            if dumped is not None:
                client.restore(target_key, self.ttl_ms, dumped, replace=True)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        client = self._sync()
        for thread_id in thread_ids:
            if strategy == "delete":
                self.delete_thread(thread_id)
                continue
            keys = ThreadKeys(thread_id)
            for member in client.smembers(keys.ns_set):
                ns_keys = keys.ns(_unescape(_text(member)))
                client.eval(_KEEP_LATEST, len(ns_keys), *ns_keys)

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Same scheme as LangGraph's savers: sortable, with a random tiebreak."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(str(current).split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"


__all__ = ["RedisCheckpointSaver", "ThreadKeys"]
