"""Vector indexes behind one protocol (`base.VectorIndex`), opened from settings.

Opening checks what would otherwise fail on the first question: the index exists, is
readable, was built for the configured embedding model, and its vectors have the
embedder's dimensions. Every failure names the setting to fix.
"""

from __future__ import annotations

from pathlib import Path

from rillet_runtime.retrieval.errors import RetrievalConfigError
from rillet_runtime.retrieval.indexes.base import (
    IndexStats,
    Match,
    MetadataFilter,
    Record,
    VectorIndex,
)
from rillet_runtime.retrieval.indexes.embedded import EmbeddedIndex, Manifest
from rillet_runtime.settings import RetrievalSettings

__all__ = [
    "EmbeddedIndex",
    "IndexStats",
    "Manifest",
    "Match",
    "MetadataFilter",
    "Record",
    "VectorIndex",
    "open_index",
]


async def open_index(
    settings: RetrievalSettings,
    embedding_model: str,
    dimensions: int,
    embedded_path: Path,
    *,
    create: bool = False,
) -> VectorIndex:
    """The configured index, checked against the embedder; `create` (ingest) makes it."""
    if settings.provider == "embedded":
        if create:
            manifest = Manifest(
                embedding_model=embedding_model,
                dimensions=dimensions,
                m=settings.hnsw.m,
                ef_construction=settings.hnsw.ef_construction,
            )
            return EmbeddedIndex.open_writable(embedded_path, manifest, settings.hnsw.ef_search)
        index = EmbeddedIndex.open_readonly(embedded_path, settings.hnsw.ef_search)
        if index.manifest.embedding_model != embedding_model:
            await index.close()
            raise RetrievalConfigError(
                "embeddings",
                f"the index in {embedded_path} was built with {index.manifest.embedding_model}, "
                f"the service embeds questions with {embedding_model}: re-run `rillet ingest` "
                "with these settings",
            )
        return index
    return await _open_remote(settings, dimensions, create=create)


async def _open_remote(
    settings: RetrievalSettings, dimensions: int, *, create: bool
) -> VectorIndex:
    provider = settings.provider
    where = {
        "pinecone": "retrieval.pinecone.host",
        "qdrant": "retrieval.qdrant.collection",
        "chroma": "retrieval.chroma.collection",
    }[provider]
    index: VectorIndex
    try:
        if provider == "pinecone":
            from rillet_runtime.retrieval.indexes.pinecone import PineconeIndex

            assert settings.pinecone is not None  # enforced by RetrievalSettings
            index = PineconeIndex(settings.pinecone)
        elif provider == "qdrant":
            from rillet_runtime.retrieval.indexes.qdrant import QdrantIndex

            assert settings.qdrant is not None
            index = qdrant = QdrantIndex(settings.qdrant, settings.hnsw.ef_search)
            if not await qdrant.exists():
                if not create:
                    raise RetrievalConfigError(where, "no such collection: run `rillet ingest`")
                await qdrant.create(dimensions, settings.hnsw)
        else:
            from rillet_runtime.retrieval.indexes.chroma import ChromaIndex

            assert settings.chroma is not None
            index = chroma = ChromaIndex(settings.chroma)
            if not await chroma.exists():
                if not create:
                    raise RetrievalConfigError(where, "no such collection: run `rillet ingest`")
                await chroma.create(dimensions, settings.hnsw)
        stats = await index.stats()
    except RetrievalConfigError:
        raise
    except Exception as exc:  # each SDK has its own errors; all mean the same here
        raise RetrievalConfigError(where, _describe(exc)) from None
    if stats.dimensions and stats.dimensions != dimensions:
        await index.close()
        raise RetrievalConfigError(
            where, f"holds {stats.dimensions}-dimensional vectors, the embedder makes {dimensions}"
        )
    return index


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if status == 401 or status == 403:
        return f"the API key was rejected ({text})"
    if status == 404:
        return f"no such index ({text})"
    return f"cannot use the index: {text}"
