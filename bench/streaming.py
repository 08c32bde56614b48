"""Streaming benchmark: what each serving stack adds on top of the model, side by side.

In one run, on one machine, with one load generator (`rillet bench`'s) and the fake model
at a fixed time to first token and delay between tokens:

- model: the fake model itself, through its OpenAI-compatible API: the baseline;
- floor: a bare Starlette endpoint relaying the model's tokens as SSE, no graph: the
  floor for Python SSE here (`bench.floor`);
- rillet (memory) and rillet (redis): `rillet serve` with the built-in RAG graph;
- rillet (langgraph api): the same, in memory, driven through LangGraph's Agent Server API
  (`messages-tuple`), as LangGraph's clients drive it;
- langgraph: the same graph on LangGraph's own server (`langgraph dev`, in-memory), when
  its virtual environment is there (`make bench` builds it).

Every server runs one worker process. At each concurrency level, each server gets the
same wave of streams (one per client, all at once), in rotating order. Reported per
server and level: TTFT and inter-token latency percentiles, the time to first token and
inter-token p99 they add to the model's, the server's CPU seconds per 1,000 model tokens;
per server: the highest level whose added TTFT p99 stays under 50 ms, and the resident
memory per 1,000 open streams (after the waves, on a fresh process of each server).

    python -m bench.streaming --out bench-results [--langgraph-venv DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.floor import serve_command as floor_command
from rillet_runtime import loadgen
from tests.support.processes import (
    RedisServer,
    free_port,
    start_in_own_session,
    stop_process_group,
    wait_until_ready,
)

TTFT_MS = 200
TOKEN_DELAY_MS = 20
BOUNDS_MS = (50, 250, 1000)  # added TTFT p99 bounds; the target is the first
QUESTION = "How do I install Rillet?"
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Server:
    name: str
    url: str
    api: loadgen.Api
    model: str
    proc: subprocess.Popen[bytes]
    api_key: str | None = None

    def tree(self) -> list[psutil.Process]:
        parent = psutil.Process(self.proc.pid)
        return [parent, *parent.children(recursive=True)]

    def _sum(self, measure: Callable[[psutil.Process], float]) -> float:
        total = 0.0
        for process in self.tree():
            with contextlib.suppress(psutil.Error):  # a child may exit meanwhile
                total += measure(process)
        return total

    def cpu_seconds(self) -> float:
        return self._sum(lambda p: p.cpu_times().user + p.cpu_times().system)

    def rss(self) -> float:
        return self._sum(lambda p: p.memory_info().rss)


@contextlib.contextmanager
def started(
    command: list[str], env: dict[str, str], ready_url: str, log: Path, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_in_own_session(command, env, log, cwd)
    try:
        wait_until_ready(ready_url, proc, log, timeout=120)
        yield proc
    finally:
        stop_process_group(proc, signal.SIGINT, timeout=20)


async def wave(server: Server, concurrency: int, answer_tokens: int) -> dict[str, Any]:
    plan = loadgen.LoadPlan(concurrency, requests=concurrency, timeout_seconds=120)
    cpu_before, wall_before = server.cpu_seconds(), time.perf_counter()
    results = await loadgen.run_load(
        server.url, server.api, plan, [QUESTION], server.model, api_key=server.api_key
    )
    wall = time.perf_counter() - wall_before
    cpu = server.cpu_seconds() - cpu_before
    summary = loadgen.summarize(results, wall)
    model_tokens = summary["ok"] * answer_tokens
    return {
        "server": server.name,
        "concurrency": concurrency,
        **summary,
        "cpu_seconds": cpu,
        "cpu_seconds_per_1000_tokens": cpu / model_tokens * 1000 if model_tokens else None,
    }


async def memory_per_1000_streams(server: Server, fake_url: str, answer_tokens: int) -> float:
    """Hold 1,000 streams open (a slow, endless answer: open, not busy) and compare the
    server's memory with its idle memory."""
    async with httpx.AsyncClient(timeout=60) as client:
        slow = {"answer_tokens": 1_000_000, "token_delay_ms": 500}
        await client.post(f"{fake_url}/_fake/config", json=slow)
        idle = server.rss()
        progress = loadgen.Progress()
        plan = loadgen.LoadPlan(1000, requests=1000, timeout_seconds=3600)
        load = asyncio.create_task(
            loadgen.run_load(server.url, server.api, plan, [QUESTION], server.model, progress)
        )
        stats_url = f"{fake_url}/_fake/stats"
        for _ in range(240):  # until the model streams to all 1,000
            await asyncio.sleep(1)
            if (await client.get(stats_url)).json()["active_streams"] >= 1000:
                break
        await asyncio.sleep(3)  # every stream past its first tokens
        loaded = server.rss()
        load.cancel()
        await asyncio.gather(load, return_exceptions=True)
        usual = {"answer_tokens": answer_tokens, "token_delay_ms": TOKEN_DELAY_MS}
        await client.post(f"{fake_url}/_fake/config", json=usual)
        for _ in range(120):  # until the server has let go of every upstream stream
            if not (await client.get(stats_url)).json()["active_streams"]:
                break
            await asyncio.sleep(0.5)
    return (loaded - idle) / 2**20


