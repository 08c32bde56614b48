"""Text -> unit vectors: an OpenAI-compatible endpoint, local sentence-transformers, or
the offline hashing embedder that needs no model at all.

The offline embedder is honest about what it is: feature hashing of stemmed words, word
pairs and character 4-grams into 384 dimensions. It finds passages that share words and
word pieces with the question (close to what BM25 finds), never synonyms or paraphrases.
It exists so `make run` and the tests need no download and no key; production services
set `embeddings.provider` to a real model.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from rillet_runtime.offload import cpu_bound
from rillet_runtime.retrieval.errors import RetrievalConfigError
from rillet_runtime.retrieval.text import terms
from rillet_runtime.settings import EmbeddingSettings
from rillet_runtime.state.caches import RedisEmbeddingCache

Vectors = npt.NDArray[np.float32]

OFFLINE_DIMENSIONS = 384
OPENAI_DEFAULT_MODEL = "text-embedding-3-small"


class Embedder(Protocol):
    @property
    def model_id(self) -> str:
        """Names the vector space: cache keys and the index manifest carry it."""
        ...

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised float32 row per text."""
        ...


def normalise(rows: npt.ArrayLike) -> Vectors:
    matrix = np.asarray(rows, dtype=np.float32)
    if matrix.ndim != 2:
        matrix = matrix.reshape(len(matrix), -1)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms == 0, 1, norms)).astype(np.float32, copy=False)


def _features(text: str) -> Counter[tuple[str, float]]:
    words = terms(text)
    found: Counter[tuple[str, float]] = Counter()
    for word in words:
        found["w:" + word, 1.0] += 1
        padded = f"<{word}>"
        for i in range(len(padded) - 3):
            found["c:" + padded[i : i + 4], 0.25] += 1
    for first, second in itertools.pairwise(words):
        found[f"b:{first} {second}", 0.5] += 1
    return found


class OfflineEmbedder:
    def __init__(self, dimensions: int = OFFLINE_DIMENSIONS) -> None:
        self.dimensions = dimensions

    @property
    def model_id(self) -> str:
        return f"rillet-hashing-v1-{self.dimensions}"

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        rows = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for (feature, weight), count in _features(text).items():
                hashed = zlib.crc32(feature.encode())
                sign = 1.0 if (hashed >> 31) & 1 else -1.0
                rows[row, hashed % self.dimensions] += sign * weight * (1 + math.log(count))
        return normalise(rows)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        return await cpu_bound(sum(len(text) for text in texts), self.embed_sync, texts)


class OpenAIEmbedder:
    """Any server speaking OpenAI's /v1/embeddings: OpenAI, or TEI/vLLM in the cluster."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        from openai import AsyncOpenAI

        self.model = settings.model or OPENAI_DEFAULT_MODEL
        self.dimensions = settings.dimensions
        self.batch_size = settings.batch_size
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        # A keyless in-cluster server (TEI, vLLM) still needs a non-empty key for the SDK.
        self.client = AsyncOpenAI(
            api_key=api_key or ("unused" if settings.base_url else None),
            base_url=settings.base_url,
            timeout=settings.timeout_seconds,
            max_retries=settings.max_retries,
        )

    @property
    def model_id(self) -> str:
        return f"openai:{self.model}:{self.dimensions or 'native'}"

    async def embed(self, texts: Sequence[str]) -> Vectors:
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            extra: dict[str, Any] = {"dimensions": self.dimensions} if self.dimensions else {}
            response = await self.client.embeddings.create(
                model=self.model, input=batch, encoding_format="float", **extra
            )
            rows.extend(d.embedding for d in sorted(response.data, key=lambda d: d.index))
        return normalise(rows)

    async def close(self) -> None:
        await self.client.close()


class SentenceTransformerEmbedder:
    def __init__(self, settings: EmbeddingSettings) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise RetrievalConfigError(
                "embeddings.provider",
                "'sentence-transformers' needs the optional package: "
                "pip install 'rillet[local-embeddings]'",
            ) from None
        if not settings.model or not Path(settings.model).is_dir():
            raise RetrievalConfigError(
                "embeddings.model", f"{settings.model!r} is not a local model folder"
            )
        self.name = Path(settings.model).name
        self.batch_size = settings.batch_size
        self.model = SentenceTransformer(settings.model, local_files_only=True)

    @property
    def model_id(self) -> str:
        return f"sentence-transformers:{self.name}"

    async def embed(self, texts: Sequence[str]) -> Vectors:
        rows = await asyncio.to_thread(
            self.model.encode, list(texts), batch_size=self.batch_size, convert_to_numpy=True
        )
        return normalise(rows)


class CachedEmbedder:
    """Looks every text up in Redis first (one round trip) and embeds only the misses."""

    def __init__(self, inner: Embedder, cache: RedisEmbeddingCache) -> None:
        self.inner = inner
        self.cache = cache

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    async def embed(self, texts: Sequence[str]) -> Vectors:
        cached = await self.cache.get_many(self.model_id, texts)
        missing = [i for i, vector in enumerate(cached) if vector is None]
        if missing:
            fresh = await self.inner.embed([texts[i] for i in missing])
            await self.cache.set_many(self.model_id, [texts[i] for i in missing], fresh.tolist())
            for i, vector in zip(missing, fresh, strict=True):
                cached[i] = vector.tolist()
        return normalise([vector or [] for vector in cached])

    async def close(self) -> None:
        await close_embedder(self.inner)


async def close_embedder(embedder: Embedder) -> None:
    """Release an embedder's connections, for the embedders that hold any."""
    close = getattr(embedder, "close", None)
    if close is not None:
        await close()


def build_embedder(settings: EmbeddingSettings, cache: RedisEmbeddingCache | None) -> Embedder:
    """The offline embedder is cheaper to run than a Redis round trip: never cached."""
    if settings.provider == "offline":
        return OfflineEmbedder(settings.dimensions or OFFLINE_DIMENSIONS)
    embedder: Embedder = (
        OpenAIEmbedder(settings)
        if settings.provider == "openai"
        else SentenceTransformerEmbedder(settings)
    )
    return CachedEmbedder(embedder, cache) if cache is not None else embedder
