"""Chunking, document parsing, content ids, the offline embedder and rank fusion."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pydantic import ValidationError

from rillet_runtime.retrieval import RetrievalConfigError, make_embedder
from rillet_runtime.retrieval.documents import (
    Section,
    chunk_sections,
    html_sections,
    markdown_sections,
    split_tokens,
)
from rillet_runtime.retrieval.embeddings import OfflineEmbedder
from rillet_runtime.retrieval.retriever import reciprocal_rank_fusion
from rillet_runtime.retrieval.text import token_spans
from rillet_runtime.settings import RetrievalSettings, Settings


def words(count: int, start: int = 0) -> str:
    return " ".join(f"w{i}" for i in range(start, start + count))


def test_windows_hold_at_most_max_tokens_and_share_the_overlap() -> None:
    pieces = split_tokens(words(1000), max_tokens=512, overlap=50)
    sizes = [len(token_spans(p)) for p in pieces]
    assert max(sizes) <= 512
    assert len(pieces) == 3
    for first, second in itertools.pairwise(pieces):
        assert first.split()[-50:] == second.split()[:50]
    assert pieces[0].split()[0] == "w0"
    assert pieces[-1].split()[-1] == "w999"


def test_a_window_ends_at_a_sentence_when_one_is_near() -> None:
    text = words(400) + ". " + words(300, start=400)
    first = split_tokens(text, max_tokens=512, overlap=50)[0]
    assert first.endswith("w399.")


def test_short_text_is_one_chunk_and_blank_is_none() -> None:
    assert split_tokens("just this", 512, 50) == ["just this"]
    assert split_tokens("  \n ", 512, 50) == []


def test_markdown_sections_are_titled_by_document_and_heading() -> None:
    sections = markdown_sections("# Guide\n\nintro\n\n## Install\n\nrun it\n\n## Empty\n", "guide")
    assert sections == [Section("Guide", "intro"), Section("Guide: Install", "run it")]


def test_html_keeps_the_text_and_drops_scripts_and_navigation() -> None:
    html = """<html><head><title>Rillet  FAQ</title><style>p{}</style></head><body>
    <nav>Home | Docs</nav><h1>Rillet FAQ</h1><p>Intro &amp; scope.</p>
    <h2>Scaling</h2><p>It scales on <b>latency</b>.</p><script>var x = "secret";</script>
    <p>Second paragraph.</p></body></html>"""
    sections = html_sections(html, "faq")
    assert sections == [
        Section("Rillet FAQ", "Intro & scope."),
        Section("Rillet FAQ: Scaling", "It scales on latency.\n\nSecond paragraph."),
    ]


def test_chunk_ids_follow_the_content() -> None:
    sections = [Section("T", "alpha"), Section("T", "beta"), Section("T", "alpha")]
    ids = [c.id for c in chunk_sections(sections, "a.md", 512, 50)]
    assert len(ids) == 2  # the repeated section once
    again = [c.id for c in chunk_sections(sections, "a.md", 512, 50)]
    assert again == ids
    edited = [c.id for c in chunk_sections([Section("T", "alpha!")], "a.md", 512, 50)]
    elsewhere = [c.id for c in chunk_sections(sections[:1], "b.md", 512, 50)]
    assert edited[0] not in ids
    assert elsewhere[0] not in ids
    assert all(i.isascii() for i in ids)


def test_offline_embeddings_are_deterministic_unit_vectors_that_follow_shared_words() -> None:
    embedder = OfflineEmbedder()
    vectors = embedder.embed_sync(
        ["install the operator with helm", "helm installs the operator", "bake a sourdough loaf"]
    )
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1)
    assert np.array_equal(
        vectors,
        embedder.embed_sync(
            [
                "install the operator with helm",
                "helm installs the operator",
                "bake a sourdough loaf",
            ]
        ),
    )
    assert vectors[0] @ vectors[1] > 0.5 > vectors[0] @ vectors[2]


def test_reciprocal_rank_fusion_rewards_agreement() -> None:
    fused = dict(reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]], rrf_k=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["b"] == pytest.approx(1 / 62)
    assert list(fused) == ["a", "c", "b"]


def test_settings_refuse_hybrid_where_there_is_no_keyword_index() -> None:
    qdrant = {"url": "http://qdrant:6333", "collection": "docs"}
    assert not RetrievalSettings(provider="qdrant", qdrant=qdrant).hybrid_search
    assert RetrievalSettings().hybrid_search
    with pytest.raises(ValidationError, match="hybrid needs the embedded index"):
        RetrievalSettings(provider="qdrant", qdrant=qdrant, hybrid=True)
    with pytest.raises(ValidationError, match=r"retrieval\.pinecone is required"):
        RetrievalSettings(provider="pinecone")
    with pytest.raises(ValidationError, match="exactly one of url and path"):
        RetrievalSettings(provider="qdrant", qdrant={"collection": "docs"})


def test_a_missing_optional_embedder_names_the_setting() -> None:
    settings = Settings(embeddings={"provider": "sentence-transformers", "model": "/models/x"})
    with pytest.raises(RetrievalConfigError, match="local-embeddings") as raised:
        make_embedder(settings)
    assert raised.value.setting == "embeddings.provider"
