"""What durability costs: the managed Redis's persistence, measured on local redis-servers.

1. Checkpoint writes: one `aput` of a thread of 20 messages (the built-in graph's window)
   per step, on three redis-servers side by side in one run, the steps interleaved and the
   order alternated: no persistence (the baseline), AOF with `appendfsync everysec` (the
   managed default) and AOF with `appendfsync always` (the strict option, for contrast).
   p50/p99 and their ratios to the baseline.
2. Recovery: a Redis with AOF everysec holding `--threads` threads (20 messages each,
   written through the checkpointer) is killed with SIGKILL and started again; the time
   from the start until it answers PING (not LOADING); then a random thread must read back
   whole through the checkpointer. Twice: with the AOF as written (every command replayed)
   and after BGREWRITEAOF (an RDB base, what Redis's automatic rewrite converges to).
3. Off the token path: two `rillet serve` processes (one worker each, the fake model at
   200 ms to the first token, 20 ms between tokens) on one redis-server, one of them
   through Toxiproxy adding `--redis-latency-ms` to every Redis reply. Waves of
   `--streams` streams alternate between them: history loads and admission wait on Redis
   before the first token, so TTFT grows; checkpoint saves happen after the last token,
   so inter-token latency must not.
4. Retention: `--turns` turns of a conversation on one redis-server, two threads side by
   side, turn by turn: one saver keeping every checkpoint, one keeping the newest
   `--keep-checkpoints` (the runtime's default); each turn written as the native API
   writes it (one checkpoint when the run ends), with the run's id. The thread's size is
   `MEMORY USAGE` summed over its keys (Redis's own overhead in), beside the bytes the
   saver counts; for the built-in chat graph and for a full history kept with
   `add_messages`.

    python -m bench.durability --out bench-results [--steps 1000 --threads 10000 --rounds 4]
    python -m bench.durability --parts retention --out bench-results [--turns 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import redis
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint

from bench.auth import fake_model, serve, summarize
from bench.auth import run as alternate_waves
from bench.checkpoint import Prose, conversation, history_graph, percentiles_ms, thread_bytes
from rillet_runtime.graph import graph_deps
from rillet_runtime.graph.rag import build_rag_graph
from rillet_runtime.retrieval import open_retriever
from rillet_runtime.settings import Settings
from rillet_runtime.state import RedisCheckpointSaver
from tests.support.processes import RedisServer
from tests.support.toxiproxy import toxiproxy_server

PERSISTENCE = {
    "none": ("--appendonly", "no"),
    "aof everysec": ("--appendonly", "yes", "--appendfsync", "everysec"),
    "aof always": ("--appendonly", "yes", "--appendfsync", "always"),
}
MESSAGES = 20
PARTS = ("writes", "recovery", "token-path", "retention")


async def put(
    saver: RedisCheckpointSaver, thread: str, messages: list[BaseMessage], step: int
) -> float:
    """One checkpoint of the thread, as a run's end writes it; seconds taken."""
    config: RunnableConfig = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    version = saver.get_next_version(None if step == 0 else str(step), None)
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"messages": messages}
    checkpoint["channel_versions"] = {"messages": version}
    metadata: Any = {"source": "loop", "step": step, "parents": {}}
    started = time.perf_counter()
    await saver.aput(config, checkpoint, metadata, {"messages": version})
    return time.perf_counter() - started


async def write_latency(workdir: Path, prose: Prose, steps: int) -> list[dict[str, Any]]:
    servers = {
        name: RedisServer(workdir / name.replace(" ", "-"), *args)
        for name, args in PERSISTENCE.items()
    }
    for server in servers.values():
        server.start()
    try:
        messages = conversation(MESSAGES, prose)
        samples: dict[str, list[float]] = {name: [] for name in servers}
        savers = {
            name: RedisCheckpointSaver.connect(server.url, ttl_seconds=None)
            for name, server in servers.items()
        }
        opened = {name: await saver.__aenter__() for name, saver in savers.items()}
        try:
            order = list(servers)
            for step in range(steps + 50):  # the first 50 warm up
                for name in order if step % 2 else reversed(order):
                    taken = await put(opened[name], f"latency-{step % 20}", messages, step)
                    if step >= 50:
                        samples[name].append(taken)
        finally:
            for saver in savers.values():
                await saver.__aexit__(None, None, None)
    finally:
        for server in servers.values():
            server.kill()
    baseline = percentiles_ms(samples["none"])
    rows = []
    for name, seconds in samples.items():
        cuts = percentiles_ms(seconds)
        rows.append(
            {
                "persistence": name,
                **cuts,
                "ratio_p50": cuts["p50"] / baseline["p50"],
                "ratio_p99": cuts["p99"] / baseline["p99"],
            }
        )
    return rows


def seconds_to_ready(server: RedisServer) -> float:
    """From a fresh start until PING answers: Redis says LOADING while it replays."""
    started = time.perf_counter()
    server.start()  # returns once the port accepts connections
    with redis.Redis(port=server.port) as client:
        while True:
            try:
                client.ping()
                return time.perf_counter() - started
            except redis.exceptions.BusyLoadingError:
                time.sleep(0.005)


