"""Which HNSW library should back the embedded vector index? Measured side by side.

    python -m bench.vector_libs --vectors 100000 --out bench-results

Runs in its own venv (`make bench-vectors`): usearch, hnswlib and faiss-cpu are not
runtime dependencies until one is chosen. The same synthetic 384-dimensional vectors
(a mixture of Gaussian clusters, normalised: uniform random vectors have no neighbours
worth the name and make every index look bad) and the same queries go to each library,
with the same graph parameters (M, efConstruction); exact top-10 by brute force is the
reference for recall. Reported per library and efSearch: build seconds, single-query
latency p50/p99 at k=10, recall@10, index file size, and whether the file opens
memory-mapped (shared by every worker of a pod through the page cache).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DIMENSIONS = 384
M, EF_CONSTRUCTION = 16, 200
EF_SEARCH = (16, 32, 64, 128)
K = 10
BUILD_THREADS = 2  # every core here; queries run one at a time, as a request would


def synthetic(count: int, queries: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(16, count // 500), DIMENSIONS)).astype(np.float32)

    def draw(n: int) -> np.ndarray:
        points = centres[rng.integers(0, len(centres), n)]
        points = points + 0.35 * rng.normal(size=(n, DIMENSIONS)).astype(np.float32)
        norms: np.ndarray = points / np.linalg.norm(points, axis=1, keepdims=True)
        return norms.astype(np.float32)

    return draw(count), draw(queries)


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    found = []
    for start in range(0, len(queries), 256):
        scores = queries[start : start + 256] @ vectors.T
        found.append(np.argsort(-scores, axis=1)[:, :k])
    return np.vstack(found)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


Search = Callable[[np.ndarray], np.ndarray]


def timed_queries(search: Search, queries: np.ndarray) -> dict[str, Any]:
    latencies, results = [], []
    for query in queries:
        start = time.perf_counter()
        results.append(search(query))
        latencies.append(time.perf_counter() - start)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000, "ids": np.array(results)}


def build_usearch(vectors: np.ndarray, dtype: str) -> tuple[Any, float]:
    """The index and the seconds its build took."""
    from usearch.index import Index

    index = Index(
        ndim=DIMENSIONS,
        metric="cos",
        dtype=dtype,
        connectivity=M,
        expansion_add=EF_CONSTRUCTION,
    )
    start = time.perf_counter()
    index.add(np.arange(len(vectors)), vectors, threads=BUILD_THREADS)
    return index, time.perf_counter() - start


def build_faiss(vectors: np.ndarray) -> tuple[Any, float]:
    import faiss  # type: ignore[import-not-found]

    faiss.omp_set_num_threads(BUILD_THREADS)
    index = faiss.IndexHNSWFlat(DIMENSIONS, M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    start = time.perf_counter()
    index.add(vectors)
    build = time.perf_counter() - start
    faiss.omp_set_num_threads(1)
    return index, build


def run_usearch(
    vectors: np.ndarray, queries: np.ndarray, work: Path, dtype: str = "f32"
) -> list[dict[str, Any]]:
    from usearch.index import Index

    index, build = build_usearch(vectors, dtype)
    path = work / "index.usearch"
    index.save(str(path))
    viewed = Index.restore(str(path), view=True)  # memory-mapped, not copied
    assert viewed is not None
    rows = []
    for ef in EF_SEARCH:
        viewed.expansion_search = ef  # type: ignore[misc]  # a setter the stubs miss
        measured = timed_queries(lambda q: viewed.search(q, K).keys, queries)
        rows.append({"ef_search": ef, "build_s": build, **measured, "mmap": True, "path": path})
    return rows


def run_hnswlib(vectors: np.ndarray, queries: np.ndarray, work: Path) -> list[dict[str, Any]]:
    import hnswlib  # type: ignore[import-untyped]

    index = hnswlib.Index(space="cosine", dim=DIMENSIONS)
    index.init_index(max_elements=len(vectors), M=M, ef_construction=EF_CONSTRUCTION)
    index.set_num_threads(BUILD_THREADS)
    start = time.perf_counter()
    index.add_items(vectors, np.arange(len(vectors)))
    build = time.perf_counter() - start
    index.set_num_threads(1)
    path = work / "index.hnswlib"
    index.save_index(str(path))
    rows = []
    for ef in EF_SEARCH:
        index.set_ef(ef)
        measured = timed_queries(lambda q: index.knn_query(q, k=K)[0][0], queries)
        rows.append({"ef_search": ef, "build_s": build, **measured, "mmap": False, "path": path})
    return rows


def run_faiss(vectors: np.ndarray, queries: np.ndarray, work: Path) -> list[dict[str, Any]]:
    import faiss

    index, build = build_faiss(vectors)
    path = work / "index.faiss"
    faiss.write_index(index, str(path))
    mapped = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
    rows = []
    for ef in EF_SEARCH:
        mapped.hnsw.efSearch = ef
        measured = timed_queries(lambda q: mapped.search(q[None, :], K)[1][0], queries)
        rows.append({"ef_search": ef, "build_s": build, **measured, "mmap": True, "path": path})
    return rows


def run_usearch_f16(vectors: np.ndarray, queries: np.ndarray, work: Path) -> list[dict[str, Any]]:
    """Half-precision vectors: half the file and page cache, at some recall."""
    return run_usearch(vectors, queries, work, dtype="f16")


def _open(library: str, path: str, mapped: bool) -> Search:
    if library == "faiss":
        import faiss

        index = faiss.read_index(path, faiss.IO_FLAG_MMAP if mapped else 0)
        index.hnsw.efSearch = 64
        return lambda q: index.search(q[None, :], K)[1][0]
    from usearch.index import Index

    viewed = Index.restore(path, view=mapped)
    assert viewed is not None
    viewed.expansion_search = 64  # type: ignore[misc]  # a setter the stubs miss
    return lambda q: viewed.search(q, K).keys


def _serve_queries(
    library: str, path: str, mapped: bool, queries: np.ndarray, ready: Any, stop: Any
) -> None:
    """One worker: open the index, answer queries (touching its pages), then hold it."""
    search = _open(library, path, mapped)
    for query in queries:
        search(query)
    ready.set()
    stop.wait()


def _save(library: str, vectors: np.ndarray, path: str) -> None:
    if library == "faiss":
        import faiss

        faiss.write_index(build_faiss(vectors)[0], path)
    else:
        build_usearch(vectors, "f16")[0].save(path)


def workers_memory(
    target: Callable[..., None], args: tuple[Any, ...], workers: int
) -> dict[str, float]:
    """Spawn `workers` processes running `target(*args, ready, stop)`, and once every one
    is ready (its index open and queried), sum their memory. PSS splits shared pages among
    the processes using them, so its sum is what a pod really uses; RSS counts shared pages
    once per process."""
    import multiprocessing

    import psutil

    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    readies = [context.Event() for _ in range(workers)]
    processes = [context.Process(target=target, args=(*args, r, stop)) for r in readies]
    for process in processes:
        process.start()
    for ready in readies:
        ready.wait(900)
    infos = [psutil.Process(p.pid).memory_full_info() for p in processes]
    stop.set()
    for process in processes:
        process.join()
    return {
        "pss_mib_total": round(sum(i.pss for i in infos) / 2**20, 1),
        "rss_mib_total": round(sum(i.rss for i in infos) / 2**20, 1),
    }


def sharing(vectors: np.ndarray, queries: np.ndarray, workers: int = 4) -> list[dict[str, Any]]:
    """Memory of `workers` processes holding the same index, opened memory-mapped versus
    each loading its own copy."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="rillet-vectors-") as scratch:
        for library in ("faiss", "usearch"):
            path = str(Path(scratch) / f"index.{library}")
            _save(library, vectors, path)
            for mapped in (True, False):
                memory = workers_memory(_serve_queries, (library, path, mapped, queries), workers)
                rows.append(
                    {
                        "library": library,
                        "workers": workers,
                        "mmap": mapped,
                        "file_mib": round(Path(path).stat().st_size / 2**20, 1),
                        **memory,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


LIBRARIES = {
    "usearch": run_usearch,
    "usearch-f16": run_usearch_f16,
    "hnswlib": run_hnswlib,
    "faiss": run_faiss,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument(
        "--sharing", action="store_true", help="only: memory of 4 workers, mmap vs copies"
    )
    options = parser.parse_args()
    vectors, queries = synthetic(options.vectors, options.queries)
    if options.sharing:
        options.out.mkdir(parents=True, exist_ok=True)
        found = sharing(vectors, queries)
        (options.out / "vector-sharing.json").write_text(json.dumps(found, indent=2))
        return
    truth = exact_top_k(vectors, queries, K)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rillet-vectors-") as scratch:
        for name, run in LIBRARIES.items():
            work = Path(scratch) / name
            work.mkdir()
            for row in run(vectors, queries, work):
                rows.append(
                    {
                        "library": name,
                        "ef_search": row["ef_search"],
                        "build_s": round(row["build_s"], 1),
                        "p50_ms": round(row["p50_ms"], 3),
                        "p99_ms": round(row["p99_ms"], 3),
                        "recall_at_10": round(recall(row["ids"], truth), 4),
                        "file_mib": round(row["path"].stat().st_size / 2**20, 1),
                        "mmap": row["mmap"],
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    options.out.mkdir(parents=True, exist_ok=True)
    result = {
        "vectors": options.vectors,
        "queries": options.queries,
        "M": M,
        "ef_construction": EF_CONSTRUCTION,
        "rows": rows,
    }
    (options.out / "vector-libs.json").write_text(json.dumps(result, indent=2))
    print("\n| library | efSearch | build s | p50 ms | p99 ms | recall@10 | file MiB | mmap |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['library']} | {r['ef_search']} | {r['build_s']} | {r['p50_ms']} | "
            f"{r['p99_ms']} | {r['recall_at_10']} | {r['file_mib']} | {r['mmap']} |"
        )


if __name__ == "__main__":
    main()
