"""What the graph retrieves through: embed the question, search the index and, for hybrid
search, BM25 too, fused by reciprocal rank fusion.

RRF (score = sum of 1 / (rrf_k + rank) over the lists a hit appears in) needs no score
calibration between cosine and BM25, which live on unrelated scales. The score threshold
applies to the vector side (cosine); a keyword hit counts when BM25 scores it above zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rillet_runtime.metrics import timed_stage
from rillet_runtime.offload import cpu_bound
from rillet_runtime.retrieval.documents import Passage
from rillet_runtime.retrieval.embeddings import Embedder, Vectors, close_embedder
from rillet_runtime.retrieval.indexes import MetadataFilter, VectorIndex
from rillet_runtime.retrieval.keyword import KeywordIndex
from rillet_runtime.retrieval.text import terms


@dataclass(frozen=True)
class Hit:
    id: str
    title: str
    score: float
    source: str


@dataclass(frozen=True)
class PreparedQuery:
    """What a search needs, computed once in the graph's prepare step."""

    text: str
    terms: tuple[str, ...]
    vector: Vectors


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], rrf_k: int
) -> list[tuple[str, float]]:
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, id_ in enumerate(ranking, start=1):
            fused[id_] = fused.get(id_, 0.0) + 1.0 / (rrf_k + rank)
    return sorted(fused.items(), key=lambda item: item[1], reverse=True)


class IndexRetriever:
    def __init__(
        self,
        index: VectorIndex,
        embedder: Embedder,
        keyword: KeywordIndex | None = None,
        *,
        rrf_k: int = 60,
        candidates: int = 20,
    ) -> None:
        self.index = index
        self.embedder = embedder
        self.keyword = keyword
        self.rrf_k = rrf_k
        self.candidates = candidates

    async def prepare_query(self, text: str) -> PreparedQuery:
        with timed_stage("embedding"):
            vectors = await self.embedder.embed([text])
        query_terms = await cpu_bound(len(text), terms, text)
        return PreparedQuery(text=text, terms=query_terms, vector=vectors[0])

    async def search(
        self,
        query: PreparedQuery,
        k: int,
        score_threshold: float | None,
        where: MetadataFilter | None = None,
    ) -> list[Hit]:
        with timed_stage("retrieval"):
            if self.keyword is None or where:
                matches = await self.index.query(
                    query.vector, k, where=where, score_threshold=score_threshold
                )
                return [Hit(m.id, m.title, round(m.score, 4), m.source) for m in matches]
            matches = await self.index.query(
                query.vector, max(k, self.candidates), score_threshold=score_threshold
            )
            keyword_hits = await cpu_bound(
                len(query.text), self.keyword.search, query.terms, max(k, self.candidates)
            )
            fused = reciprocal_rank_fusion(
                [[m.id for m in matches], [id_ for id_, _ in keyword_hits]], self.rrf_k
            )[:k]
            known = {m.id: (m.title, m.source) for m in matches}
            unknown = [id_ for id_, _ in fused if id_ not in known]
            for passage in await self.index.fetch(unknown) if unknown else []:
                known[passage.id] = (passage.title, passage.source)
            return [
                Hit(id_, known[id_][0], round(score, 5), known[id_][1])
                for id_, score in fused
                if id_ in known
            ]

    async def get_passages(self, ids: Sequence[str]) -> list[Passage]:
        return await self.index.fetch(ids)

    async def close(self) -> None:
        await self.index.close()
        await close_embedder(self.embedder)
