"""What the async and the sync API share: the codec, reading replies back into LangGraph's
types, and every operation, written once as the Redis requests it makes.

An operation is a generator ("sans-IO"): it yields a request (a command, a pipeline or a
scan), is sent the reply, and returns its result; a request that failed raises where it was
yielded. It never touches a client, so aio.py runs it by awaiting each request and sync.py
by calling it: one code path per operation, two ways to send.
"""

from __future__ import annotations

import random
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import redis
import zstandard
from langchain_core.messages import AIMessage, HumanMessage, RemoveMessage, SystemMessage
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
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from rillet_runtime.events import (
    CheckpointCorrupt,
    CheckpointPruned,
    ThreadTooLarge,
    refused_for_memory,
    save_failed,
    saves_stopped,
)
from rillet_runtime.state.checkpoint import scripts
from rillet_runtime.state.checkpoint.keys import (
    NS_SET_PATTERN,
    ThreadKeys,
    escape,
    parse_run_member,
    run_key,
    run_member,
    text,
    thread_of_ns_set,
    unescape,
)

T = TypeVar("T")

Command: TypeAlias = tuple[Any, ...]  # as sent: ("SMEMBERS", key), ("EVAL", script, ...)


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Commands sent in one round trip, not as a transaction; the reply lists theirs."""

    commands: list[Command]


@dataclass(frozen=True, slots=True)
class Scan:
    """Every key matching a pattern, on every node of a cluster; the reply lists them."""

    match: str


Request: TypeAlias = Command | Pipeline | Scan
Operation: TypeAlias = Generator[Request, Any, T]
# A listing also yields each tuple it found between its requests, so callers get them lazily.
Listing: TypeAlias = Generator[Request | CheckpointTuple, Any, None]

_RAW, _ZSTD = b"r", b"z"
_EMPTY = b"empty\0" + _RAW  # a channel versioned but without a value
_LIST_BATCH = 20  # checkpoints read per pipeline when listing
_SAVE_FAILURES = (redis.ConnectionError, redis.TimeoutError)

# What Rillet's own graph and APIs keep in thread state besides plain data: messages
# (RemoveMessage trims the built-in graph's window). LangGraph's safe set holds them too;
# named here so they stay allowed whatever that set becomes.
CHAT_STATE_TYPES: tuple[type, ...] = (HumanMessage, AIMessage, SystemMessage, RemoveMessage)


def strict_serializer(allowed: Iterable[type | tuple[str, ...]] = ()) -> JsonPlusSerializer:
    """LangGraph's serializer in its strict mode, whatever LANGGRAPH_STRICT_MSGPACK says: a
    load constructs only LangGraph's safe types (messages, Send, Interrupt, datetimes...),
    the chat state's and `allowed`; any other type comes back as its plain data, and a
    pickle is refused. So bytes written into Redis by someone else cannot call code."""
    return JsonPlusSerializer(
        pickle_fallback=False, allowed_msgpack_modules=[*CHAT_STATE_TYPES, *allowed]
    )


class BaseRedisSaver(BaseCheckpointSaver[str]):
    """Settings, codec and operations; the clients belong to the faces."""

    def __init__(
        self,
        *,
        ttl_seconds: float | None = 7 * 24 * 3600,
        compress_min_bytes: int = 1024,
        keep_checkpoints: int = 0,
        max_thread_bytes: int = 0,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde or strict_serializer())
        self.ttl_ms = int(ttl_seconds * 1000) if ttl_seconds else 0
        self.compress_min_bytes = compress_min_bytes
        self.keep_checkpoints = keep_checkpoints  # per thread and namespace; 0: all
        self.max_thread_bytes = max_thread_bytes  # 0: no cap
        self._compressor = zstandard.ZstdCompressor(level=3)
        self._decompressor = zstandard.ZstdDecompressor()

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Same scheme as LangGraph's savers: sortable, with a random tiebreak."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(str(current).split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    # -- codec: LangGraph's serializer, zstd from a size up, a marker byte so reads know --

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

    # -- operations --------------------------------------------------------------------

    def _get_tuple(self, config: RunnableConfig) -> Operation[CheckpointTuple | None]:
        thread_id, checkpoint_ns = _thread_and_ns(config)
        cid = get_checkpoint_id(config) or ""  # '' reads the latest
        reply = yield self._get_command(thread_id, checkpoint_ns, cid)
        return self._tuple(thread_id, checkpoint_ns, reply)

    def _put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Operation[RunnableConfig]:
        """The run index, then the checkpoint and the values that changed in one script,
        which also drops what retention no longer keeps and holds the thread to its cap."""
        thread_id, checkpoint_ns = _thread_and_ns(config)
        keys = ThreadKeys(thread_id)
        stored = checkpoint.copy()
        values: dict[str, Any] = stored.pop("channel_values")  # type: ignore[misc]
        blob_pairs: list[Any] = []
        for channel, version in new_versions.items():
            value = self._encode(values[channel]) if channel in values else _EMPTY
            blob_pairs += [_blob_field(channel, version), value]
        referenced = "\1".join(
            _blob_field(channel, version)
            for channel, version in checkpoint["channel_versions"].items()
        )
        full_metadata = get_checkpoint_metadata(config, metadata)
        run_id = str(full_metadata.get("run_id") or "")
        put = _eval(
            scripts.PUT,
            [keys.ns_set, *keys.ns(checkpoint_ns), keys.info],
            keys.prefix,
            self.ttl_ms,
            escape(checkpoint_ns),
            checkpoint["id"],
            self._encode(stored),
            self._encode(full_metadata),
            config["configurable"].get("checkpoint_id") or "",
            referenced,
            run_id,
            self.keep_checkpoints,
            self.max_thread_bytes,
            len(new_versions),
            *blob_pairs,
        )
        requests: list[Request] = [put]
        if run_id:
            # Indexed first: a run whose save fails midway can still find all it wrote.
            member = run_member(thread_id, checkpoint_ns, checkpoint["id"])
            requests.insert(0, self._index_run(run_id, member))
        yield from _within_cap(thread_id, requests)
        return _config(thread_id, checkpoint_ns, checkpoint["id"])

    def _index_run(self, run_id: str, member: str) -> Pipeline:
        """Which checkpoints a run wrote, for `delete_for_runs`."""
        key = run_key(run_id)
        commands: list[Command] = [("SADD", key, member)]
        if self.ttl_ms:
            commands.append(("PEXPIRE", key, self.ttl_ms))
        return Pipeline(commands)

    def _put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> Operation[None]:
        thread_id, checkpoint_ns = _thread_and_ns(config)
        checkpoint_id = config["configurable"]["checkpoint_id"]
        triples: list[Any] = []
        for idx, (channel, value) in enumerate(writes):
            write_idx = WRITES_IDX_MAP.get(channel, idx)
            field = f"{checkpoint_id}\0{task_id}\0{write_idx}"
            payload = self._encode((task_path, channel, value))
            triples += [field, payload, "1" if write_idx < 0 else "0"]  # special writes replace
        keys = ThreadKeys(thread_id)
        _, _, _, writes_key, wfields = keys.ns(checkpoint_ns)
        put_writes = _eval(
            scripts.PUT_WRITES,
            [keys.ns_set, writes_key, wfields, keys.info],
            keys.prefix,
            self.ttl_ms,
            escape(checkpoint_ns),
            run_of(config),
            checkpoint_id,
            self.max_thread_bytes,
            len(writes),
            *triples,
        )
        yield from _within_cap(thread_id, [put_writes])

    def _list(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> Listing:
        """Newest first, namespace by namespace, a batch of checkpoints per round trip."""
        wanted_id = get_checkpoint_id(config) if config else None
        remaining = limit
        scope = yield from _list_scope(config)
        for thread_id, checkpoint_ns in scope:
            if wanted_id:
                ids = [wanted_id]
            else:
                idx = ThreadKeys(thread_id).ns(checkpoint_ns)[0]
                found = yield ("ZRANGE", idx, _upper(before), "-", "BYLEX", "REV")
                ids = [text(i) for i in found]
            for start in range(0, len(ids), _LIST_BATCH):
                batch = ids[start : start + _LIST_BATCH]
                replies = yield Pipeline(
                    [self._get_command(thread_id, checkpoint_ns, cid) for cid in batch]
                )
                for reply in replies:
                    tuple_ = self._tuple(thread_id, checkpoint_ns, reply)
                    if tuple_ is None or not _matches(tuple_, filter):
                        continue
                    if remaining is not None:
                        if remaining <= 0:
                            return
                        remaining -= 1
                    yield tuple_

    def _delete_thread(self, thread_id: str) -> Operation[None]:
        """Every key of the thread, then the thread's entries in the index of each run
        that wrote it."""
        keys = ThreadKeys(thread_id)
        runs = yield _eval(scripts.DELETE_THREAD, [keys.ns_set], keys.prefix)
        for run_id in runs:
            yield _eval(scripts.FORGET_RUN_THREAD, [run_key(text(run_id))], f"{thread_id}\0")

    def _delete_for_runs(self, run_ids: Sequence[str]) -> Operation[None]:
        for run_id in run_ids:
            members = yield ("SMEMBERS", run_key(run_id))
            for member in members:
                thread_id, checkpoint_ns, checkpoint_id = parse_run_member(member)
                keys = ThreadKeys(thread_id)
                script_keys = [*keys.ns(checkpoint_ns), keys.info]
                yield _eval(scripts.DELETE_CHECKPOINT, script_keys, checkpoint_id)
            yield ("DEL", run_key(run_id))

    def _thread_bytes(self, thread_id: str) -> Operation[int]:
        """What the thread holds, as the scripts count it (0: no such thread)."""
        keys = ThreadKeys(thread_id)
        held = yield _eval(scripts.THREAD_BYTES, [keys.ns_set, keys.info], keys.prefix)
        return int(held)

    def _copy_thread(self, source_thread_id: str, target_thread_id: str) -> Operation[None]:
        """DUMP and RESTORE key by key: the two threads live in different slots."""
        source, target = ThreadKeys(source_thread_id), ThreadKeys(target_thread_id)
        namespaces = yield from _namespaces(source_thread_id)
        yield from self._delete_thread(target_thread_id)
        for source_key, target_key in zip(
            source.all_keys(namespaces), target.all_keys(namespaces), strict=True
        ):
            dumped = yield ("DUMP", source_key)
            if dumped is not None:
                yield ("RESTORE", target_key, self.ttl_ms, dumped, "REPLACE")

    def _prune(self, thread_ids: Sequence[str], strategy: str) -> Operation[None]:
        """`keep_latest` keeps each namespace's newest checkpoint; not DeltaChannel-aware."""
        for thread_id in thread_ids:
            if strategy == "delete":
                yield from self._delete_thread(thread_id)
                continue
            keys = ThreadKeys(thread_id)
            namespaces = yield from _namespaces(thread_id)
            for checkpoint_ns in namespaces:
                script_keys = [*keys.ns(checkpoint_ns), keys.info]
                yield _eval(scripts.KEEP_LATEST, script_keys, escape(checkpoint_ns))

    # -- replies -----------------------------------------------------------------------

    def _get_command(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> Command:
        keys = ThreadKeys(thread_id)
        script_keys = [keys.ns_set, *keys.ns(checkpoint_ns), keys.info]
        return _eval(
            scripts.GET,
            script_keys,
            keys.prefix,
            self.ttl_ms,
            checkpoint_id,
            escape(checkpoint_ns),
        )

    def _tuple(self, thread_id: str, checkpoint_ns: str, reply: Any) -> CheckpointTuple | None:
        """A GET script's reply as LangGraph's tuple (None: no such checkpoint). A value the
        checkpoint references but Redis does not hold raises CheckpointCorrupt."""
        if not reply:
            return None
        at = (thread_id, checkpoint_ns, text(reply[0]) or "(latest)")
        if len(reply) == 3:  # asked for by id, dropped by retention
            raise CheckpointPruned(*at)
        if len(reply) == 2:  # a part of the thread is gone (see scripts.GET)
            raise CheckpointCorrupt(*at, text(reply[1]), "is missing")
        _, checkpoint_raw, metadata_raw, parent_raw, vfields, bvals, wfields, wvals = reply
        channel_values: dict[str, Any] = {}
        for field, value in zip(vfields, bvals, strict=True):
            channel = text(field).split("\0", 1)[0]
            if value != _EMPTY:
                part = f"the value of channel {channel!r}"
                channel_values[channel] = self._load(value, at, part, channel)
        pending: list[tuple[str, str, Any, str, int]] = []
        for field, value in zip(wfields, wvals, strict=True):
            _, task_id, write_idx = text(field).split("\0")
            part = f"pending write {write_idx} of task {task_id}"
            task_path, channel, decoded = self._load(value, at, part)
            pending.append((task_id, channel, decoded, task_path, int(write_idx)))
        pending.sort(key=lambda w: writes_sort_key(w[3], w[0], w[4]))
        parent = text(parent_raw or b"")
        checkpoint: Checkpoint = self._load(checkpoint_raw, at, "the checkpoint")
        return CheckpointTuple(
            config=_config(thread_id, checkpoint_ns, at[2]),
            checkpoint={**checkpoint, "channel_values": channel_values},
            metadata=self._load(metadata_raw, at, "its metadata"),
            parent_config=_config(thread_id, checkpoint_ns, parent) if parent else None,
            pending_writes=[(task_id, channel, value) for task_id, channel, value, _, _ in pending],
        )

    def _load(
        self,
        stored: bytes | None,
        at: tuple[str, str, str],
        part: str,
        channel: str | None = None,
    ) -> Any:
        """A stored value back, or CheckpointCorrupt naming what is wrong and where."""
        if stored is None:
            raise CheckpointCorrupt(*at, part, "is missing", channel)
        try:
            return self._decode(stored)
        except Exception as exc:
            reason = f"cannot be read ({type(exc).__name__}: {exc})"
            raise CheckpointCorrupt(*at, part, reason, channel) from exc


def _saving(requests: Sequence[Request]) -> Operation[None]:
    """A save that fails (Redis unreachable, or refusing writes at its memory limit) goes
    to `save_failed`: a streamed run notes it and finishes its answer, and writes nothing
    more; anywhere else it raises."""
    if saves_stopped():
        return
    try:
        for request in requests:  # noqa: UP028 (`yield from` a list cannot be sent replies)
            yield request
    except redis.RedisError as exc:
        if not (isinstance(exc, _SAVE_FAILURES) or refused_for_memory(exc)):
            raise
        save_failed(exc)


_TOO_LARGE = "THREAD_TOO_LARGE "  # the scripts' error reply: `THREAD_TOO_LARGE <bytes> <cap>`


def _within_cap(thread_id: str, requests: Sequence[Request]) -> Operation[None]:
    """`_saving`, where a write the thread's byte cap refused is a failed save too, as
    ThreadTooLarge (the script took back what the run had written before it)."""
    try:
        yield from _saving(requests)
    except redis.ResponseError as exc:
        reason = str(exc)
        if not reason.startswith(_TOO_LARGE):
            raise
        would_hold, limit = (int(part) for part in reason.removeprefix(_TOO_LARGE).split())
        save_failed(ThreadTooLarge(thread_id, would_hold, limit))


def run_of(config: RunnableConfig) -> str:
    """The run writing, found where checkpoint metadata finds it ('' when none is named)."""
    for source in (config.get("metadata"), config.get("configurable")):
        if source and (run_id := source.get("run_id")):
            return str(run_id)
    return ""


def _eval(script: str, keys: Sequence[str], *args: Any) -> Command:
    return ("EVAL", script, len(keys), *keys, *args)


def _namespaces(thread_id: str) -> Operation[list[str]]:
    """The root namespace always: if the set was lost, its checkpoints are still found (and
    read as corrupt), never skipped as if the thread had none."""
    members = yield ("SMEMBERS", ThreadKeys(thread_id).ns_set)
    names = [unescape(text(member)) for member in sorted(members)]
    return names if "" in names else ["", *names]


def _list_scope(config: RunnableConfig | None) -> Operation[list[tuple[str, str]]]:
    """The (thread, namespace) pairs a listing walks: the config's, or every thread's (SCAN:
    an admin operation, never on a request path)."""
    if config is None:
        ns_sets = yield Scan(NS_SET_PATTERN)
        thread_ids = [thread_of_ns_set(key) for key in ns_sets]
    else:
        thread_ids = [str(config["configurable"]["thread_id"])]
    wanted_ns = config["configurable"].get("checkpoint_ns") if config else None
    scope: list[tuple[str, str]] = []
    for thread_id in thread_ids:
        if wanted_ns is not None:
            scope.append((thread_id, wanted_ns))
        else:
            namespaces = yield from _namespaces(thread_id)
            scope += [(thread_id, ns) for ns in namespaces]
    return scope


def _thread_and_ns(config: RunnableConfig) -> tuple[str, str]:
    configurable = config["configurable"]
    return str(configurable["thread_id"]), configurable.get("checkpoint_ns", "")


def _config(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
        }
    }


def _blob_field(channel: str, version: Any) -> str:
    return f"{channel}\0{version}"


def _upper(before: RunnableConfig | None) -> str:
    """The exclusive upper bound of a newest-first listing."""
    before_id = get_checkpoint_id(before) if before else None
    return f"({before_id}" if before_id else "+"


def _matches(tuple_: CheckpointTuple, filter: dict[str, Any] | None) -> bool:
    return not filter or all(tuple_.metadata.get(k) == v for k, v in filter.items())