async def messages_kept(url: str, thread: str) -> int:
    async with RedisCheckpointSaver.connect(url, ttl_seconds=None) as saver:
        config: RunnableConfig = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        saved = await saver.aget_tuple(config)
        return len(saved.checkpoint["channel_values"]["messages"]) if saved else 0


async def fill(url: str, prose: Prose, threads: int) -> None:
    messages = conversation(MESSAGES, prose)
    async with RedisCheckpointSaver.connect(url, ttl_seconds=None) as saver:
        for start in range(0, threads, 100):
            batch = range(start, min(start + 100, threads))
            await asyncio.gather(*(put(saver, f"t{n}", messages, 0) for n in batch))


def kill(server: RedisServer) -> None:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    server.proc = None


def recovery(workdir: Path, prose: Prose, threads: int) -> list[dict[str, Any]]:
    server = RedisServer(workdir / "recovery", *PERSISTENCE["aof everysec"])
    server.start()
    try:
        asyncio.run(fill(server.url, prose, threads))
        used = int(redis.Redis(port=server.port).info("memory")["used_memory"])
        time.sleep(1.5)  # everysec: the last second reaches the disk
        rows = []
        for label in ("aof as written", "after BGREWRITEAOF"):
            if label == "after BGREWRITEAOF":
                client = redis.Redis(port=server.port)
                client.bgrewriteaof()
                while client.info("persistence")["aof_rewrite_in_progress"]:
                    time.sleep(0.1)
            aof = server.workdir / "appendonlydir"
            aof_bytes = sum(f.stat().st_size for f in aof.iterdir())
            kill(server)
            ready = seconds_to_ready(server)
            thread = f"t{random.randrange(threads)}"
            if asyncio.run(messages_kept(server.url, thread)) != MESSAGES:
                raise SystemExit(f"{thread} did not come back whole")
            rows.append({"aof": label, "aof_mib": aof_bytes / 2**20, "seconds_to_ready": ready})
        return [{**row, "threads": threads, "used_memory_mib": used / 2**20} for row in rows]
    finally:
        server.kill()


def slow_redis(workdir: Path, latency_ms: int, streams: int, rounds: int) -> dict[str, Any]:
    redis_server = RedisServer(workdir / "token-path")
    redis_server.start()
    try:
        with ExitStack() as stack:
            fake_url = fake_model(stack, workdir)
            toxiproxy = stack.enter_context(toxiproxy_server(workdir))
            proxy = toxiproxy.proxy("redis", f"127.0.0.1:{redis_server.port}")
            proxy.add("latency", latency=latency_ms)
            routes = {
                "no toxic": redis_server.url,
                f"redis +{latency_ms} ms": f"redis://{proxy.address}/0",
            }
            servers = [
                serve(stack, workdir, name, redis_url, fake_url,
                      RILLET_STATE__REDIS_TIMEOUT_SECONDS="5")
                for name, redis_url in routes.items()
            ]  # fmt: skip
            waves = asyncio.run(alternate_waves(servers, streams, rounds))
    finally:
        redis_server.kill()
    if any(row["ok"] == 0 for row in waves):
        raise SystemExit("a wave completed no stream")
    return {"latency_ms": latency_ms, "streams": streams, "rounds": rounds,
            "summary": summarize(waves, baseline="no toxic")}  # fmt: skip


async def stored_bytes(workdir: Path, prose: Prose, turns: int, keep: int) -> dict[str, Any]:
    """Section 4: a thread's size after each turn, every checkpoint kept against the newest
    `keep`, two threads on one redis-server fed turn by turn."""
    server = RedisServer(workdir / "retention")
    server.start()
    settings = Settings()
    curves: dict[str, dict[str, list[int]]] = {}
    try:
        async with (
            httpx.AsyncClient() as http,
            open_retriever(settings) as retriever,
            RedisCheckpointSaver.connect(server.url, ttl_seconds=None) as keep_all,
            RedisCheckpointSaver.connect(
                server.url, ttl_seconds=None, keep_checkpoints=keep
            ) as keep_newest,
        ):
            deps = graph_deps(settings, http, retriever)
            savers = {"every checkpoint": keep_all, f"newest {keep}": keep_newest}
            for shape in ("built-in chat graph (window)", "add_messages, full history"):
                graphs = {
                    kept: (
                        build_rag_graph(deps, saver)
                        if shape.startswith("built-in")
                        else history_graph(saver, prose.answer, delta=False)
                    )
                    for kept, saver in savers.items()
                }
                measured: dict[str, list[int]] = {
                    f"{kept}, {of}": [] for kept in savers for of in ("memory usage", "counted")
                }
                for turn in range(turns):
                    question = HumanMessage(prose.question(turn), id=f"q{turn}")
                    for kept, graph in graphs.items():
                        thread = f"{shape}, {kept}"
                        config: RunnableConfig = {
                            "configurable": {"thread_id": thread, "run_id": f"run-{turn}"}
                        }
                        await graph.ainvoke({"messages": [question]}, config, durability="exit")
                        saver = savers[kept]
                        measured[f"{kept}, memory usage"].append(await thread_bytes(saver, thread))
                        measured[f"{kept}, counted"].append(await saver.athread_bytes(thread))
                curves[shape] = measured
    finally:
        server.kill()
    return {"turns": turns, "keep_checkpoints": keep, "curves": curves}


