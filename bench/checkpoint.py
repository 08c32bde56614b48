"""Checkpointer benchmark: RedisCheckpointSaver on a local redis-server, side by side with
LangGraph's InMemorySaver (the floor: same serializer, no network) in the same run.

1. Latency: one `aput` then `aget_tuple` (latest) per step, on threads of 2, 20 and 200
   messages, the two savers interleaved step by step; p50 and p99 and their ratio.
2. Storage: 200-turn conversations on Redis with and without compression, the thread's
   bytes (`MEMORY USAGE` of every key) after each turn, for three state shapes: Rillet's
   built-in chat graph (its thread keeps a window of messages), a full history kept with
   LangGraph's `add_messages` (every turn stores the whole list again), and a full history
   in a `DeltaChannel` (every turn stores only what it added).

    python -m bench.checkpoint --out bench-results
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypedDict

import httpx
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.channels import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph

from rillet_runtime.graph import graph_deps
from rillet_runtime.graph.rag import build_rag_graph
from rillet_runtime.retrieval import open_retriever
from rillet_runtime.retrieval.documents import corpus_files, default_corpus_paths, iter_chunks
from rillet_runtime.settings import Settings
from rillet_runtime.state import RedisCheckpointSaver
from tests.support.processes import RedisServer

NO_COMPRESSION = 2**62


class Prose:
    """Text with the docs' word frequencies, never repeating a passage: reused paragraphs
    would let zstd find whole repeats and flatter the compression figures."""

    def __init__(self) -> None:
        words = [
            w
            for c in iter_chunks(corpus_files(default_corpus_paths()), 200, 0)
            for w in c.text.split()
        ]
        if not words:
            raise SystemExit("no corpus found: run from a checkout or an installed wheel")
        self.words = words

    def text(self, seed: str, chars: int) -> str:
        rng = random.Random(seed)
        picked: list[str] = []
        length = 0
        while length < chars:
            picked.append(rng.choice(self.words))
            length += len(picked[-1]) + 1
        return " ".join(picked)

    def question(self, turn: int) -> str:
        return self.text(f"q{turn}", 100)

    def answer(self, turn: int) -> str:
        return self.text(f"a{turn}", 700)


def conversation(length: int, prose: Prose) -> list[BaseMessage]:
    return [
        HumanMessage(prose.question(i), id=f"m{i}")
        if i % 2 == 0
        else AIMessage(prose.answer(i), id=f"m{i}")
        for i in range(length)
    ]


def percentiles_ms(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": cuts[49] * 1000, "p99": cuts[98] * 1000}


async def step_latencies(
    savers: dict[str, BaseCheckpointSaver[Any]], messages: list[BaseMessage], steps: int
) -> dict[str, list[float]]:
    """aput + aget_tuple, alternating which saver goes first so neither owns the warm cache."""
    thread = f"latency-{len(messages)}"
    configs: dict[str, RunnableConfig] = {
        name: {"configurable": {"thread_id": thread, "checkpoint_ns": ""}} for name in savers
    }
    versions: dict[str, Any] = dict.fromkeys(savers)
    samples: dict[str, list[float]] = {name: [] for name in savers}
    order = list(savers)
    for step in range(steps):
        for name in order if step % 2 else reversed(order):
            saver = savers[name]
            versions[name] = saver.get_next_version(versions[name], None)
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {"messages": messages}
            checkpoint["channel_versions"] = {"messages": versions[name]}
            metadata: dict[str, Any] = {"source": "loop", "step": step, "parents": {}}
            started = time.perf_counter()
            await saver.aput(configs[name], checkpoint, metadata, {"messages": versions[name]})  # type: ignore[arg-type]
            await saver.aget_tuple(configs[name])
            samples[name].append(time.perf_counter() - started)
    return samples


async def latency(redis_url: str, prose: Prose, steps: int) -> list[dict[str, Any]]:
    rows = []
    async with RedisCheckpointSaver.connect(redis_url) as redis_saver:
        for length in (2, 20, 200):
            savers: dict[str, BaseCheckpointSaver[Any]] = {
                "InMemorySaver": InMemorySaver(),
                "RedisCheckpointSaver": redis_saver,
            }
            await step_latencies(savers, conversation(length, prose), 20)  # warm-up
            samples = await step_latencies(savers, conversation(length, prose), steps)
            memory, redis = (percentiles_ms(samples[name]) for name in savers)
            rows.append(
                {
                    "messages": length,
                    "memory_ms": memory,
                    "redis_ms": redis,
                    "ratio_p50": redis["p50"] / memory["p50"],
                    "ratio_p99": redis["p99"] / memory["p99"],
                }
            )
    return rows


# -- storage growth --------------------------------------------------------------------------


def append_batches(state: list[AnyMessage], writes: Sequence[Any]) -> list[AnyMessage]:
    """A DeltaChannel reducer: deterministic and batching-invariant (ids come from the node)."""
    merged = list(state)
    for write in writes:
        merged.extend(write if isinstance(write, list) else [write])
    return merged


class DeltaMessages(TypedDict):
    messages: Annotated[list[AnyMessage], DeltaChannel(append_batches)]


def history_graph(
    saver: BaseCheckpointSaver[Any], answer_for: Callable[[int], str], delta: bool
) -> Any:
    """One assistant answer per turn, the whole history kept in the thread."""

    def answer(state: Any) -> dict[str, Any]:
        turn = len(state["messages"])
        return {"messages": [AIMessage(answer_for(turn), id=f"a{turn}")]}

    builder: Any = StateGraph(DeltaMessages if delta else MessagesState)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    return builder.compile(checkpointer=saver)


async def thread_bytes(saver: RedisCheckpointSaver, thread: str) -> int:
    total = 0
    async for key in saver.client.scan_iter(match=f"rillet:cp:{{{thread}}}:*", count=1000):
        total += await saver.client.memory_usage(key, samples=0) or 0
    return total


async def growth(
    redis_url: str, prose: Prose, turns: int, http: httpx.AsyncClient
) -> dict[str, list[int]]:
    settings = Settings()
    curves: dict[str, list[int]] = {}
    for compress_min_bytes, label in ((1024, "zstd"), (NO_COMPRESSION, "raw")):
        async with (
            RedisCheckpointSaver.connect(
                redis_url, ttl_seconds=None, compress_min_bytes=compress_min_bytes
            ) as saver,
            open_retriever(settings) as retriever,
        ):
            deps = graph_deps(settings, http, retriever)
            graphs: dict[str, Any] = {
                "built-in chat graph (window)": build_rag_graph(deps, saver),
                "add_messages, full history": history_graph(saver, prose.answer, delta=False),
                "DeltaChannel, full history": history_graph(saver, prose.answer, delta=True),
            }
            for shape, graph in graphs.items():
                thread = f"growth-{label}-{len(curves)}"
                config: RunnableConfig = {"configurable": {"thread_id": thread}}
                curve = []
                for turn in range(turns):
                    question = HumanMessage(prose.question(turn), id=f"q{turn}")
                    await graph.ainvoke({"messages": [question]}, config)
                    curve.append(await thread_bytes(saver, thread))
                curves[f"{shape}, {label}"] = curve
    return curves


def per_turn(curve: list[int], at: int, span: int = 10) -> float:
    """Bytes added per turn over the `span` turns ending at turn `at` (1-based)."""
    return (curve[at - 1] - curve[at - 1 - span]) / span


def plot(curves: dict[str, list[int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=110)
    shapes = list(dict.fromkeys(name.rsplit(", ", 1)[0] for name in curves))
    for name, curve in curves.items():
        shape, values = name.rsplit(", ", 1)
        axes.plot(
            range(1, len(curve) + 1),
            [b / 2**20 for b in curve],
            "-" if values == "zstd" else "--",
            color=f"C{shapes.index(shape)}",
            label=name,
        )
    axes.set_xlabel("turns")
    axes.set_ylabel("thread size in Redis (MiB, MEMORY USAGE)")
    axes.set_title("Stored bytes per thread over a 200-turn conversation")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def summary(result: dict[str, Any]) -> str:
    lines = [
        "| messages | InMemorySaver p50 | p99 | RedisCheckpointSaver p50 | p99 | ratio p50 | p99 |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["latency"]:
        m, r = row["memory_ms"], row["redis_ms"]
        lines.append(
            f"| {row['messages']} | {m['p50']:.3f} ms | {m['p99']:.3f} ms | {r['p50']:.3f} ms"
            f" | {r['p99']:.3f} ms | {row['ratio_p50']:.1f}x | {row['ratio_p99']:.1f}x |"
        )
    turns = result["turns"]
    marks = sorted({m for m in (20, turns // 2, turns) if m > 10})
    lines += [
        "",
        f"| state shape, values | total after {turns} turns | "
        + " | ".join(f"bytes/turn at {m}" for m in marks)
        + " |",
        "|---|---:|" + "---:|" * len(marks),
    ]
    for name, curve in result["growth"].items():
        added = " | ".join(f"{per_turn(curve, m):,.0f}" for m in marks)
        lines.append(f"| {name} | {curve[-1] / 2**20:.2f} MiB | {added} |")
    return "\n".join(lines)


async def run(steps: int, turns: int) -> dict[str, Any]:
    prose = Prose()
    with tempfile.TemporaryDirectory(prefix="rillet-bench-") as workdir:
        redis = RedisServer(Path(workdir))
        redis.start()
        try:
            async with httpx.AsyncClient() as http:
                latency_rows = await latency(redis.url, prose, steps)
                curves = await growth(redis.url, prose, turns, http)
        finally:
            redis.kill()
    return {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "steps": steps,
        "turns": turns,
        "latency": latency_rows,
        "growth": curves,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--steps", type=int, default=500, help="latency samples per size")
    parser.add_argument("--turns", type=int, default=200)
    args = parser.parse_args()
    result = asyncio.run(run(args.steps, args.turns))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "checkpoint.json").write_text(json.dumps(result, indent=2))
    (args.out / "checkpoint.md").write_text(summary(result) + "\n")
    plot(result["growth"], args.out / "checkpoint-growth.png")
    print(summary(result))


if __name__ == "__main__":
    main()
