"""`rillet ingest`: files -> chunks -> embeddings -> the configured index.

The index mirrors the paths given: chunks whose content is already there are skipped
(their ids derive from the content), new ones are embedded and written, and chunks no
longer produced by any file are deleted (`prune=False` keeps them). Nothing changed
means nothing embedded and nothing written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rillet_runtime.retrieval.documents import Chunk, corpus_files, iter_chunks
from rillet_runtime.retrieval.embeddings import Embedder
from rillet_runtime.retrieval.indexes import EmbeddedIndex, Record, VectorIndex
from rillet_runtime.retrieval.keyword import KEYWORD_DIR, build_keyword_index


@dataclass(frozen=True)
class IngestReport:
    files: int
    chunks: int
    added: int
    removed: int

    @property
    def unchanged(self) -> int:
        return self.chunks - self.added


def embedding_text(chunk: Chunk) -> str:
    """The title travels with the text: a section's heading is often the best match."""
    return f"{chunk.title}\n\n{chunk.text}"


async def ingest(
    paths: Sequence[Path],
    index: VectorIndex,
    embedder: Embedder,
    *,
    chunk_tokens: int,
    chunk_overlap: int,
    batch_size: int = 64,
    prune: bool = True,
    on_plan: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> IngestReport:
    files = corpus_files(paths)
    chunks = {c.id: c for c in iter_chunks(files, chunk_tokens, chunk_overlap)}
    existing = await index.list_ids()
    new = [chunk for id_, chunk in chunks.items() if id_ not in existing]
    stale = sorted(existing - chunks.keys()) if prune else []
    if on_plan:
        on_plan(len(new))
    for start in range(0, len(new), batch_size):
        batch = new[start : start + batch_size]
        vectors = await embedder.embed([embedding_text(c) for c in batch])
        records = [Record(c.id, c.text, c.metadata) for c in batch]
        await index.upsert(records, vectors)
        if on_progress:
            on_progress(len(batch))
    await index.delete(stale)
    if isinstance(index, EmbeddedIndex) and (
        new or stale or not (index.path / KEYWORD_DIR).exists()
    ):
        index.save()
        build_keyword_index(index.path, index.iter_texts())
    return IngestReport(files=len(files), chunks=len(chunks), added=len(new), removed=len(stale))
