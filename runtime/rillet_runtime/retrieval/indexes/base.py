"""The contract every vector index keeps (tests/integration/test_vector_index_contract.py
runs one suite against all four).

- Scores are cosine similarity, higher is closer, whatever the store reports natively.
- A query returns ids, scores and the small metadata (title, source): never vectors or
  texts; `fetch` reads texts by id for the hits only.
- A filter is equality on metadata fields, all of them must hold.
- Upserting an existing id replaces it; deleting a missing id is not an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from rillet_runtime.retrieval.documents import Passage
from rillet_runtime.retrieval.embeddings import Vectors

MetadataFilter = Mapping[str, str]
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class Record:
    id: str
    text: str
    metadata: dict[str, str]  # "title" and "source" at least


@dataclass(frozen=True)
class Match:
    id: str
    score: float
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return self.metadata.get("title", self.id)

    @property
    def source(self) -> str:
        return self.metadata.get("source", "")


@dataclass(frozen=True)
class IndexStats:
    count: int
    dimensions: int


class VectorIndex(Protocol):
    async def upsert(self, records: Sequence[Record], vectors: Vectors) -> None: ...

    async def delete(self, ids: Sequence[str]) -> None: ...

    async def query(
        self,
        vector: Vectors,
        k: int,
        *,
        where: MetadataFilter | None = None,
        score_threshold: float | None = None,
    ) -> list[Match]: ...

    async def fetch(self, ids: Sequence[str]) -> list[Passage]: ...

    async def list_ids(self) -> set[str]: ...

    async def stats(self) -> IndexStats: ...

    async def close(self) -> None: ...


def check_filter(where: MetadataFilter | None) -> None:
    """Field names reach SQL and store-specific filter syntax: plain identifiers only."""
    for key in where or {}:
        if not _FIELD.match(key):
            raise ValueError(f"filter field {key!r}: letters, digits and _ only")


def matches_filter(metadata: Mapping[str, str], where: MetadataFilter | None) -> bool:
    return all(metadata.get(key) == value for key, value in (where or {}).items())


def passage_of(id_: str, text: str, metadata: Mapping[str, str]) -> Passage:
    return Passage(
        id=id_, title=metadata.get("title", id_), text=text, source=metadata.get("source", "")
    )


def check_dimensions(vectors: Vectors, expected: int, setting: str) -> None:
    if vectors.ndim != 2 or vectors.shape[1] != expected:
        got = vectors.shape[-1] if vectors.size else 0
        raise ValueError(f"{setting}: vectors have {got} dimensions, the index holds {expected}")
