"""Pinecone through its official SDK's async client (`pinecone.AsyncIndex`), by index host.

Texts travel in the metadata (`text`), as Pinecone keeps nothing else per vector; queries
ask for metadata, and `Match` keeps all of it but the text.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from rillet_runtime.retrieval.documents import Passage
from rillet_runtime.retrieval.embeddings import Vectors
from rillet_runtime.retrieval.errors import RetrievalConfigError
from rillet_runtime.retrieval.indexes.base import (
    IndexStats,
    Match,
    MetadataFilter,
    Record,
    check_filter,
    passage_of,
)
from rillet_runtime.settings import PineconeSettings

UPSERT_BATCH = 100  # Pinecone's advice: 2 MB or 1,000 vectors a request
DELETE_BATCH = 1000
TEXT = "text"


def _metadata(stored: dict[str, Any] | None) -> dict[str, str]:
    return {k: str(v) for k, v in (stored or {}).items() if k != TEXT}


class PineconeIndex:
    def __init__(self, settings: PineconeSettings) -> None:
        from pinecone import AsyncIndex

        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        if not (api_key or os.environ.get("PINECONE_API_KEY")):
            raise RetrievalConfigError(
                "retrieval.pinecone.api_key", "missing (from a Secret, or PINECONE_API_KEY)"
            )
        self._index = AsyncIndex(host=settings.host, api_key=api_key)
        self._namespace = settings.namespace
        self.host = settings.host

    async def upsert(self, records: Sequence[Record], vectors: Vectors) -> None:
        rows = [
            {"id": r.id, "values": v.tolist(), "metadata": {**r.metadata, TEXT: r.text}}
            for r, v in zip(records, vectors, strict=True)
        ]
        for start in range(0, len(rows), UPSERT_BATCH):
            await self._index.upsert(
                vectors=rows[start : start + UPSERT_BATCH], namespace=self._namespace
            )

    async def delete(self, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), DELETE_BATCH):
            await self._index.delete(
                ids=list(ids[start : start + DELETE_BATCH]), namespace=self._namespace
            )

    async def query(
        self,
        vector: Vectors,
        k: int,
        *,
        where: MetadataFilter | None = None,
        score_threshold: float | None = None,
    ) -> list[Match]:
        check_filter(where)
        response = await self._index.query(
            top_k=k,
            vector=vector.reshape(-1).tolist(),
            namespace=self._namespace,
            filter={key: {"$eq": value} for key, value in where.items()} if where else None,
            include_metadata=True,
        )
        return [
            Match(id=m.id, score=float(m.score), metadata=_metadata(m.metadata))
            for m in response.matches
            if score_threshold is None or m.score >= score_threshold
        ]

    async def fetch(self, ids: Sequence[str]) -> list[Passage]:
        if not ids:
            return []
        found = (await self._index.fetch(ids=list(ids), namespace=self._namespace)).vectors
        return [
            passage_of(
                i, str((found[i].metadata or {}).get(TEXT, "")), _metadata(found[i].metadata)
            )
            for i in ids
            if i in found
        ]

    async def list_ids(self) -> set[str]:
        ids: set[str] = set()
        async for page in self._index.list(namespace=self._namespace):
            ids.update(item.id for item in page.vectors if item.id)
        return ids

    async def stats(self) -> IndexStats:
        stats = await self._index.describe_index_stats()
        summary = stats.namespaces.get(self._namespace or "__default__")
        return IndexStats(
            count=summary.vector_count if summary else 0, dimensions=stats.dimension or 0
        )

    async def close(self) -> None:
        await self._index.close()