def run(args: argparse.Namespace) -> dict[str, Any]:
    prose = Prose()
    parts = set(args.parts)
    result: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "redis_py": redis.__version__,
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if "writes" in parts:
            result["write_latency"] = asyncio.run(write_latency(workdir, prose, args.steps))
        if "recovery" in parts:
            result["recovery"] = recovery(workdir, prose, args.threads)
        if "token-path" in parts:
            result["token_path"] = slow_redis(
                workdir, args.redis_latency_ms, args.streams, args.rounds
            )
        if "retention" in parts:
            result["retention"] = asyncio.run(
                stored_bytes(workdir, prose, args.turns, args.keep_checkpoints)
            )
    return result


def summary(result: dict[str, Any]) -> str:
    lines: list[str] = []
    if "write_latency" in result:
        lines += _write_latency_summary(result)
    if "recovery" in result:
        lines += _recovery_summary(result)
    if "token_path" in result:
        lines += _token_path_summary(result)
    if "retention" in result:
        lines += _retention_summary(result["retention"])
    return "\n".join(lines).strip()


def _retention_summary(retention: dict[str, Any]) -> list[str]:
    turns = retention["turns"]
    marks = sorted({m for m in (50, turns // 2, turns) if m <= turns})
    lines = [
        "",
        f"Stored bytes per thread (MEMORY USAGE of its keys; the saver's count in brackets),"
        f" {turns} turns, side by side:",
        "",
        "| state shape | checkpoints kept | "
        + " | ".join(f"after {m} turns" for m in marks)
        + " |",
        "|---|---|" + "---:|" * len(marks),
    ]
    for shape, measured in retention["curves"].items():
        for name in dict.fromkeys(key.rsplit(", ", 1)[0] for key in measured):
            usage, counted = measured[f"{name}, memory usage"], measured[f"{name}, counted"]
            cells = " | ".join(
                f"{usage[m - 1] / 1024:,.0f} KiB ({counted[m - 1] / 1024:,.0f} KiB)" for m in marks
            )
            lines.append(f"| {shape} | {name} | {cells} |")
    return lines


def _write_latency_summary(result: dict[str, Any]) -> list[str]:
    lines = [
        f"Checkpoint write (`aput`, {MESSAGES} messages), side by side:",
        "",
        "| persistence | p50 | p99 | ratio p50 | ratio p99 |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in result["write_latency"]:
        lines.append(
            f"| {row['persistence']} | {row['p50']:.3f} ms | {row['p99']:.3f} ms"
            f" | {row['ratio_p50']:.2f}x | {row['ratio_p99']:.2f}x |"
        )
    return lines


def _recovery_summary(result: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Recovery after SIGKILL (AOF everysec):",
        "",
        "| threads | used memory | AOF | AOF size | start to ready |",
        "|---:|---:|---|---:|---:|",
    ]
    for row in result["recovery"]:
        lines.append(
            f"| {row['threads']:,} | {row['used_memory_mib']:.0f} MiB | {row['aof']}"
            f" | {row['aof_mib']:.0f} MiB | {row['seconds_to_ready']:.2f} s |"
        )
    return lines


def _token_path_summary(result: dict[str, Any]) -> list[str]:
    path = result["token_path"]
    lines = [
        "",
        f"Redis {path['latency_ms']} ms away through Toxiproxy, {path['streams']}-stream waves,"
        f" medians of {path['rounds']} rounds:",
        "",
        "| server | ok | TTFT p50 | TTFT p99 | inter-token p99 | CPU per 1,000 tokens |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in path["summary"].items():
        lines.append(
            f"| {name} | {row['ok']}/{row['streams']} | {row['ttft_p50_ms']:.0f} ms"
            f" | {row['ttft_p99_ms']:.0f} ms | {row['inter_token_p99_ms']:.1f} ms"
            f" | {row['cpu_seconds_per_1000_tokens']:.3f} s |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--steps", type=int, default=1000, help="write samples per server")
    parser.add_argument("--threads", type=int, default=10_000, help="threads in the killed Redis")
    parser.add_argument("--redis-latency-ms", type=int, default=200)
    parser.add_argument("--streams", type=int, default=20, help="streams per wave")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--turns", type=int, default=200, help="turns per thread (retention)")
    parser.add_argument(
        "--keep-checkpoints", type=int, default=10, help="what the retained thread keeps"
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="which sections to run (all by default)",
    )
    args = parser.parse_args()
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "durability.json").write_text(json.dumps(result, indent=2))
    text = summary(result)
    (args.out / "durability.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
