"""Retrieval seam and the embedded keyword retriever used by default.

Search returns ids, titles and scores only; the generate step fetches passage text by id,
so graph state and checkpoints never carry document bodies. The vector indexes (embedded
HNSW, Pinecone, Qdrant, Chroma) plug in behind the same `Retriever` protocol.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rank_bm25 import BM25Plus

from rillet_runtime.metrics import timed_stage

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "me",
        "my",
        "of",
        "on",
        "or",
        "so",
        "that",
        "the",
        "this",
        "to",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
CORPUS_SUFFIXES = (".md", ".markdown", ".txt")


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str
    source: str


@dataclass(frozen=True)
class Hit:
    id: str
    title: str
    score: float
    source: str


@dataclass(frozen=True)
class PreparedQuery:
    """What a retriever needs to search, computed once in the prepare step."""

    text: str
    terms: tuple[str, ...]


class Retriever(Protocol):
    async def prepare_query(self, text: str) -> PreparedQuery: ...

    async def search(self, query: PreparedQuery, k: int, score_threshold: float) -> list[Hit]: ...

    async def get_passages(self, ids: Sequence[str]) -> list[Passage]: ...


def _stem(word: str) -> str:
    """Fold the commonest English endings so "installs" finds "install"; crude on purpose."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def terms(text: str) -> tuple[str, ...]:
    return tuple(_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS)


def split_markdown(text: str, source: str, max_chars: int) -> list[Passage]:
    """Split on headings, then on paragraphs so no passage exceeds max_chars."""
    doc_title = Path(source).stem
    sections: list[tuple[str, list[str]]] = [(doc_title, [])]
    for line in text.splitlines():
        found = _HEADING.match(line)
        if found:
            if found.group(1) == "#" and not any(s[1] for s in sections):
                doc_title = found.group(2).strip()
            sections.append((found.group(2).strip(), []))
        else:
            sections[-1][1].append(line)

    passages: list[Passage] = []
    for heading, lines in sections:
        paragraphs = [p.strip() for p in "\n".join(lines).split("\n\n") if p.strip()]
        chunk: list[str] = []
        size = 0
        for paragraph in paragraphs:
            if chunk and size + len(paragraph) > max_chars:
                passages.append(_passage(source, len(passages), doc_title, heading, chunk))
                chunk, size = [], 0
            chunk.append(paragraph)
            size += len(paragraph)
        if chunk:
            passages.append(_passage(source, len(passages), doc_title, heading, chunk))
    return passages


def _passage(source: str, index: int, doc_title: str, heading: str, chunk: list[str]) -> Passage:
    title = doc_title if heading == doc_title else f"{doc_title}: {heading}"
    return Passage(id=f"{source}#{index}", title=title, text="\n\n".join(chunk), source=source)


def corpus_files(paths: Sequence[Path]) -> list[tuple[Path, str]]:
    """Each file with the name it is cited by (relative to the folder given)."""
    found: list[tuple[Path, str]] = []
    for root in paths:
        if root.is_file():
            found.append((root, root.name))
        elif root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.suffix in CORPUS_SUFFIXES and path.is_file():
                    found.append((path, path.relative_to(root).as_posix()))
        else:
            raise FileNotFoundError(f"retrieval.corpus_paths: {root} does not exist")
    return found


def load_corpus(paths: Sequence[Path], max_chars: int) -> list[Passage]:
    passages: list[Passage] = []
    for path, name in corpus_files(paths):
        passages.extend(split_markdown(path.read_text(encoding="utf-8"), name, max_chars))
    return passages


def default_corpus_paths() -> list[Path]:
    """The project's own docs: bundled in the wheel, or the checkout's docs/ folder."""
    bundled = Path(__file__).parent / "_corpus"
    if bundled.is_dir():
        return [bundled]
    checkout_docs = Path(__file__).resolve().parents[2] / "docs"
    return [checkout_docs] if checkout_docs.is_dir() else []


class KeywordRetriever:
    """BM25 over an in-memory corpus: no model, no network, good enough for docs Q&A."""

    def __init__(self, passages: Sequence[Passage]) -> None:
        self._passages = list(passages)
        self._by_id = {p.id: p for p in self._passages}
        tokenized = [list(terms(f"{p.title} {p.text}")) for p in self._passages]
        self._bm25 = BM25Plus(tokenized) if tokenized else None

    def __len__(self) -> int:
        return len(self._passages)

    async def prepare_query(self, text: str) -> PreparedQuery:
        return PreparedQuery(text=text, terms=terms(text))

    async def search(self, query: PreparedQuery, k: int, score_threshold: float) -> list[Hit]:
        if self._bm25 is None or not query.terms:
            return []
        with timed_stage("retrieval"):
            scores = self._bm25.get_scores(list(query.terms))
            ranked = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)[:k]
        return [
            Hit(id=p.id, title=p.title, score=round(float(scores[i]), 4), source=p.source)
            for i in ranked
            if scores[i] > score_threshold
            for p in (self._passages[i],)
        ]

    async def get_passages(self, ids: Sequence[str]) -> list[Passage]:
        return [self._by_id[i] for i in ids if i in self._by_id]
