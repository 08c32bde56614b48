"""One contract, four vector indexes: the embedded index (usearch + SQLite), Qdrant
(qdrant-client's local mode), Chroma (chromadb's embedded mode) and Pinecone (the real
`pinecone` SDK against tests/fakes/pinecone.py, a local server speaking Pinecone's
data-plane REST API, since Pinecone itself is a paid service)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from rillet_runtime.retrieval.indexes import Record, VectorIndex, open_index
from rillet_runtime.settings import (
    ChromaSettings,
    PineconeSettings,
    QdrantSettings,
    RetrievalSettings,
)
from tests.fakes.pinecone import fake_pinecone

DIMENSIONS = 8
PROVIDERS = ["embedded", "qdrant", "chroma", "pinecone"]


@pytest.fixture(scope="module")
def pinecone_host() -> Iterator[str]:
    with fake_pinecone(DIMENSIONS) as (url, _):
        yield url


def settings_for(provider: str, tmp_path: Path, pinecone_host: str) -> RetrievalSettings:
    if provider == "qdrant":
        return RetrievalSettings(
            provider="qdrant", qdrant=QdrantSettings(path=tmp_path / "qdrant", collection="docs")
        )
    if provider == "chroma":
        return RetrievalSettings(
            provider="chroma", chroma=ChromaSettings(path=tmp_path / "chroma", collection="docs")
        )
    if provider == "pinecone":
        namespace = tmp_path.name  # each test its own namespace on the shared fake
        return RetrievalSettings(
            provider="pinecone",
            pinecone=PineconeSettings(
                host=pinecone_host, namespace=namespace, api_key="pc-test-key"
            ),
        )
    return RetrievalSettings()


@pytest.fixture(params=PROVIDERS)
async def index(
    request: pytest.FixtureRequest, tmp_path: Path, pinecone_host: str
) -> AsyncIterator[VectorIndex]:
    settings = settings_for(request.param, tmp_path, pinecone_host)
    opened = await open_index(
        settings, "test-model", DIMENSIONS, tmp_path / "embedded", create=True
    )
    yield opened
    await opened.close()


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


VECTORS = unit(np.random.default_rng(7).normal(size=(12, DIMENSIONS)))
RECORDS = [
    Record(
        id=f"chunk-{i:02d}",
        text=f"text of chunk {i}",
        metadata={"title": f"Title {i}", "source": "a.md" if i % 2 else "b.md", "lang": "en"},
    )
    for i in range(len(VECTORS))
]


async def filled(index: VectorIndex) -> VectorIndex:
    await index.upsert(RECORDS, VECTORS)
    return index


async def test_nearest_first_with_cosine_scores_and_no_text(index: VectorIndex) -> None:
    await filled(index)
    query = unit(VECTORS[3:4] + 0.05)[0]
    matches = await index.query(query, 5)
    assert len(matches) == 5
    assert matches[0].id == "chunk-03"
    expected = {r.id: float(v @ query) for r, v in zip(RECORDS, VECTORS, strict=True)}
    for match in matches:
        assert match.score == pytest.approx(expected[match.id], abs=0.01)  # f16 in embedded
    assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
    top5 = sorted(expected, key=lambda i: -expected[i])[:5]
    assert {m.id for m in matches} == set(top5)
    assert matches[0].metadata == {"title": "Title 3", "source": "a.md", "lang": "en"}
    assert (matches[0].title, matches[0].source) == ("Title 3", "a.md")


async def test_filter_is_equality_on_every_field_given(index: VectorIndex) -> None:
    await filled(index)
    only_b = await index.query(VECTORS[3], 12, where={"source": "b.md"})
    assert {m.id for m in only_b} == {r.id for r in RECORDS if r.metadata["source"] == "b.md"}
    both = await index.query(VECTORS[3], 12, where={"source": "a.md", "title": "Title 5"})
    assert [m.id for m in both] == ["chunk-05"]
    assert await index.query(VECTORS[3], 12, where={"source": "c.md"}) == []
    with pytest.raises(ValueError, match="filter field"):
        await index.query(VECTORS[3], 3, where={"source') OR 1=1 --": "x"})


async def test_score_threshold_drops_weaker_hits(index: VectorIndex) -> None:
    await filled(index)
    everything = await index.query(VECTORS[0], 12)
    cut = everything[3].score - 0.02
    kept = await index.query(VECTORS[0], 12, score_threshold=cut)
    assert [m.id for m in kept] == [m.id for m in everything if m.score >= cut]
    assert 0 < len(kept) < 12


async def test_upsert_replaces_and_delete_forgets(index: VectorIndex) -> None:
    await filled(index)
    moved = Record("chunk-00", "rewritten", {"title": "New", "source": "b.md", "lang": "en"})
    await index.upsert([moved], VECTORS[5:6])
    top = await index.query(VECTORS[5], 2)
    assert {m.id for m in top} == {"chunk-00", "chunk-05"}
    assert [p.text for p in await index.fetch(["chunk-00"])] == ["rewritten"]
    assert (await index.stats()).count == len(RECORDS)

    await index.delete(["chunk-00", "chunk-01", "no-such-id"])
    assert await index.list_ids() == {r.id for r in RECORDS[2:]}
    assert "chunk-00" not in {m.id for m in await index.query(VECTORS[5], 12)}
    assert (await index.stats()).count == len(RECORDS) - 2


async def test_fetch_reads_texts_by_id_in_the_order_asked(index: VectorIndex) -> None:
    await filled(index)
    passages = await index.fetch(["chunk-07", "missing", "chunk-02"])
    assert [(p.id, p.text, p.title, p.source) for p in passages] == [
        ("chunk-07", "text of chunk 7", "Title 7", "a.md"),
        ("chunk-02", "text of chunk 2", "Title 2", "b.md"),
    ]
    assert await index.fetch([]) == []


async def test_stats_and_ids(index: VectorIndex) -> None:
    assert await index.list_ids() == set()
    await filled(index)
    stats = await index.stats()
    assert (stats.count, stats.dimensions) == (len(RECORDS), DIMENSIONS)
    assert await index.list_ids() == {r.id for r in RECORDS}


async def test_vectors_of_another_dimension_are_refused(index: VectorIndex) -> None:
    with pytest.raises(Exception, match="dimension"):
        await index.upsert(RECORDS[:1], unit(np.ones((1, DIMENSIONS + 1))))
