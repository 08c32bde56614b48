"""The keyword side of hybrid search: BM25 (bm25s) built by `rillet ingest` beside the
embedded index and opened memory-mapped, so workers share it like the vectors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import bm25s
import numpy as np

from rillet_runtime.retrieval.text import terms

KEYWORD_DIR = "keyword"
_IDS = "ids.json"


def build_keyword_index(index_path: Path, chunks: Iterable[tuple[str, str, str]]) -> None:
    """(id, title, text) -> index_path/keyword, replaced whole."""
    ids: list[str] = []
    tokens: list[list[str]] = []
    for id_, title, text in chunks:
        ids.append(id_)
        tokens.append(list(terms(f"{title} {text}")) or ["\0"])
    target = index_path / KEYWORD_DIR
    partial = index_path / (KEYWORD_DIR + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    if ids:
        model = bm25s.BM25()
        model.index(tokens, show_progress=False)
        model.save(str(partial))
    (partial / _IDS).write_text(json.dumps(ids), encoding="utf-8")
    previous = index_path / (KEYWORD_DIR + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)
    partial.rename(target)
    shutil.rmtree(previous, ignore_errors=True)


class KeywordIndex:
    def __init__(self, model: bm25s.BM25 | None, ids: list[str]) -> None:
        self._model = model
        self._ids = ids

    @classmethod
    def open(cls, index_path: Path) -> KeywordIndex | None:
        folder = index_path / KEYWORD_DIR
        if not (folder / _IDS).exists():
            return None
        ids = json.loads((folder / _IDS).read_text(encoding="utf-8"))
        model = bm25s.BM25.load(str(folder), mmap=True) if ids else None
        return cls(model, ids)

    def search(self, query_terms: Iterable[str], k: int) -> list[tuple[str, float]]:
        words = list(query_terms)
        if self._model is None or not words:
            return []
        # n_threads=0 scores in this thread; 1 would start a pool's thread per query and join
        # it, blocking the event loop (blockbuster refuses it) for no parallelism.
        found, scores = self._model.retrieve(
            [words], k=min(k, len(self._ids)), show_progress=False, n_threads=0
        )
        return [
            (self._ids[int(doc)], float(score))
            for doc, score in zip(found[0], scores[0], strict=True)
            if score > 0 and np.isfinite(score)
        ]