def derive(waves: list[dict[str, Any]], servers: list[str]) -> dict[str, Any]:
    """Added latency against the model at the same level, and per bound the highest level
    reached with added TTFT p99 under it (levels in order; a failed stream ends the climb)."""
    by_key = {(w["server"], w["concurrency"]): w for w in waves}
    levels = sorted({w["concurrency"] for w in waves})
    added: list[dict[str, Any]] = []
    for name in servers:
        for level in levels:
            ours, model = by_key.get((name, level)), by_key.get(("model", level))
            if not ours or not model or ours["ttft_ms"]["p99"] is None:
                continue
            added.append(
                {
                    "server": name,
                    "concurrency": level,
                    "all_ok": ours["ok"] == level,
                    "added_ttft_p50_ms": ours["ttft_ms"]["p50"] - model["ttft_ms"]["p50"],
                    "added_ttft_p99_ms": ours["ttft_ms"]["p99"] - model["ttft_ms"]["p99"],
                    "added_inter_token_p99_ms": ours["inter_token_ms"]["p99"]
                    - model["inter_token_ms"]["p99"],
                    "cpu_seconds_per_1000_tokens": ours["cpu_seconds_per_1000_tokens"],
                }
            )
    capacity: dict[str, dict[str, int | None]] = {}
    for bound in BOUNDS_MS:
        capacity[str(bound)] = {}
        for name in servers:
            reached: int | None = None
            for level in levels:
                row = next(
                    (a for a in added if a["server"] == name and a["concurrency"] == level), None
                )
                if row is None or not row["all_ok"] or row["added_ttft_p99_ms"] >= bound:
                    break
                reached = level
            capacity[str(bound)][name] = reached
    return {"added": added, "max_concurrency_under_bound": capacity}


