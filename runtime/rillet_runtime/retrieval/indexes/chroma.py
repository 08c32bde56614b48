"""Chroma through `chromadb`: its HTTP client against a server, or its embedded mode.

chromadb's clients are synchronous; every call runs in a worker thread so the event loop
keeps streaming. Collections are created with cosine space and no embedding function:
Rillet sends vectors, so Chroma never downloads a model of its own. A Chroma collection
takes its dimension from the first vector written, so Rillet records it in the
collection's metadata at creation and refuses other sizes itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from rillet_runtime.retrieval.documents import Passage
from rillet_runtime.retrieval.embeddings import Vectors
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
from rillet_runtime.settings import ChromaSettings, HnswSettings

PAGE = 1000
DIMENSIONS = "rillet_dimensions"


def _client(settings: ChromaSettings) -> Any:
    try:
        import chromadb
        from chromadb.config import Settings
    except ImportError:
        raise RetrievalConfigError(
            "retrieval.provider", "'chroma' needs the Chroma client: pip install 'rillet[chroma]'"
        ) from None
    quiet = Settings(anonymized_telemetry=False)
    if settings.path is not None:
        return chromadb.PersistentClient(path=str(settings.path), settings=quiet)
    url = urlsplit(settings.url or "")
    return chromadb.HttpClient(
        host=url.hostname or "localhost",
        port=url.port or (443 if url.scheme == "https" else 8000),
        ssl=url.scheme == "https",
        settings=quiet,
    )


def _where(where: MetadataFilter | None) -> dict[str, Any] | None:
    if not where:
        return None
    clauses: list[dict[str, Any]] = [{key: value} for key, value in where.items()]
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _metadata(stored: Any) -> dict[str, str]:
    return {k: str(v) for k, v in (stored or {}).items()}


class ChromaIndex:
    def __init__(self, settings: ChromaSettings) -> None:
        self.client = _client(settings)
        self.name = settings.collection
        self._collection: Any = None
        self.dimensions = 0

    async def _call(self, method: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self._collection, method), **kwargs)

    async def exists(self) -> bool:
        names = await asyncio.to_thread(self.client.list_collections)
        if self.name not in [getattr(c, "name", c) for c in names]:
            return False
        self._collection = await asyncio.to_thread(
            self.client.get_collection, self.name, embedding_function=None
        )
        self.dimensions = int((self._collection.metadata or {}).get(DIMENSIONS, 0))
        return True

    async def create(self, dimensions: int, hnsw: HnswSettings) -> None:
        configuration = {
            "hnsw": {
                "space": "cosine",
                "max_neighbors": hnsw.m,
                "ef_construction": hnsw.ef_construction,
                "ef_search": hnsw.ef_search,
            }
        }
        self._collection = await asyncio.to_thread(
            self.client.get_or_create_collection,
            self.name,
            embedding_function=None,
            configuration=configuration,
            metadata={DIMENSIONS: dimensions},
        )
        self.dimensions = dimensions

    async def upsert(self, records: Sequence[Record], vectors: Vectors) -> None:
        if self.dimensions:
            check_dimensions(vectors, self.dimensions, "embeddings")
        await self._call(
            "upsert",
            ids=[r.id for r in records],
            embeddings=vectors,
            metadatas=[r.metadata for r in records],
            documents=[r.text for r in records],
        )

    async def delete(self, ids: Sequence[str]) -> None:
        if ids:
            await self._call("delete", ids=list(ids))

    async def query(
        self,
        vector: Vectors,
        k: int,
        *,
        where: MetadataFilter | None = None,
        score_threshold: float | None = None,
    ) -> list[Match]:
        check_filter(where)
        found = await self._call(
            "query",
            query_embeddings=vector.reshape(1, -1),
            n_results=k,
            where=_where(where),
            include=["metadatas", "distances"],
        )
        matches = [
            Match(id=id_, score=1.0 - float(distance), metadata=_metadata(metadata))
            for id_, distance, metadata in zip(
                found["ids"][0], found["distances"][0], found["metadatas"][0], strict=True
            )
        ]
        return [m for m in matches if score_threshold is None or m.score >= score_threshold]

    async def fetch(self, ids: Sequence[str]) -> list[Passage]:
        if not ids:
            return []
        found = await self._call("get", ids=list(ids), include=["documents", "metadatas"])
        rows = {
            id_: (text, _metadata(metadata))
            for id_, text, metadata in zip(
                found["ids"], found["documents"], found["metadatas"], strict=True
            )
        }
        return [passage_of(i, rows[i][0] or "", rows[i][1]) for i in ids if i in rows]

    async def list_ids(self) -> set[str]:
        ids: set[str] = set()
        while True:
            page = await self._call("get", include=[], limit=PAGE, offset=len(ids))
            ids.update(page["ids"])
            if len(page["ids"]) < PAGE:
                return ids

    async def stats(self) -> IndexStats:
        return IndexStats(count=await self._call("count"), dimensions=self.dimensions)

    async def close(self) -> None:
        self._collection = None
