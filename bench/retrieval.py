"""The embedded index as the runtime uses it: build, query latency, recall and the memory
of four workers, on synthetic 384-dimensional vectors.

    python -m bench.retrieval --vectors 100000 --out bench-results/retrieval

Everything goes through `EmbeddedIndex` (usearch graph + SQLite rows), so a query's time
includes reading its hits' metadata. Side by side in the same run: exact search (numpy,
one matrix product per query) as the latency and recall baseline, and four workers that
each load their own copy as the memory baseline for four that share the mapped file.
Queries run one at a time, as a request would; the build uses both cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from usearch.index import Index

from bench.vector_libs import (
    DIMENSIONS,
    exact_top_k,
    recall,
    synthetic,
    workers_memory,
)
from rillet_runtime.retrieval.indexes import EmbeddedIndex, Manifest, Record
from rillet_runtime.retrieval.indexes.embedded import VECTORS, read_manifest

EF_SEARCH = (32, 64, 128)
KS = (3, 10)
BATCH = 10_000
WORKERS = 4


def percentiles(seconds: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return {"p50_ms": round(cuts[49] * 1000, 3), "p99_ms": round(cuts[98] * 1000, 3)}


async def build(folder: Path, vectors: np.ndarray) -> float:
    start = time.perf_counter()
    index = EmbeddedIndex.open_writable(folder, Manifest("synthetic", DIMENSIONS, 16, 200))
    for first in range(0, len(vectors), BATCH):
        ids = range(first, min(first + BATCH, len(vectors)))
        records = [
            Record(f"v{i}", f"chunk {i}", {"title": f"chunk {i}", "source": "s"}) for i in ids
        ]
        await index.upsert(records, vectors[first : first + BATCH])
    index.save()
    await index.close()
    return time.perf_counter() - start


async def latency(folder: Path, vectors: np.ndarray, queries: np.ndarray) -> list[dict[str, Any]]:
    truth = exact_top_k(vectors, queries, 10)
    rows = []
    exact: dict[int, list[float]] = {k: [] for k in KS}
    for k in KS:
        for query in queries:
            start = time.perf_counter()
            np.argpartition(-(vectors @ query), k)[:k]
            exact[k].append(time.perf_counter() - start)
    for ef in EF_SEARCH:
        index = EmbeddedIndex.open_readonly(folder, ef)
        for k in KS:
            seconds, found = [], []
            for query in queries:
                start = time.perf_counter()
                matches = await index.query(query, k)
                seconds.append(time.perf_counter() - start)
                found.append([int(m.id[1:]) for m in matches])
            row: dict[str, Any] = {"ef_search": ef, "k": k, **percentiles(seconds)}
            baseline = percentiles(exact[k])
            row["exact_p50_ms"] = baseline["p50_ms"]
            row["speedup_p50"] = round(baseline["p50_ms"] / row["p50_ms"], 1)
            if k == 10:
                row["recall_at_10"] = round(recall(np.array(found), truth), 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
        await index.close()
    return rows


def _worker(folder: str, mapped: bool, queries: np.ndarray, ready: Any, stop: Any) -> None:
    """Open the index as a gunicorn worker would (or load a copy), query, then hold it."""
    path = Path(folder)
    if mapped:
        index = EmbeddedIndex.open_readonly(path, 64)
    else:
        copy = Index.restore(str(path / VECTORS), view=False)
        assert copy is not None
        opened = EmbeddedIndex.open_readonly(path, 64)
        index = EmbeddedIndex(path, read_manifest(path), copy, opened._db, writable=False)

    async def answer() -> None:
        for query in queries:
            await index.query(query, 3)

    asyncio.run(answer())
    ready.set()
    stop.wait()


def sharing(folder: Path, queries: np.ndarray) -> list[dict[str, Any]]:
    mapped, copies = (
        workers_memory(_worker, (str(folder), view, queries), WORKERS) for view in (True, False)
    )
    rows: list[dict[str, Any]] = [
        {"workers": WORKERS, "opened": "memory-mapped view (serving)", **mapped},
        {"workers": WORKERS, "opened": "own copy each", **copies},
    ]
    rows[0]["ratio_to_copies"] = round(mapped["pss_mib_total"] / copies["pss_mib_total"], 2)
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("bench-results/retrieval"))
    args = parser.parse_args()
    vectors, queries = synthetic(args.vectors, args.queries)
    with tempfile.TemporaryDirectory(prefix="rillet-retrieval-") as scratch:
        folder = Path(scratch) / "index"
        build_s = asyncio.run(build(folder, vectors))
        print(json.dumps({"vectors": args.vectors, "build_s": round(build_s, 1)}), flush=True)
        result = {
            "vectors": args.vectors,
            "dimensions": DIMENSIONS,
            "build_s": round(build_s, 1),
            "files_mib": {
                p.name: round(p.stat().st_size / 2**20, 1) for p in folder.iterdir() if p.is_file()
            },
            "latency": asyncio.run(latency(folder, vectors, queries)),
            "memory": sharing(folder, queries[:300]),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"retrieval-{args.vectors}.json"
    target.write_text(json.dumps(result, indent=2))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