def ratios(result: dict[str, Any]) -> dict[str, Any]:
    """Rillet against LangGraph's server and against the floor: the highest concurrency
    under each bound, and CPU per token (median over the levels every stream completed)."""
    cpu: dict[str, list[float]] = {}
    for row in result["added"]:
        if row.get("all_ok", True) and row["cpu_seconds_per_1000_tokens"]:
            cpu.setdefault(row["server"], []).append(row["cpu_seconds_per_1000_tokens"])
    mean_cpu = {name: statistics.median(v) for name, v in cpu.items()}
    out: dict[str, Any] = {}
    for ours in ("rillet (memory)", "rillet (redis)", "rillet (langgraph api)"):
        for other in ("langgraph", "floor"):
            concurrency = {}
            for bound, reached in result["max_concurrency_under_bound"].items():
                theirs = reached.get(other)
                concurrency[bound] = (reached.get(ours) or 0) / theirs if theirs else None
            out[f"{ours} / {other}"] = {
                "max_concurrency": concurrency,
                "cpu_per_token": mean_cpu[ours] / mean_cpu[other]
                if ours in mean_cpu and other in mean_cpu
                else None,
            }
    return out


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def summary(result: dict[str, Any]) -> str:
    lines = [
        "| server | streams | TTFT p50 | TTFT p99 | ITL p99 | added TTFT p50 | added TTFT p99 "
        "| added ITL p99 | CPU s / 1k tokens |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    added = {(a["server"], a["concurrency"]): a for a in result["added"]}
    for wave_row in result["waves"]:
        a = added.get((wave_row["server"], wave_row["concurrency"]), {})
        lines.append(
            f"| {wave_row['server']} | {wave_row['ok']}/{wave_row['concurrency']} "
            f"| {fmt(wave_row['ttft_ms']['p50'])} | {fmt(wave_row['ttft_ms']['p99'])} "
            f"| {fmt(wave_row['inter_token_ms']['p99'])} | {fmt(a.get('added_ttft_p50_ms'))} "
            f"| {fmt(a.get('added_ttft_p99_ms'))} | {fmt(a.get('added_inter_token_p99_ms'))} "
            f"| {fmt(wave_row['cpu_seconds_per_1000_tokens'], 3)} |"
        )
    lines += ["", "Highest concurrency with added TTFT p99 under each bound (every stream ok):"]
    for bound, reached in result["max_concurrency_under_bound"].items():
        shown = ", ".join(f"{name} {level or '-'}" for name, level in reached.items())
        lines.append(f"- {bound} ms: {shown}")
    lines += ["", "Resident memory per 1,000 open streams (MiB):"]
    for name, mib in result["memory_per_1000_streams_mib"].items():
        lines.append(f"- {name}: {mib:.0f}")
    lines += ["", "Ratios:"]
    for key, values in result["ratios"].items():
        concurrency = values["max_concurrency"].items()
        by_bound = ", ".join(f"{fmt(ratio, 2)}x under {bound} ms" for bound, ratio in concurrency)
        lines.append(
            f"- {key}: max concurrency {by_bound}; CPU per token {fmt(values['cpu_per_token'], 2)}x"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name in sorted({w["server"] for w in result["waves"]} - {"model"}):
        rows = [w for w in result["waves"] if w["server"] == name]
        levels = [w["concurrency"] for w in rows]
        left.plot(levels, [w["ttft_ms"]["p99"] for w in rows], marker="o", label=name)
        right.plot(levels, [w["cpu_seconds_per_1000_tokens"] for w in rows], marker="o")
    model = [w for w in result["waves"] if w["server"] == "model"]
    left.plot(
        [w["concurrency"] for w in model],
        [w["ttft_ms"]["p99"] for w in model],
        "k--",
        label="model",
    )
    left.set(
        xscale="log",
        yscale="log",
        xlabel="concurrent streams (one worker)",
        ylabel="TTFT p99 (ms)",
        title="time to first token, p99",
    )
    right.set(
        xscale="log",
        xlabel="concurrent streams (one worker)",
        ylabel="CPU s per 1,000 tokens",
        title="server CPU per token",
    )
    left.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


ServerStart = Callable[[], contextlib.AbstractContextManager[Server]]


@contextlib.contextmanager
def floor_server(work: Path, fake_url: str) -> Iterator[Server]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"RILLET_FLOOR_MODEL_URL": f"{fake_url}/v1"}
    with started(floor_command(port), env, f"{url}/readyz", work / f"floor-{port}.log") as proc:
        yield Server("floor", url, loadgen.APIS["rillet"], "", proc)


@contextlib.contextmanager
def rillet_server(
    name: str, work: Path, env: dict[str, str], api: str = "rillet"
) -> Iterator[Server]:
    """`rillet serve`, driven through one of its APIs: the native one, or LangGraph's."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **env,
        "RILLET_SERVER__PORT": str(port),
        "RILLET_SERVER__WORKERS": "1",
        "RILLET_SERVER__MAX_STREAMS_PER_WORKER": "1200",
        "RILLET_SERVER__MAX_EVENT_LOOP_LAG_MS": "0",  # per-stream cost, not admission
        "RILLET_SERVER__METRICS_DIR": str(work / f"metrics-{port}"),
        "RILLET_SERVER__METRICS_PORT": str(free_port()),
    }
    command = [sys.executable, "-m", "rillet_runtime", "serve"]
    assistant = "agent" if api == "langgraph" else ""
    with started(command, env, f"{url}/readyz", work / f"rillet-{port}.log") as proc:
        yield Server(name, url, loadgen.APIS[api], assistant, proc)


@contextlib.contextmanager
def langgraph_server(work: Path, env: dict[str, str], venv: Path) -> Iterator[Server]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app_dir = work / f"langgraph-app-{port}"
    app_dir.mkdir()
    config = {"dependencies": ["."], "graphs": {"agent": "bench.langgraph_app:graph"}}
    (app_dir / "langgraph.json").write_text(json.dumps(config))
    env = {
        **env,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "runtime"), str(ROOT)]),
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LOG_LEVEL": "WARNING",
        "RILLET_SERVER__MAX_STREAMS_PER_WORKER": "1200",  # its model pool, as Rillet's
    }
    command = [
        str(venv / "bin" / "langgraph"),
        "dev",
        "--no-browser",
        "--no-reload",
        "--port",
        str(port),
        "--n-jobs-per-worker",
        "1200",
        "--config",
        str(app_dir / "langgraph.json"),
    ]
    log = work / f"langgraph-{port}.log"
    with started(command, env, f"{url}/ok", log, cwd=app_dir) as proc:
        yield Server("langgraph", url, loadgen.APIS["langgraph"], "agent", proc)


def server_starts(
    work: Path, fake_url: str, redis_url: str, langgraph_venv: Path | None
) -> list[tuple[str, ServerStart]]:
    """Each server under test (all but the model), as a way to start a fresh process."""
    model_env = {
        "RILLET_MODEL__PROVIDER": "openai",
        "RILLET_MODEL__NAME": "fake",
        "RILLET_MODEL__BASE_URL": f"{fake_url}/v1",
    }
    redis_env = {"RILLET_STATE__CHECKPOINTER": "redis", "RILLET_STATE__REDIS_URL": redis_url}
    starts: list[tuple[str, ServerStart]] = [
        ("floor", lambda: floor_server(work, fake_url)),
        ("rillet (memory)", lambda: rillet_server("rillet (memory)", work, model_env)),
        (
            "rillet (redis)",
            lambda: rillet_server("rillet (redis)", work, {**model_env, **redis_env}),
        ),
        (
            "rillet (langgraph api)",
            lambda: rillet_server("rillet (langgraph api)", work, model_env, api="langgraph"),
        ),
    ]
    if langgraph_venv is not None:
        starts.append(("langgraph", lambda: langgraph_server(work, model_env, langgraph_venv)))
    return starts


async def measure_waves(
    model: Server, starts: list[tuple[str, ServerStart]], levels: list[int], tokens: int
) -> list[dict[str, Any]]:
    """Every level's wave on every server, all of them up at once, in rotating order."""
    with contextlib.ExitStack() as stack:
        servers = [model, *(stack.enter_context(start()) for _, start in starts)]
        for server in servers:  # warm up imports, pools and caches
            await wave(server, 10, tokens)
        waves: list[dict[str, Any]] = []
        for index, level in enumerate(levels):
            order = servers[index % len(servers) :] + servers[: index % len(servers)]
            for server in order:
                row = await wave(server, level, tokens)
                waves.append(row)
                print(
                    f"{level:>5} {server.name:<16} ok {row['ok']:>4}  TTFT p99 "
                    f"{fmt(row['ttft_ms']['p99'])} ms",
                    flush=True,
                )
    names = [s.name for s in servers]
    waves.sort(key=lambda w: (w["concurrency"], names.index(w["server"])))
    return waves


async def measure_memory(
    starts: list[tuple[str, ServerStart]], fake_url: str, tokens: int
) -> dict[str, float]:
    """Memory per 1,000 open streams, each server a fresh process of its own, one at a time.

    After the waves, not before: LangGraph's server goes on running the 1,000 streams its
    clients left (the memory test cancels them), and they keep failing the runs that come
    next (its model pool exhausted, the circuit breaker open); a fresh process also measures
    the streams alone, not a heap the waves have grown.
    """
    memory = {}
    for name, start in starts:
        with start() as server:
            await wave(server, 10, tokens)  # warm up imports, pools and caches
            memory[name] = await memory_per_1000_streams(server, fake_url, tokens)
        print(f"{name}: {memory[name]:.0f} MiB per 1,000 streams", flush=True)
    return memory


async def run(levels: list[int], tokens: int, langgraph_venv: Path | None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="rillet-bench-"))
    fake_port = free_port()
    fake_url = f"http://127.0.0.1:{fake_port}"
    fake_command = [
        sys.executable,
        "-m",
        "rillet_runtime",
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
    with contextlib.ExitStack() as stack:
        fake_proc = stack.enter_context(
            started(fake_command, {}, f"{fake_url}/_fake/stats", work / "fake.log")
        )
        model = Server("model", fake_url, loadgen.APIS["openai"], "fake", fake_proc)
        redis = RedisServer(work / "redis")
        redis.start()
        stack.callback(redis.kill)
        starts = server_starts(work, fake_url, redis.url, langgraph_venv)
        waves = await measure_waves(model, starts, levels, tokens)
        memory = await measure_memory(starts, fake_url, tokens)

    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "model": {"ttft_ms": TTFT_MS, "token_delay_ms": TOKEN_DELAY_MS, "answer_tokens": tokens},
        "waves": waves,
        **derive(waves, [name for name, _ in starts]),
        "memory_per_1000_streams_mib": memory,
    }
    result["ratios"] = ratios(result)
    shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--levels", type=int, nargs="+", default=[10, 25, 50, 100, 250, 500])
    parser.add_argument("--tokens", type=int, default=50, help="tokens per answer")
    parser.add_argument(
        "--langgraph-venv", type=Path, help="a venv with langgraph-cli[inmem] and Rillet's deps"
    )
    parser.add_argument(
        "--summarize", type=Path, help="re-derive and print the summary of a saved streaming.json"
    )
    args = parser.parse_args()
    if args.summarize:
        result = json.loads(args.summarize.read_text())
        names = sorted({w["server"] for w in result["waves"]} - {"model"})
        result.update(derive(result["waves"], names))
        result["ratios"] = ratios(result)
    else:
        result = asyncio.run(run(args.levels, args.tokens, args.langgraph_venv))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "streaming.json").write_text(json.dumps(result, indent=2))
    (args.out / "streaming.md").write_text(summary(result) + "\n")
    plot(result, args.out / "streaming.png")
    print(summary(result))


if __name__ == "__main__":
    main()
