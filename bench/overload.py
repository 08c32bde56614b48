"""Overload: one worker offered 1x, 2x and 5x the streams it serves within the targets
(`--capacity`, what `rillet bench --calibrate` finds), side by side in one run.

Three `rillet serve` processes (one worker each, the built-in graph, state on one
redis-server, the fake model at 200 ms to the first token and 20 ms between 50 tokens):

- cap 500: the runtime's stream cap before this measurement, the event loop's lag not
  looked at;
- cap 500 + lag: the same cap, and new streams refused while the loop runs more than
  150 ms late (the default budget);
- cap N + lag: the cap set to the measured capacity, as a ChatService's
  `spec.server.maxConcurrentStreamsPerWorker` would be.

Rounds rotate the order; each sends `level` streams to each server, their arrivals spread
evenly over `--ramp-seconds` (0: all at once). Reported per server and level (medians over
the rounds): streams completed and refused (503), how soon a refusal came (p50 and p99 ms
after the request), TTFT p50/p99 and inter-token p99 of the completed streams, the worker's
CPU seconds per 1,000 tokens, and whether gunicorn replaced the worker (its pid).

    python -m bench.overload --out bench-results [--capacity 50 --rounds 2 --ramp-seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil

from bench.auth import ANSWER_TOKENS, fake_model, median_of, serve
from bench.streaming import QUESTION, Server
from rillet_runtime import loadgen
from tests.support.processes import RedisServer


def variants(capacity: int) -> dict[str, dict[str, str]]:
    return {
        "cap 500": {
            "RILLET_SERVER__MAX_STREAMS_PER_WORKER": "500",
            "RILLET_SERVER__MAX_EVENT_LOOP_LAG_MS": "0",
        },
        "cap 500 + lag": {"RILLET_SERVER__MAX_STREAMS_PER_WORKER": "500"},
        f"cap {capacity} + lag": {"RILLET_SERVER__MAX_STREAMS_PER_WORKER": str(capacity)},
    }


def worker_pid(server: Server) -> int:
    (worker,) = psutil.Process(server.proc.pid).children()
    pid: int = worker.pid
    return pid


async def wave(server: Server, streams: int, ramp_seconds: float) -> dict[str, Any]:
    plan = loadgen.LoadPlan(
        streams, ramp_seconds=ramp_seconds, requests=streams, timeout_seconds=300
    )
    pid, cpu_before, wall_before = worker_pid(server), server.cpu_seconds(), time.perf_counter()
    results = await loadgen.run_load(server.url, server.api, plan, [QUESTION], server.model)
    wall, cpu = time.perf_counter() - wall_before, server.cpu_seconds() - cpu_before
    summary = loadgen.summarize(results, wall)
    refused = [r.answered for r in results if r.error == "http_503" and r.answered is not None]
    model_tokens = summary["ok"] * ANSWER_TOKENS
    return {
        "server": server.name,
        "streams": streams,
        "completed": summary["ok"],
        "refused": len(refused),
        "other_errors": {k: v for k, v in summary["errors"].items() if k != "http_503"},
        "refused_ms": loadgen.percentiles(refused),
        "ttft_ms": summary["ttft_ms"],
        "inter_token_ms": summary["inter_token_ms"],
        "cpu_seconds_per_1000_tokens": cpu / model_tokens * 1000 if model_tokens else None,
        "worker_replaced": worker_pid(server) != pid,
    }


def median(rows: list[dict[str, Any]], *path: str) -> float | None:
    found = median_of(rows, *path)
    return None if found is None else round(found, 1)


def summarize(waves: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in waves:
        groups.setdefault((row["server"], row["streams"]), []).append(row)
    return [
        {
            "server": server,
            "streams": streams,
            "completed": median(rows, "completed"),
            "refused": median(rows, "refused"),
            "refused_p50_ms": median(rows, "refused_ms", "p50"),
            "refused_p99_ms": median(rows, "refused_ms", "p99"),
            "ttft_p50_ms": median(rows, "ttft_ms", "p50"),
            "ttft_p99_ms": median(rows, "ttft_ms", "p99"),
            "inter_token_p99_ms": median(rows, "inter_token_ms", "p99"),
            "cpu_seconds_per_1000_tokens": median(rows, "cpu_seconds_per_1000_tokens"),
            "workers_replaced": sum(r["worker_replaced"] for r in rows),
            "other_errors": sum(sum(r["other_errors"].values()) for r in rows),
        }
        for (server, streams), rows in sorted(groups.items(), key=lambda g: (g[0][1], g[0][0]))
    ]


def table(rows: list[dict[str, Any]]) -> str:
    header = (
        "| streams | admission | completed | refused | refusal p50 / p99 ms | TTFT p50 / p99 ms "
        "| inter-token p99 ms | CPU s / 1k tokens | workers replaced |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    lines = [
        f"| {r['streams']} | {r['server']} | {r['completed']} | {r['refused']} "
        f"| {r['refused_p50_ms']} / {r['refused_p99_ms']} "
        f"| {r['ttft_p50_ms']} / {r['ttft_p99_ms']} | {r['inter_token_p99_ms']} "
        f"| {r['cpu_seconds_per_1000_tokens']} | {r['workers_replaced']} |"
        for r in rows
    ]
    return "\n".join([header, *lines])


async def run(
    servers: list[Server], levels: list[int], rounds: int, ramp_seconds: float
) -> list[dict[str, Any]]:
    waves = []
    for round_index in range(rounds):
        for level in levels:
            shift = round_index % len(servers)
            order = servers[shift:] + servers[:shift]
            for server in order:
                row = await wave(server, level, ramp_seconds)
                waves.append({**row, "round": round_index})
                print(
                    f"round {round_index} {level:4} streams {server.name:14} completed "
                    f"{row['completed']} refused {row['refused']} ttft p99 "
                    f"{row['ttft_ms']['p99']} ms",
                    flush=True,
                )
                await asyncio.sleep(2)  # the worker settles (its lag average too)
    return waves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument(
        "--capacity", type=int, default=50, help="streams a worker serves within the targets"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--ramp-seconds", type=float, default=2.0, help="arrivals spread over this; 0: at once"
    )
    args = parser.parse_args()
    levels = [args.capacity, 2 * args.capacity, 5 * args.capacity]
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="rillet-bench-overload-"))
    redis = RedisServer(workdir / "redis")
    redis.start()
    try:
        with ExitStack() as stack:
            fake_url = fake_model(stack, workdir)
            servers = [
                serve(stack, workdir, name, redis.url, fake_url, **extra)
                for name, extra in variants(args.capacity).items()
            ]
            waves = asyncio.run(run(servers, levels, args.rounds, args.ramp_seconds))
    finally:
        redis.kill()
    rows = summarize(waves)
    result = {"capacity": args.capacity, "rounds": args.rounds, "waves": waves, "summary": rows}
    (args.out / "overload.json").write_text(json.dumps(result, indent=2))
    (args.out / "overload.md").write_text(table(rows) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
