"""Retrieval: the seam the graphs search through, and the index behind it.

Search returns ids, titles and scores only; the generate step fetches passage text by id,
so graph state and checkpoints never carry document bodies. `open_retriever` builds the
configured embedder and index once per worker and checks them before the first question.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from rillet_runtime.retrieval.documents import Passage, default_corpus_paths
from rillet_runtime.retrieval.embeddings import Embedder, build_embedder, close_embedder
from rillet_runtime.retrieval.errors import RetrievalConfigError
from rillet_runtime.retrieval.indexes import EmbeddedIndex, MetadataFilter, open_index
from rillet_runtime.retrieval.ingest import IngestReport, ingest
from rillet_runtime.retrieval.keyword import KeywordIndex
from rillet_runtime.retrieval.retriever import Hit, IndexRetriever, PreparedQuery
from rillet_runtime.retrieval.text import terms
from rillet_runtime.settings import Settings
from rillet_runtime.state.caches import RedisEmbeddingCache

__all__ = [
    "Hit",
    "IndexRetriever",
    "Passage",
    "PreparedQuery",
    "RetrievalConfigError",
    "Retriever",
    "build_retriever",
    "open_retriever",
    "terms",
]

log = logging.getLogger(__name__)


class Retriever(Protocol):
    async def prepare_query(self, text: str) -> PreparedQuery: ...

    async def search(
        self,
        query: PreparedQuery,
        k: int,
        score_threshold: float | None,
        where: MetadataFilter | None = None,
    ) -> list[Hit]: ...

    async def get_passages(self, ids: Sequence[str]) -> list[Passage]: ...


def cache_root() -> Path:
    base = os.environ.get("RILLET_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "rillet" if base else Path.home() / ".cache" / "rillet"


async def embedder_dimensions(embedder: Embedder) -> int:
    """One probe embedding: checks the key and the endpoint before the first question."""
    try:
        return int((await embedder.embed(["dimension probe"])).shape[1])
    except RetrievalConfigError:
        raise
    except Exception as exc:
        status = getattr(exc, "status_code", None)
        setting = (
            "embeddings.api_key"
            if status in (401, 403)
            else "embeddings.model"
            if status in (400, 404)
            else "embeddings.base_url"
        )
        raise RetrievalConfigError(setting, f"the embeddings endpoint failed: {exc}") from None


def make_embedder(settings: Settings, cache: RedisEmbeddingCache | None = None) -> Embedder:
    try:
        return build_embedder(settings.embeddings, cache)
    except RetrievalConfigError:
        raise
    except Exception as exc:  # the SDK refuses a missing key at construction
        raise RetrievalConfigError("embeddings.api_key", str(exc).splitlines()[0]) from None


async def ingest_into(
    settings: Settings,
    embedder: Embedder,
    dimensions: int,
    embedded_path: Path,
    paths: Sequence[Path],
    **options: Any,
) -> IngestReport:
    """`ingest` into the configured index (created if need be); options go to `ingest`."""
    index = await open_index(
        settings.retrieval, embedder.model_id, dimensions, embedded_path, create=True
    )
    try:
        return await ingest(
            paths,
            index,
            embedder,
            chunk_tokens=settings.retrieval.chunk_tokens,
            chunk_overlap=settings.retrieval.chunk_overlap,
            batch_size=settings.embeddings.batch_size,
            **options,
        )
    finally:
        await index.close()


async def ensure_default_index(settings: Settings, embedder: Embedder, dimensions: int) -> Path:
    """The bundled docs as an embedded index in the cache folder, built (or brought up to
    date) by the same ingest as `rillet ingest`, under a lock so workers never race."""
    folder = cache_root() / ("docs-index-" + re.sub(r"[^\w.-]+", "-", embedder.model_id))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = (folder.parent / f"{folder.name}.lock").open("w")
    except OSError as exc:
        raise RetrievalConfigError(
            "retrieval.embedded.path",
            f"unset, and the default index cannot be built in {folder} ({exc.strerror}): "
            "build one with `rillet ingest` and set the path",
        ) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        report = await ingest_into(settings, embedder, dimensions, folder, default_corpus_paths())
    if report.added or report.removed:
        log.info(
            "default index %s: %d chunks added, %d removed", folder, report.added, report.removed
        )
    return folder


async def build_retriever(
    settings: Settings, cache: RedisEmbeddingCache | None = None
) -> IndexRetriever:
    retrieval = settings.retrieval
    embedder = make_embedder(settings, cache)
    try:
        dimensions = await embedder_dimensions(embedder)
        path = retrieval.embedded.path
        if retrieval.provider == "embedded" and path is None:
            path = await ensure_default_index(settings, embedder, dimensions)
        index = await open_index(retrieval, embedder.model_id, dimensions, path or Path())
    except BaseException:
        await close_embedder(embedder)
        raise
    retriever = IndexRetriever(
        index, embedder, rrf_k=retrieval.rrf_k, candidates=retrieval.candidates
    )
    if retrieval.hybrid_search and isinstance(index, EmbeddedIndex):
        retriever.keyword = KeywordIndex.open(index.path)
        if retriever.keyword is None:
            await retriever.close()
            raise RetrievalConfigError(
                "retrieval.hybrid", f"{index.path} has no keyword index: re-run `rillet ingest`"
            )
    stats = await index.stats()
    log.info(
        "retrieval: %s index, %d chunks, %d dimensions, %s, hybrid %s",
        retrieval.provider,
        stats.count,
        stats.dimensions,
        embedder.model_id,
        "on" if retriever.keyword else "off",
    )
    return retriever


@asynccontextmanager
async def open_retriever(
    settings: Settings, cache: RedisEmbeddingCache | None = None
) -> AsyncIterator[IndexRetriever]:
    retriever = await build_retriever(settings, cache)
    try:
        yield retriever
    finally:
        await retriever.close()
