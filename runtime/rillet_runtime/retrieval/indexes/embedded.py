"""The embedded index: HNSW vectors in a usearch file, texts and metadata in SQLite.

Serving opens the vectors file as a memory-mapped view, so every gunicorn worker of a pod
reads the same pages from the page cache (docs/design/2026-11-25-embedded-index-library.md
measured 210 MiB for four workers against 492 MiB for four copies), and SQLite read-only;
texts are read by id for the hits only. `rillet ingest` opens it writable, and `save`
replaces the vectors file atomically before committing the rows, so a crash leaves at
worst vectors without rows, which queries skip and the next ingest writes again.

SQLite's calls block: the async methods do their whole work (a query's search and rows
together, one hop a call) on the index's own thread, the one user of the connection once
it is open (`offload.OwnThread` says why not `asyncio.to_thread` or aiosqlite).

A folder holds `manifest.json` (the embedding model and HNSW settings it was built with),
`vectors.usearch`, `chunks.sqlite` and, for hybrid search, `keyword/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from usearch.index import Index

from rillet_runtime.offload import OwnThread
from rillet_runtime.retrieval.documents import Passage
from rillet_runtime.retrieval.embeddings import Vectors, normalise
from rillet_runtime.retrieval.errors import RetrievalConfigError
from rillet_runtime.retrieval.indexes.base import (
    IndexStats,
    Match,
    MetadataFilter,
    Record,
    check_dimensions,
    check_filter,
    passage_of,
)

MANIFEST = "manifest.json"
VECTORS = "vectors.usearch"
CHUNKS = "chunks.sqlite"
FORMAT = 1
# A filter matching at most this many chunks is answered by exact search over just those
# (always complete); a broader one over-fetches from the graph and filters the hits.
EXACT_FILTER_LIMIT = 4096
OVERFETCH = 10
_SETTING = "retrieval.embedded.path"


@dataclass(frozen=True)
class Manifest:
    embedding_model: str
    dimensions: int
    m: int
    ef_construction: int
    dtype: str = "f16"
    metric: str = "cos"
    format: int = FORMAT


def key_of(id_: str) -> int:
    """A stable 63-bit key from the string id: no id table to keep in step."""
    return int.from_bytes(hashlib.sha256(id_.encode()).digest()[:8], "big") >> 1


def read_manifest(path: Path) -> Manifest:
    manifest_file = path / MANIFEST
    try:
        raw = json.loads(manifest_file.read_text(encoding="utf-8"))
        manifest = Manifest(**raw)
    except FileNotFoundError:
        raise RetrievalConfigError(
            _SETTING, f"{path} holds no index ({MANIFEST} missing): build it with `rillet ingest`"
        ) from None
    except (OSError, ValueError, TypeError) as exc:
        raise RetrievalConfigError(_SETTING, f"cannot read {manifest_file}: {exc}") from None
    if manifest.format != FORMAT:
        raise RetrievalConfigError(
            _SETTING, f"{path} is index format {manifest.format}; this Rillet reads {FORMAT}"
        )
    return manifest


class EmbeddedIndex:
    def __init__(
        self, path: Path, manifest: Manifest, index: Index, db: sqlite3.Connection, writable: bool
    ) -> None:
        self.path = path
        self.manifest = manifest
        self._index = index
        self._db = db
        self._writable = writable
        self._thread = OwnThread("rillet-index")

    @classmethod
    def open_readonly(cls, path: Path, ef_search: int) -> EmbeddedIndex:
        manifest = read_manifest(path)
        try:
            index = Index.restore(str(path / VECTORS), view=True)
            db = sqlite3.connect(f"file:{path / CHUNKS}?mode=ro", uri=True, check_same_thread=False)
            db.execute("SELECT count(*) FROM chunks").fetchone()
        except (OSError, RuntimeError, ValueError, sqlite3.Error) as exc:
            raise RetrievalConfigError(
                _SETTING, f"cannot open the index in {path}: {exc}"
            ) from None
        if index is None:
            raise RetrievalConfigError(_SETTING, f"{path / VECTORS} is not a usearch index")
        index.expansion_search = ef_search  # type: ignore[misc]  # a setter the stubs miss
        return cls(path, manifest, index, db, writable=False)

    @classmethod
    def open_writable(cls, path: Path, manifest: Manifest, ef_search: int = 64) -> EmbeddedIndex:
        """Open for `rillet ingest`, creating the folder; refuse one built differently."""
        path.mkdir(parents=True, exist_ok=True)
        if (path / MANIFEST).exists():
            existing = read_manifest(path)
            if (existing.embedding_model, existing.dimensions) != (
                manifest.embedding_model,
                manifest.dimensions,
            ):
                raise RetrievalConfigError(
                    "embeddings",
                    f"{path} was built with {existing.embedding_model} "
                    f"({existing.dimensions} dimensions), not {manifest.embedding_model} "
                    f"({manifest.dimensions}); ingest into a new folder",
                )
            manifest = existing
        else:
            (path / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2), encoding="utf-8")
        index = Index(
            ndim=manifest.dimensions,
            metric=manifest.metric,
            dtype=manifest.dtype,
            connectivity=manifest.m,
            expansion_add=manifest.ef_construction,
            expansion_search=ef_search,
        )
        if (path / VECTORS).exists():
            index.load(str(path / VECTORS))
        db = sqlite3.connect(path / CHUNKS, check_same_thread=False)
        db.execute(
            "CREATE TABLE IF NOT EXISTS chunks (key INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL,"
            " text TEXT NOT NULL, metadata TEXT NOT NULL)"
        )
        return cls(path, manifest, index, db, writable=True)

    # -- writes (ingest) ------------------------------------------------------------

    async def upsert(self, records: Sequence[Record], vectors: Vectors) -> None:
        self._require_writable()
        check_dimensions(vectors, self.manifest.dimensions, "embeddings")
        await self._thread.run(self._upsert, records, vectors)

    def _upsert(self, records: Sequence[Record], vectors: Vectors) -> None:
        keys = np.array([key_of(r.id) for r in records], dtype=np.uint64)
        self._remove_keys(keys)
        self._index.add(keys, normalise(vectors))
        self._db.executemany(
            "INSERT OR REPLACE INTO chunks (key, id, text, metadata) VALUES (?, ?, ?, ?)",
            [
                (int(k), r.id, r.text, json.dumps(r.metadata, sort_keys=True))
                for k, r in zip(keys, records, strict=True)
            ],
        )

    async def delete(self, ids: Sequence[str]) -> None:
        self._require_writable()
        await self._thread.run(self._delete, ids)

    def _delete(self, ids: Sequence[str]) -> None:
        keys = np.array([key_of(i) for i in ids], dtype=np.uint64)
        self._remove_keys(keys)
        self._db.executemany("DELETE FROM chunks WHERE key = ?", [(int(k),) for k in keys])

    def _remove_keys(self, keys: np.ndarray[Any, Any]) -> None:
        if len(keys) and len(self._index):
            present = keys[np.asarray(self._index.contains(keys), dtype=bool)]
            if len(present):
                self._index.remove(present)

    def save(self) -> None:
        """Vectors first (atomic rename), rows second: see the module docstring."""
        self._require_writable()
        target = self.path / VECTORS
        partial = target.with_name(VECTORS + ".partial")
        self._index.save(str(partial))
        os.replace(partial, target)
        self._db.commit()

    def _require_writable(self) -> None:
        if not self._writable:
            raise RuntimeError("the embedded index is open read-only (serving); use rillet ingest")

    # -- reads ------------------------------------------------------------------------

    async def query(
        self,
        vector: Vectors,
        k: int,
        *,
        where: MetadataFilter | None = None,
        score_threshold: float | None = None,
    ) -> list[Match]:
        check_filter(where)
        check_dimensions(vector.reshape(1, -1), self.manifest.dimensions, "embeddings")
        return await self._thread.run(self._query, vector, k, where, score_threshold)

    def _query(
        self,
        vector: Vectors,
        k: int,
        where: MetadataFilter | None,
        score_threshold: float | None,
    ) -> list[Match]:
        query = normalise(vector.reshape(1, -1))[0]
        if where:
            scored = self._filtered(query, k, where)
        else:
            found = self._index.search(query, min(k, max(len(self._index), 1)))
            scored = [
                (int(key), 1.0 - float(d))
                for key, d in zip(found.keys, found.distances, strict=True)
            ]
        if score_threshold is not None:
            scored = [(key, s) for key, s in scored if s >= score_threshold]
        rows = self._rows("key, id, metadata", [key for key, _ in scored])
        by_key = {row[0]: row for row in rows}
        return [
            Match(id=by_key[key][1], score=round(score, 6), metadata=json.loads(by_key[key][2]))
            for key, score in scored[:k]
            if key in by_key  # vectors without rows: an interrupted ingest (module docstring)
        ]

    def _filtered(self, query: Vectors, k: int, where: MetadataFilter) -> list[tuple[int, float]]:
        clause = " AND ".join("json_extract(metadata, ?) = ?" for _ in where)
        params: list[str] = []
        for field, value in where.items():
            params += [f"$.{field}", value]
        keys = [
            row[0]
            for row in self._db.execute(
                f"SELECT key FROM chunks WHERE {clause} LIMIT {EXACT_FILTER_LIMIT + 1}", params
            )
        ]
        if len(keys) <= EXACT_FILTER_LIMIT:
            if not keys:
                return []
            stored = self._index.get(np.array(keys, dtype=np.uint64), dtype="f32")
            scores = normalise(np.asarray(stored)) @ query
            order = np.argsort(-scores)[:k]
            return [(keys[i], float(scores[i])) for i in order]
        found = self._index.search(query, min(k * OVERFETCH, len(self._index)))
        if not len(found.keys):
            return []
        allowed = {
            row[0]
            for row in self._db.execute(
                f"SELECT key FROM chunks WHERE {clause} AND key IN "
                f"({','.join('?' * len(found.keys))})",
                [*params, *(int(key) for key in found.keys)],
            )
        }
        return [
            (int(key), 1.0 - float(d))
            for key, d in zip(found.keys, found.distances, strict=True)
            if int(key) in allowed
        ]

    def _rows(self, columns: str, keys: Iterable[int]) -> list[tuple[Any, ...]]:
        wanted = list(keys)
        if not wanted:
            return []
        placeholders = ",".join("?" * len(wanted))
        return self._db.execute(
            f"SELECT {columns} FROM chunks WHERE key IN ({placeholders})", wanted
        ).fetchall()

    async def fetch(self, ids: Sequence[str]) -> list[Passage]:
        return await self._thread.run(self._fetch, ids)

    def _fetch(self, ids: Sequence[str]) -> list[Passage]:
        rows = {row[0]: row for row in self._rows("id, text, metadata", map(key_of, ids))}
        return [passage_of(i, rows[i][1], json.loads(rows[i][2])) for i in ids if i in rows]

    async def list_ids(self) -> set[str]:
        return await self._thread.run(self._list_ids)

    def _list_ids(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT id FROM chunks")}

    def iter_texts(self) -> Iterable[tuple[str, str, str]]:
        """(id, title, text) of every chunk, for building the keyword index."""
        for id_, text, metadata in self._db.execute(
            "SELECT id, text, metadata FROM chunks ORDER BY key"
        ):
            yield id_, json.loads(metadata).get("title", ""), text

    async def stats(self) -> IndexStats:
        return IndexStats(count=len(self._index), dimensions=self.manifest.dimensions)

    async def close(self) -> None:
        await self._thread.run(self._db.close)
        self._thread.close()
