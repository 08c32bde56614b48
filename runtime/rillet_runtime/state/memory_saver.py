"""LangGraph's InMemorySaver with the bounds the Redis saver keeps (state/checkpoint/scripts.py),
so `make run` and a Redis-less pod behave as production does: retention keeps the newest
checkpoints of each thread and namespace, the bytes a thread holds are counted as it is
written, a write past the cap is refused with the run's earlier checkpoints taken back, and a
read by id of a dropped checkpoint raises instead of finding nothing.

Sizes are the serialized checkpoints, metadata, values and pending writes; Redis counts its
field names too, so the two totals differ by a little.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.base import SerializerProtocol

from rillet_runtime.events import CheckpointPruned, ThreadTooLarge, save_failed, saves_stopped
from rillet_runtime.state.checkpoint.base import run_of

Stored = tuple[str, bytes]  # what LangGraph's serializer gives: (type, bytes)


def retained(
    newest_first: Sequence[str], written: str, run: str, run_of: Callable[[str], str], keep: int
) -> tuple[list[str], list[str]]:
    """Which checkpoints go when `written` (of `run`) is saved, `keep` (> 0) being kept: all
    but the newest `keep`, never `written`, and never the newest one from before the run
    (where a rollback or a refused save leaves the thread). Returns the dropped ids (newest
    first) and the kept ones other than `written`. The Redis script `retention` does the
    same."""
    if keep <= 0 or len(newest_first) <= keep:
        return [], []
    before_run = (
        next((cid for cid in newest_first if cid != written and run_of(cid) != run), None)
        if run
        else None
    )
    dropped: list[str] = []
    kept: list[str] = []
    for rank, cid in enumerate(newest_first, 1):
        if cid == written:
            continue
        (kept if rank <= keep or cid == before_run else dropped).append(cid)
    return dropped, kept


@dataclass
class _Book:
    """What a thread's bounds need to know of it, beside InMemorySaver's own storage."""

    bytes: int = 0
    runs: dict[tuple[str, str], str] = field(default_factory=dict)  # (ns, id) -> run
    refs: dict[tuple[str, str], frozenset[tuple[str, Any]]] = field(default_factory=dict)
    blobs: dict[str, set[tuple[str, Any]]] = field(default_factory=dict)  # ns -> (ch, version)
    pruned: dict[str, str] = field(default_factory=dict)  # ns -> newest dropped id
    # The last refused save: its run (refused from then on), or for an unnamed run the
    # checkpoint never saved that its later ones follow; and the size it would have had.
    refused_run: str = ""
    refused_checkpoint: str = ""
    refused_size: int = 0

    def still_refused(self, run: str, after: str | None, unsaved: str) -> bool:
        """A write of the refused run, or of an unnamed one following the refused chain."""
        if run:
            return run == self.refused_run
        if after and after == self.refused_checkpoint:
            self.refused_checkpoint = unsaved
            return True
        return False


def _size(stored: Stored) -> int:
    return len(stored[1])


class BoundedMemorySaver(InMemorySaver):
    """`keep_checkpoints` (per thread and namespace, 0: all) and `max_thread_bytes` (0: no
    cap), as the Redis saver takes them."""

    def __init__(
        self, *, serde: SerializerProtocol, keep_checkpoints: int = 0, max_thread_bytes: int = 0
    ) -> None:
        super().__init__(serde=serde)
        self.keep_checkpoints = keep_checkpoints
        self.max_thread_bytes = max_thread_bytes
        self._books: dict[str, _Book] = {}

    # A DeltaChannel's history walks the parents through get_tuple, so a parent retention
    # dropped raises CheckpointPruned instead of silently ending the walk (InMemorySaver's
    # own walk stops at a missing parent and would read the channel as empty).
    get_delta_channel_history = BaseCheckpointSaver.get_delta_channel_history
    aget_delta_channel_history = BaseCheckpointSaver.aget_delta_channel_history

    async def athread_bytes(self, thread_id: str) -> int:
        book = self._books.get(str(thread_id))
        return book.bytes if book else 0

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        found = super().get_tuple(config)
        checkpoint_id = get_checkpoint_id(config)
        if found is None and checkpoint_id:
            thread_id, checkpoint_ns = _thread_and_ns(config)
            book = self._books.get(thread_id)
            pruned = book.pruned.get(checkpoint_ns) if book else None
            if pruned is not None and checkpoint_id <= pruned:
                raise CheckpointPruned(thread_id, checkpoint_ns, checkpoint_id)
        return found

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """InMemorySaver's put, measured first: written only within the cap, and what
        retention no longer keeps goes in the same call."""
        thread_id, checkpoint_ns = _thread_and_ns(config)
        cid = checkpoint["id"]
        saved: RunnableConfig = {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": cid,
            }
        }
        if saves_stopped():
            return saved
        full_metadata = get_checkpoint_metadata(config, metadata)
        run = str(full_metadata.get("run_id") or "")
        stored = checkpoint.copy()
        values: dict[str, Any] = stored.pop("channel_values")  # type: ignore[misc]
        new_blobs: dict[tuple[str, Any], Stored] = {
            (channel, version): (
                self.serde.dumps_typed(values[channel]) if channel in values else ("empty", b"")
            )
            for channel, version in new_versions.items()
        }
        record = (
            self.serde.dumps_typed(stored),
            self.serde.dumps_typed(full_metadata),
            config["configurable"].get("checkpoint_id"),
        )
        refs = frozenset(checkpoint["channel_versions"].items())
        book = self._books.setdefault(thread_id, _Book())
        if book.still_refused(run, record[2], cid):
            save_failed(ThreadTooLarge(thread_id, book.refused_size, self.max_thread_bytes))
            return saved
        checkpoints = self.storage[thread_id][checkpoint_ns]

        added = _size(record[0]) + _size(record[1])
        if cid in checkpoints:
            added -= self._record_bytes(thread_id, checkpoint_ns, cid)
        for (channel, version), blob in new_blobs.items():
            old = self.blobs.get((thread_id, checkpoint_ns, channel, version))
            added += _size(blob) - (_size(old) if old else 0)
        newest_first = sorted({*checkpoints, cid}, reverse=True) if self.keep_checkpoints else []
        dropped, kept = retained(
            newest_first,
            cid,
            run,
            lambda other: book.runs.get((checkpoint_ns, other), ""),
            self.keep_checkpoints,
        )
        freed = sum(self._checkpoint_bytes(thread_id, checkpoint_ns, d) for d in dropped)
        unused: list[tuple[str, Any]] = []
        if dropped:
            unused = self._unreferenced(thread_id, checkpoint_ns, kept, refs)
            freed += sum(self._blob_bytes(thread_id, checkpoint_ns, blob) for blob in unused)
        holds = book.bytes + added - freed
        if self.max_thread_bytes and holds > self.max_thread_bytes:
            self._refuse(thread_id, run, cid, holds)
            return saved

        for (channel, version), blob in new_blobs.items():
            self.blobs[(thread_id, checkpoint_ns, channel, version)] = blob
        book.blobs.setdefault(checkpoint_ns, set()).update(new_blobs)
        checkpoints[cid] = record
        book.runs[(checkpoint_ns, cid)] = run
        book.refs[(checkpoint_ns, cid)] = refs
        for gone in dropped:
            self._drop(thread_id, checkpoint_ns, gone)
        self._delete_blobs(thread_id, checkpoint_ns, unused)
        if dropped and dropped[0] > book.pruned.get(checkpoint_ns, ""):
            book.pruned[checkpoint_ns] = dropped[0]
        book.bytes = holds
        return saved

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """InMemorySaver's, taken back if it grew the thread past its cap."""
        if saves_stopped():
            return
        thread_id, checkpoint_ns = _thread_and_ns(config)
        cid, run = config["configurable"]["checkpoint_id"], run_of(config)
        book = self._books.setdefault(thread_id, _Book())
        if book.still_refused(run, cid, cid):
            save_failed(ThreadTooLarge(thread_id, book.refused_size, self.max_thread_bytes))
            return
        key = (thread_id, checkpoint_ns, cid)
        before = dict(self.writes.get(key, {}))
        super().put_writes(config, writes, task_id, task_path)
        added = _writes_bytes(self.writes.get(key, {})) - _writes_bytes(before)
        if self.max_thread_bytes and book.bytes + added > self.max_thread_bytes:
            self.writes[key] = before
            if not before:
                del self.writes[key]
            self._refuse(thread_id, run, "", book.bytes + added)
            return
        book.bytes += added

    def delete_thread(self, thread_id: str) -> None:
        super().delete_thread(thread_id)
        self._books.pop(str(thread_id), None)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """What a `rollback` needs and InMemorySaver lacks: forget the checkpoints (with
        their pending writes and the values only they used) that these runs wrote."""
        doomed = set(run_ids)
        for thread_id, book in self._books.items():
            self._drop_runs(thread_id, book, lambda run: run in doomed)

    # -- bookkeeping --------------------------------------------------------------------

    def _refuse(self, thread_id: str, run: str, unsaved: str, would_hold: int) -> None:
        """Over the cap: the run's checkpoints go, in every namespace, so the thread is as
        before the run, and the run stays refused (LangGraph may go on writing after a
        failed write; what it writes would reference values that went)."""
        book = self._books[thread_id]
        book.refused_run, book.refused_checkpoint, book.refused_size = run, unsaved, would_hold
        if run:
            self._drop_runs(thread_id, book, lambda other: other == run)
        save_failed(ThreadTooLarge(thread_id, would_hold, self.max_thread_bytes))

    def _drop_runs(self, thread_id: str, book: _Book, doomed: Callable[[str], bool]) -> None:
        for checkpoint_ns in {ns for ns, _ in book.runs}:
            gone = [
                cid for (ns, cid), run in book.runs.items() if ns == checkpoint_ns and doomed(run)
            ]
            if not gone:
                continue
            for cid in gone:
                book.bytes -= self._checkpoint_bytes(thread_id, checkpoint_ns, cid)
                self._drop(thread_id, checkpoint_ns, cid)
            kept = list(self.storage[thread_id][checkpoint_ns])
            unused = self._unreferenced(thread_id, checkpoint_ns, kept, frozenset())
            book.bytes -= sum(self._blob_bytes(thread_id, checkpoint_ns, b) for b in unused)
            self._delete_blobs(thread_id, checkpoint_ns, unused)

    def _record_bytes(self, thread_id: str, checkpoint_ns: str, cid: str) -> int:
        record = self.storage[thread_id][checkpoint_ns].get(cid)
        return _size(record[0]) + _size(record[1]) if record else 0

    def _checkpoint_bytes(self, thread_id: str, checkpoint_ns: str, cid: str) -> int:
        writes = self.writes.get((thread_id, checkpoint_ns, cid), {})
        return self._record_bytes(thread_id, checkpoint_ns, cid) + _writes_bytes(writes)

    def _blob_bytes(self, thread_id: str, checkpoint_ns: str, blob: tuple[str, Any]) -> int:
        stored = self.blobs.get((thread_id, checkpoint_ns, *blob))
        return _size(stored) if stored else 0

    def _drop(self, thread_id: str, checkpoint_ns: str, cid: str) -> None:
        book = self._books[thread_id]
        self.storage[thread_id][checkpoint_ns].pop(cid, None)
        self.writes.pop((thread_id, checkpoint_ns, cid), None)
        book.runs.pop((checkpoint_ns, cid), None)
        book.refs.pop((checkpoint_ns, cid), None)

    def _unreferenced(
        self,
        thread_id: str,
        checkpoint_ns: str,
        kept: Sequence[str],
        extra: frozenset[tuple[str, Any]],
    ) -> list[tuple[str, Any]]:
        book = self._books[thread_id]
        used = set(extra).union(*(book.refs.get((checkpoint_ns, cid), ()) for cid in kept))
        return [blob for blob in book.blobs.get(checkpoint_ns, ()) if blob not in used]

    def _delete_blobs(
        self, thread_id: str, checkpoint_ns: str, blobs: Sequence[tuple[str, Any]]
    ) -> None:
        known = self._books[thread_id].blobs.get(checkpoint_ns, set())
        for blob in blobs:
            self.blobs.pop((thread_id, checkpoint_ns, *blob), None)
            known.discard(blob)


def _writes_bytes(writes: dict[Any, tuple[str, str, Stored, str]]) -> int:
    return sum(_size(stored) for _, _, stored, _ in writes.values())


def _thread_and_ns(config: RunnableConfig) -> tuple[str, str]:
    configurable = config["configurable"]
    return str(configurable["thread_id"]), configurable.get("checkpoint_ns", "")
