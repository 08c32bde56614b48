"""Streaming benchmark: what the runtime adds on top of the model, per worker.

Side by side in one run, with the same light client: streams straight from the fake
model (the baseline) and the same streams through one Rillet worker (gunicorn, uvicorn,
the RAG graph, in-memory state) in front of it. Reported: time to first token and
inter-token gaps (p50, p90, p99) for both, the difference (the runtime's share), and the
resident memory one worker needs per 1,000 open streams.

    python -m rillet_runtime.bench.streaming --out bench-results
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from rillet_runtime.bench.local import free_port

TTFT_MS = 200
TOKEN_DELAY_MS = 20


@dataclass
class Target:
    """How to ask one server for a stream and recognise its tokens in the raw bytes."""

    name: str
    port: int
    path: str
    body: bytes
    token_marker: bytes
    end_marker: bytes


@dataclass
class StreamTiming:
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    ok: bool = False


async def one_stream(target: Target) -> StreamTiming:
    """A raw HTTP/1.1 client: light enough that 1,000 streams do not starve the servers."""
    timing = StreamTiming()
    request = (
        f"POST {target.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(target.body)}\r\nConnection: close\r\n\r\n"
    ).encode() + target.body
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    try:
        writer.write(request)
        tail = b""
        last_token: float | None = None
        while True:
            data = await reader.read(65536)
            if not data:
                break
            now = time.perf_counter()
            window = tail + data
            for _ in range(window.count(target.token_marker)):
                if timing.ttft is None:
                    timing.ttft = now - started
                elif last_token is not None:
                    timing.gaps.append(now - last_token)
                last_token = now
            if target.end_marker in window:
                timing.ok = True
                break
            tail = window[-(len(target.token_marker) - 1) :]
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return timing


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan")}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49] * 1000, "p90": cuts[89] * 1000, "p99": cuts[98] * 1000}


async def wave(target: Target, concurrency: int) -> dict[str, Any]:
    results = await asyncio.gather(*(one_stream(target) for _ in range(concurrency)))
    ttfts = [r.ttft for r in results if r.ttft is not None]
    gaps = [g for r in results for g in r.gaps]
    return {
        "target": target.name,
        "concurrency": concurrency,
        "ok": sum(r.ok for r in results),
        "ttft_ms": percentiles(ttfts),
        "inter_token_ms": percentiles(gaps),
    }


@contextlib.contextmanager
def process(
    args: list[str], env: dict[str, str], ready_url: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rillet_runtime", *args],
            env={**os.environ, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def worker_rss(master: subprocess.Popen[bytes]) -> int:
    return sum(child.memory_info().rss for child in psutil.Process(master.pid).children())


async def memory_per_1000_streams(
    rillet: Target, master: subprocess.Popen[bytes], fake_url: str, tokens: int
) -> dict[str, float]:
    """Hold 1,000 streams open on the one worker and compare its memory with idle."""
    ready_url = f"http://127.0.0.1:{rillet.port}/readyz"
    async with httpx.AsyncClient(timeout=60) as client:
        await client.post(f"{fake_url}/_fake/config", json={"answer_tokens": 100_000})
        idle = worker_rss(master)
        streams = [asyncio.create_task(one_stream(rillet)) for _ in range(1000)]
        for _ in range(300):  # until the worker reports all 1,000 open
            await asyncio.sleep(1)
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(ready_url)).json().get("active_streams", 0) >= 1000:
                    break
    await asyncio.sleep(2)  # every stream past its first token
    loaded = worker_rss(master)
    for task in streams:
        task.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    async with httpx.AsyncClient(timeout=60) as client:
        await client.post(f"{fake_url}/_fake/config", json={"answer_tokens": tokens})
        for _ in range(120):  # until the worker has cancelled every run
            if not (await client.get(ready_url)).json().get("active_streams", 0):
                break
            await asyncio.sleep(0.5)
    return {
        "idle_mib": idle / 2**20,
        "open_1000_mib": loaded / 2**20,
        "per_1000_mib": (loaded - idle) / 2**20,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| concurrency | target | ok | TTFT p50 | TTFT p99 | inter-token p50 | inter-token p99 |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ttft, itl = row["ttft_ms"], row["inter_token_ms"]
        lines.append(
            f"| {row['concurrency']} | {row['target']} | {row['ok']}/{row['concurrency']} | "
            f"{ttft['p50']:.1f} | {ttft['p99']:.1f} | {itl['p50']:.1f} | {itl['p99']:.1f} |"
        )
    return "\n".join(lines)


async def run(levels: list[int], tokens: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="rillet-bench-"))
    fake_port, rillet_port = free_port(), free_port()
    fake_args = [
        "fake-llm",
        "--port",
        str(fake_port),
        "--ttft-ms",
        str(TTFT_MS),
        "--token-delay-ms",
        str(TOKEN_DELAY_MS),
        "--answer-tokens",
        str(tokens),
    ]
    rillet_env = {
        "RILLET_SERVER__PORT": str(rillet_port),
        "RILLET_SERVER__WORKERS": "1",
        "RILLET_SERVER__MAX_STREAMS_PER_WORKER": "1200",
        "RILLET_SERVER__METRICS_DIR": str(work / "metrics"),
        "RILLET_MODEL__PROVIDER": "openai",
        "RILLET_MODEL__NAME": "fake",
        "RILLET_MODEL__BASE_URL": f"http://127.0.0.1:{fake_port}/v1",
    }
    direct = Target(
        "fake model direct (baseline)",
        fake_port,
        "/v1/chat/completions",
        json.dumps(
            {"model": "fake", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        ).encode(),
        b'"delta":{"content":',
        b"[DONE]",
    )
    rillet = Target(
        "through Rillet (1 worker)",
        rillet_port,
        "/v1/chat/stream",
        json.dumps({"message": "How do I install Rillet?"}).encode(),
        b"event: token",
        b"event: done",
    )
    rows: list[dict[str, Any]] = []
    with (
        process(fake_args, {}, f"http://127.0.0.1:{fake_port}/_fake/stats", work / "fake.log"),
        process(
            ["serve"], rillet_env, f"http://127.0.0.1:{rillet_port}/readyz", work / "rillet.log"
        ) as master,
    ):
        await wave(rillet, 20)  # warm up imports, pools and caches
        # Memory first, while the worker's heap has not yet grown for a big wave.
        memory = await memory_per_1000_streams(
            rillet, master, f"http://127.0.0.1:{fake_port}", tokens
        )
        for concurrency in levels:
            for target in (direct, rillet):  # side by side, same client, same moment
                row = await wave(target, concurrency)
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)

    added = []
    for concurrency in levels:
        base, ours = (
            next(r for r in rows if r["concurrency"] == concurrency and r["target"] == t.name)
            for t in (direct, rillet)
        )
        added.append(
            {
                "concurrency": concurrency,
                "added_ttft_p50_ms": ours["ttft_ms"]["p50"] - base["ttft_ms"]["p50"],
                "added_ttft_p99_ms": ours["ttft_ms"]["p99"] - base["ttft_ms"]["p99"],
                "inter_token_p99_ms": ours["inter_token_ms"]["p99"],
                "inter_token_p99_ratio": ours["inter_token_ms"]["p99"]
                / base["inter_token_ms"]["p99"],
            }
        )
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "model": {"ttft_ms": TTFT_MS, "token_delay_ms": TOKEN_DELAY_MS, "answer_tokens": tokens},
        "waves": rows,
        "added_by_runtime": added,
        "memory": memory,
    }


def summary(result: dict[str, Any]) -> str:
    memory = result["memory"]
    lines = [
        table(result["waves"]),
        "",
        "| concurrency | added TTFT p50 | added TTFT p99 | inter-token p99 (ratio to model) |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {a['concurrency']} | {a['added_ttft_p50_ms']:.1f} ms | {a['added_ttft_p99_ms']:.1f} ms"
        f" | {a['inter_token_p99_ms']:.1f} ms ({a['inter_token_p99_ratio']:.2f}x) |"
        for a in result["added_by_runtime"]
    ]
    lines += [
        "",
        f"worker RSS idle {memory['idle_mib']:.0f} MiB, with 1,000 open streams "
        f"{memory['open_1000_mib']:.0f} MiB: {memory['per_1000_mib']:.0f} MiB per 1,000 streams",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--levels", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--tokens", type=int, default=50)
    args = parser.parse_args()
    result = asyncio.run(run(args.levels, args.tokens))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "streaming.json").write_text(json.dumps(result, indent=2))
    (args.out / "streaming.md").write_text(summary(result) + "\n")
    print(summary(result))


if __name__ == "__main__":
    main()
