"""Retrieval end to end: `rillet ingest` into an embedded index, `rillet query`, `rillet
serve` answering from it (workers sharing the memory-mapped file), OpenAI-compatible
embeddings through the Redis cache, and every bad configuration refused at startup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from httpx_sse import connect_sse

from rillet_runtime.retrieval import open_retriever
from rillet_runtime.retrieval.indexes.embedded import VECTORS
from rillet_runtime.retrieval.retriever import reciprocal_rank_fusion
from rillet_runtime.settings import ServerSettings, Settings
from tests.fakes.pinecone import fake_pinecone
from tests.support.processes import free_port, wait_for
from tests.support.servers import (
    FakeLLM,
    RilletServer,
    fake_llm_process,
    rillet_server,
    served,
)

ROOT = Path(__file__).resolve().parents[2]
LONG_SECTION = " ".join(f"Scaling note {i} keeps the latency target." for i in range(150))
GUIDE = f"""# Operator guide

## Install

Install the operator with helm install rillet charts/rillet.

## Scaling

{LONG_SECTION}
"""
PAGE = """<html><head><title>Quokka FAQ</title></head><body><nav>menu</nav>
<h2>Feeding</h2><p>The quokka eats leaves and grasses at night.</p>
<script>var hidden = "zebra";</script></body></html>"""


def rillet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rillet_runtime", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "guide.md").write_text(GUIDE)
    (folder / "notes.txt").write_text("Draining waits for open streams before a pod stops.")
    (folder / "sub" / "faq.html").write_text(PAGE)
    (folder / "image.png").write_bytes(b"\x89PNG")  # not a document: skipped
    return folder


def ingest(corpus: Path, index: Path, env: dict[str, str] | None = None) -> str:
    done = rillet("ingest", str(corpus), "--index", str(index), env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_ingest_mirrors_the_folder_and_skips_what_it_has(corpus: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    first = ingest(corpus, index)
    # guide: Install + Scaling (1,050 tokens: three windows); notes; faq
    assert first.startswith("3 files, 6 chunks: 6 added, 0 removed, 0 unchanged")
    written = (index / VECTORS).stat().st_mtime_ns

    assert ingest(corpus, index).startswith("3 files, 6 chunks: 0 added, 0 removed, 6 unchanged")
    assert (index / VECTORS).stat().st_mtime_ns == written  # nothing rewritten

    (corpus / "guide.md").write_text(GUIDE.replace("helm install", "helm upgrade --install"))
    assert ingest(corpus, index).startswith("3 files, 6 chunks: 1 added, 1 removed, 5 unchanged")

    (corpus / "notes.txt").unlink()
    assert ingest(corpus, index).startswith("2 files, 5 chunks: 0 added, 1 removed, 5 unchanged")

    found = rillet("query", "what does the quokka eat", "--index", str(index), "-k", "1")
    assert found.returncode == 0, found.stderr
    assert "Quokka FAQ: Feeding  (sub/faq.html" in found.stdout
    assert "zebra" not in found.stdout
    assert "menu" not in found.stdout
    filtered = rillet("query", "quokka", "--index", str(index), "--where", "source=guide.md")
    assert "faq.html" not in filtered.stdout
    assert "guide.md" in filtered.stdout


def ask(url: str, question: str) -> list[dict[str, object]]:
    """The `sources` event of a streamed answer, read with a real SSE client."""
    with (
        httpx.Client(timeout=30) as client,
        connect_sse(client, "POST", f"{url}/v1/chat/stream", json={"message": question}) as sse,
    ):
        events = {event.event: json.loads(event.data) for event in sse.iter_sse()}
    found = events["sources"]["sources"]
    assert isinstance(found, list)
    return found


def worker_maps(server: RilletServer, name: str) -> list[bool]:
    """Which gunicorn workers map the file, once all of them are up (readiness needs one;
    the stream capacity gauge sums every started worker's cap)."""
    line = f"rillet_stream_capacity {2 * ServerSettings().max_streams_per_worker}.0"
    wait_for(line, lambda: line in server.metrics().splitlines(), timeout=30)
    workers = psutil.Process(server.proc.pid).children()
    return [any(m.path.endswith(name) for m in w.memory_maps(grouped=True)) for w in workers]


def test_serve_answers_from_the_index_and_workers_share_its_file(
    corpus: Path, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    ingest(corpus, index)
    with rillet_server(tmp_path, workers=2, retrieval__embedded__path=str(index)) as server:
        sources = ask(server.url, "What does the quokka eat at night?")
        assert sources[0]["title"] == "Quokka FAQ: Feeding"
        assert sources[0]["source"] == "sub/faq.html"
        assert all(set(s) == {"id", "title", "score", "source"} for s in sources)
        assert all(isinstance(s["score"], float) and s["score"] > 0 for s in sources)
        # Each gunicorn worker maps the one vectors file (usearch view), none holds a copy.
        assert worker_maps(server, VECTORS) == [True, True]
        metrics = server.metrics()
        for stage in ("embedding", "retrieval"):
            assert f'rillet_stage_duration_seconds_count{{stage="{stage}"}}' in metrics


@pytest.fixture(scope="module")
def fake(module_tmp: Path) -> Iterator[FakeLLM]:
    with fake_llm_process(module_tmp) as fake:
        yield fake


def embedded_texts(fake: FakeLLM) -> int:
    count = fake.stats()["embedded_texts"]
    assert isinstance(count, int)
    return count


def test_openai_compatible_embeddings_through_the_redis_cache(
    corpus: Path, tmp_path: Path, fake: FakeLLM, redis_server: object
) -> None:
    """The real openai SDK against `rillet fake-llm`'s /v1/embeddings (OpenAI's wire format)."""
    embeddings = {
        "RILLET_EMBEDDINGS__PROVIDER": "openai",
        "RILLET_EMBEDDINGS__MODEL": "fake-embed",
        "RILLET_EMBEDDINGS__BASE_URL": f"{fake.url}/v1",
        "RILLET_EMBEDDINGS__DIMENSIONS": "256",
    }
    url = redis_server.url  # type: ignore[attr-defined]
    with_redis = {"RILLET_STATE__CHECKPOINTER": "redis", "RILLET_STATE__REDIS_URL": url}
    index = tmp_path / "index"
    before = embedded_texts(fake)
    assert ingest(corpus, index, embeddings).startswith("3 files, 6 chunks: 6 added")
    assert embedded_texts(fake) - before == 6 + 1  # the chunks and one dimension probe
    assert '"embedding_model": "openai:fake-embed:256"' in (index / "manifest.json").read_text()
    # With Redis, ingest embeds through its cache: a second index of the same files (say,
    # rebuilt from scratch) costs one request, for whatever the cache does not hold yet.
    before = embedded_texts(fake)
    ingest(corpus, tmp_path / "first", {**embeddings, **with_redis})
    middle = embedded_texts(fake)
    ingest(corpus, tmp_path / "second", {**embeddings, **with_redis})
    assert middle - before == 6 + 1
    assert embedded_texts(fake) == middle  # every chunk and the probe came from Redis

    settings = {k.removeprefix("RILLET_").lower(): v for k, v in embeddings.items()}
    with rillet_server(
        tmp_path,
        workers=1,
        retrieval__embedded__path=str(index),
        state__checkpointer="redis",
        state__redis_url=url,
        **settings,
    ) as server:
        first = embedded_texts(fake)
        assert ask(server.url, "Which animal eats grasses?")[0]["source"] == "sub/faq.html"
        assert embedded_texts(fake) == first + 1
        assert ask(server.url, "Which animal eats grasses?")[0]["source"] == "sub/faq.html"
        assert embedded_texts(fake) == first + 1  # the second question's vector came from Redis
        metrics = server.metrics()
        assert 'rillet_cache_requests_total{cache="embedding",result="hit"}' in metrics


def refused(tmp_path: Path, **settings: str) -> str:
    """`rillet serve` must exit 2 before starting workers, with one readable line."""
    env = {f"RILLET_{k.upper()}": v for k, v in settings.items()}
    env["RILLET_SERVER__METRICS_DIR"] = str(tmp_path / "metrics")
    scrubbed = {
        k: v for k, v in os.environ.items() if k not in ("PINECONE_API_KEY", "OPENAI_API_KEY")
    }
    done = subprocess.run(
        [sys.executable, "-m", "rillet_runtime", "serve"],
        env={**scrubbed, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr.strip()


def test_bad_configurations_fail_at_startup_naming_the_setting(
    corpus: Path, tmp_path: Path, fake: FakeLLM
) -> None:
    index = tmp_path / "index"
    ingest(corpus, index)

    assert refused(tmp_path, retrieval__embedded__path=str(tmp_path)).startswith(
        "invalid setting retrieval.embedded.path:"
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("manifest.json", "chunks.sqlite"):
        (broken / name).write_bytes((index / name).read_bytes())
    (broken / VECTORS).write_bytes((index / VECTORS).read_bytes()[:100])
    assert refused(tmp_path, retrieval__embedded__path=str(broken)).startswith(
        "invalid setting retrieval.embedded.path: cannot open the index"
    )
    mismatch = refused(tmp_path, retrieval__embedded__path=str(index), embeddings__dimensions="256")
    assert mismatch.startswith("invalid setting embeddings: the index in")
    assert "rillet-hashing-v1-384" in mismatch
    assert "rillet-hashing-v1-256" in mismatch

    pinecone = {
        "retrieval__provider": "pinecone",
        "retrieval__pinecone__host": "http://127.0.0.1:9",
    }
    assert refused(tmp_path, **pinecone).startswith("invalid setting retrieval.pinecone.api_key:")
    with fake_pinecone(384, api_key="right") as (host, _):
        wrong_key = {**pinecone, "retrieval__pinecone__host": host}
        assert "the API key was rejected" in refused(
            tmp_path, **wrong_key, retrieval__pinecone__api_key="wrong"
        )
        assert refused(
            tmp_path, **wrong_key, retrieval__pinecone__api_key="right", embeddings__dimensions="64"
        ) == (
            "invalid setting retrieval.pinecone.host: holds 384-dimensional vectors, "
            "the embedder makes 64"
        )
    assert refused(tmp_path, **pinecone, retrieval__pinecone__api_key="k").startswith(
        "invalid setting retrieval.pinecone.host: cannot use the index"
    )

    qdrant = {
        "retrieval__provider": "qdrant",
        "retrieval__qdrant__path": str(tmp_path / "qdrant"),
        "retrieval__qdrant__collection": "nothing-here",
    }
    assert refused(tmp_path, **qdrant) == (
        "invalid setting retrieval.qdrant.collection: no such collection: run `rillet ingest`"
    )

    openai = {"embeddings__provider": "openai", "retrieval__embedded__path": str(index)}
    assert refused(tmp_path, **openai).startswith("invalid setting embeddings.api_key:")
    assert refused(
        tmp_path, **openai, embeddings__base_url=f"{fake.url}/v1", embeddings__api_key="bad"
    ).startswith("invalid setting embeddings.api_key: the embeddings endpoint failed")
    assert "retrieval.hybrid needs the embedded index" in refused(
        tmp_path, **qdrant, retrieval__hybrid="true"
    )


async def test_hybrid_fuses_vector_and_keyword_rankings(corpus: Path, tmp_path: Path) -> None:
    """Hybrid scores are the RRF of the two rankings; switched off, they are cosines."""
    index = tmp_path / "index"
    ingest(corpus, index)
    question = "what does the quokka eat at night"
    settings = Settings(retrieval={"embedded": {"path": str(index)}})
    async with open_retriever(settings) as hybrid:
        assert hybrid.keyword is not None
        prepared = await hybrid.prepare_query(question)
        hits = await hybrid.search(prepared, 3, 0.0)
        vector = await hybrid.index.query(prepared.vector, 20, score_threshold=0.0)
        keyword = hybrid.keyword.search(prepared.terms, 20)
    expected = reciprocal_rank_fusion([[m.id for m in vector], [i for i, _ in keyword]], 60)[:3]
    assert [(h.id, h.score) for h in hits] == [(i, round(s, 5)) for i, s in expected]
    assert hits[0].title == "Quokka FAQ: Feeding"

    plain = Settings(retrieval={"embedded": {"path": str(index)}, "hybrid": False})
    async with open_retriever(plain) as vector_only:
        assert vector_only.keyword is None
        hits = await vector_only.search(await vector_only.prepare_query(question), 3, 0.0)
    assert [(h.id, h.score) for h in hits] == [(m.id, round(m.score, 4)) for m in vector[:3]]


def test_make_run_ingests_the_docs_and_answers_from_them(tmp_path: Path) -> None:
    """`make run` as the README gives it, its docs index in a fresh folder."""
    port = free_port()
    index = tmp_path / "docs-index"
    log = tmp_path / "make-run.log"
    env = {
        "RILLET_SERVER__PORT": str(port),
        "RILLET_SERVER__METRICS_DIR": str(tmp_path / "metrics"),
        "RILLET_SERVER__METRICS_PORT": str(free_port()),
    }
    command = ["make", "--no-print-directory", "run", f"DOCS_INDEX={index}"]
    with served(command, env, log, "/readyz", port, cwd=ROOT) as server:
        sources = ask(server.url, "How do I install Rillet?")
        assert any(s["source"] == "getting-started.md" for s in sources)
    docs = len(list((ROOT / "docs").rglob("*.md")))
    assert f"{docs} files, " in log.read_text()
    assert (index / "manifest.json").is_file()
