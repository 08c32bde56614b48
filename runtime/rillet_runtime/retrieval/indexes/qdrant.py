"""Qdrant through `qdrant-client`'s async client: a server URL, or its local mode.

Qdrant point ids are integers or UUIDs, so each chunk id maps to a UUID5 and the chunk id
rides in the payload; queries leave the text out of the payload they return.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from qdrant_client import AsyncQdrantClient, models

from rillet_runtime.retrieval.documents import Passage
from rillet_runtime.retrieval.embeddings import Vectors
from rillet_runtime.retrieval.indexes.base import (
    IndexStats,
    Match,
    MetadataFilter,
    Record,
    check_filter,
    passage_of,
)
from rillet_runtime.settings import HnswSettings, QdrantSettings

BATCH = 256
TEXT, ID = "text", "chunk_id"
_NAMESPACE = uuid.UUID("6f0e7d2c-5b8a-4e0a-9c1d-7a3f2b1e4d5c")


def point_id(chunk_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, chunk_id))


def _metadata(payload: dict[str, object] | None) -> dict[str, str]:
    return {k: str(v) for k, v in (payload or {}).items() if k not in (TEXT, ID)}


class QdrantIndex:
    def __init__(self, settings: QdrantSettings, ef_search: int) -> None:
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        self.client = (
            AsyncQdrantClient(url=settings.url, api_key=api_key)
            if settings.url
            else AsyncQdrantClient(path=str(settings.path))
        )
        self.collection = settings.collection
        # Local mode searches exactly and warns about HNSW parameters.
        self._search_params = models.SearchParams(hnsw_ef=ef_search) if settings.url else None

    async def exists(self) -> bool:
        return await self.client.collection_exists(self.collection)

    async def create(self, dimensions: int, hnsw: HnswSettings) -> None:
        await self.client.create_collection(
            self.collection,
            vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.COSINE),
            hnsw_config=models.HnswConfigDiff(m=hnsw.m, ef_construct=hnsw.ef_construction),
        )

    async def upsert(self, records: Sequence[Record], vectors: Vectors) -> None:
        points = [
            models.PointStruct(
                id=point_id(r.id),
                vector=v.tolist(),
                payload={**r.metadata, TEXT: r.text, ID: r.id},
            )
            for r, v in zip(records, vectors, strict=True)
        ]
        for start in range(0, len(points), BATCH):
            await self.client.upsert(self.collection, points=points[start : start + BATCH])

    async def delete(self, ids: Sequence[str]) -> None:
        if ids:
            await self.client.delete(
                self.collection,
                points_selector=models.PointIdsList(points=[point_id(i) for i in ids]),
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
        query_filter = (
            models.Filter(
                must=[
                    models.FieldCondition(key=key, match=models.MatchValue(value=value))
                    for key, value in where.items()
                ]
            )
            if where
            else None
        )
        response = await self.client.query_points(
            self.collection,
            query=vector.reshape(-1).tolist(),
            limit=k,
            query_filter=query_filter,
            score_threshold=score_threshold,
            search_params=self._search_params,
            with_payload=models.PayloadSelectorExclude(exclude=[TEXT]),
        )
        return [
            Match(
                id=str((p.payload or {})[ID]), score=float(p.score), metadata=_metadata(p.payload)
            )
            for p in response.points
        ]

    async def fetch(self, ids: Sequence[str]) -> list[Passage]:
        points = await self.client.retrieve(self.collection, ids=[point_id(i) for i in ids])
        found = {str((p.payload or {})[ID]): p.payload or {} for p in points}
        return [passage_of(i, str(found[i][TEXT]), _metadata(found[i])) for i in ids if i in found]

    async def list_ids(self) -> set[str]:
        ids: set[str] = set()
        offset: models.ExtendedPointId | None = None
        while True:
            points, offset = await self.client.scroll(
                self.collection, limit=1000, offset=offset, with_payload=[ID]
            )
            ids.update(str((p.payload or {})[ID]) for p in points)
            if offset is None:
                return ids

    async def stats(self) -> IndexStats:
        info = await self.client.get_collection(self.collection)
        vectors = info.config.params.vectors
        size = vectors.size if isinstance(vectors, models.VectorParams) else 0
        return IndexStats(count=info.points_count or 0, dimensions=size)

    async def close(self) -> None:
        await self.client.close()
