"""The autoscaling benchmark: measure one pod's curve, then simulate a day of traffic
against each policy with it (bench.simulate), side by side.

    python -m bench.autoscaling --measure --out bench-results

--measure runs a real 2-worker `rillet serve` against the fake model (TTFT 200 ms, 20 ms
per token) and records TTFT p95 and CPU cores per concurrency; without it the committed
curve (docs/data/pod-curve.json) is used, so the simulation alone reruns in minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.simulate import (
    Kpa,
    Outcome,
    PodCurve,
    Policy,
    Traffic,
    cpu_policy,
    day_of_traffic,
    oracle_replica_hours,
    rillet_policy,
    simulate,
)
from bench.streaming import QUESTION, TOKEN_DELAY_MS, TTFT_MS, Server, started
from rillet_operator.meta import ChatService
from rillet_operator.spec import ChatServiceSpec
from rillet_runtime import loadgen
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
CURVE = ROOT / "docs" / "data" / "pod-curve.json"
WORKERS = 2
ADMITTED = WORKERS * 100  # the default max_concurrent_streams_per_worker
TTFT_TARGET_MS = 500.0
MIN_REPLICAS, MAX_REPLICAS = 2, 1000
LEVELS = (10, 20, 40, 60, 80, 90, 100, 120, 160, 200)


async def _step(server: Server, concurrency: int, seconds: float) -> dict[str, Any]:
    plan = loadgen.LoadPlan(concurrency, ramp_seconds=1.0, duration_seconds=seconds)
    cpu, wall = server.cpu_seconds(), time.perf_counter()
    results = await loadgen.run_load(server.url, server.api, plan, [QUESTION])
    cpu, wall = server.cpu_seconds() - cpu, time.perf_counter() - wall
    summary = loadgen.summarize(results, wall)
    return {
        "concurrency": concurrency,
        "streams": summary["streams"],
        "errors": sum(summary["errors"].values()),
        "ttft_p95_ms": summary["ttft_ms"]["p95"],
        "inter_token_p95_ms": summary["inter_token_ms"]["p95"],
        "cores": cpu / wall,
    }


def measure_pod(levels: tuple[int, ...], seconds: float, tokens: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="rillet-pod-curve-"))
    python = [sys.executable, "-m", "rillet_runtime"]
    fake_port, port = free_port(), free_port()
    fake_url = f"http://127.0.0.1:{fake_port}"
    fake_flags = ["--ttft-ms", str(TTFT_MS), "--token-delay-ms", str(TOKEN_DELAY_MS)]
    fake_flags += ["--answer-tokens", str(tokens)]
    env = {
        "RILLET_MODEL__PROVIDER": "openai",
        "RILLET_MODEL__NAME": "fake",
        "RILLET_MODEL__BASE_URL": f"{fake_url}/v1",
        "RILLET_SERVER__PORT": str(port),
        "RILLET_SERVER__WORKERS": str(WORKERS),
        "RILLET_SERVER__METRICS_DIR": str(work / "metrics"),
        "RILLET_SERVER__METRICS_PORT": str(free_port()),
    }
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            started(
                [*python, "fake-llm", "--port", str(fake_port), *fake_flags],
                {},
                f"{fake_url}/_fake/stats",
                work / "fake.log",
            )
        )
        url = f"http://127.0.0.1:{port}"
        proc = stack.enter_context(
            started([*python, "serve"], env, f"{url}/readyz", work / "serve.log")
        )
        server = Server("rillet", url, loadgen.APIS["rillet"], "", proc)
        steps = []
        for level in levels:
            steps.append(asyncio.run(_step(server, level, seconds)))
            print(json.dumps(steps[-1]), file=sys.stderr)
    return {
        "workers": WORKERS,
        "model": {"ttft_ms": TTFT_MS, "token_delay_ms": TOKEN_DELAY_MS, "tokens": tokens},
        "steps": steps,
    }


# -- the comparison -------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    policy: str
    knob: str
    value: float
    autoscaling: tuple[tuple[str, Any], ...] = ()  # rillet: other spec.autoscaling fields

    @property
    def label(self) -> str:
        extra = "".join(f", {key}={value}" for key, value in self.autoscaling)
        return f"{self.policy} {self.knob} {self.value:g}{extra}"


def chat_service(curve: PodCurve, setting: Setting) -> ChatService:
    """The ChatService a user would apply: calibrated capacity, the TTFT target."""
    scaling = {
        "minReplicas": MIN_REPLICAS,
        "maxReplicas": MAX_REPLICAS,
        "streamsPerPod": curve.capacity(TTFT_TARGET_MS),
        "targetUtilizationPercent": int(setting.value),
        **dict(setting.autoscaling),
    }
    spec = {"autoscaling": scaling, "latencyTargets": {"ttftP95Ms": int(TTFT_TARGET_MS)}}
    return ChatService("chat", "default", "uid", ChatServiceSpec.model_validate(spec))


def run_policy(setting: Setting, traffic: Traffic, curve: PodCurve) -> Outcome:
    policy: Policy
    if setting.policy == "cpu":
        policy = cpu_policy(setting.value, MIN_REPLICAS, MAX_REPLICAS)
    elif setting.policy == "concurrency":
        policy = Kpa(setting.value, MIN_REPLICAS, MAX_REPLICAS)
    else:
        policy = rillet_policy(chat_service(curve, setting))
    initial = int(traffic.streams[0] / 50)  # every policy starts from the same pods
    return simulate(setting.label, policy, traffic, curve, TTFT_TARGET_MS, initial=initial)


SWEEPS = {
    "cpu": ("target %", (30, 40, 50, 60, 70, 80)),
    "concurrency": ("streams per pod", (30, 40, 50, 60, 70, 100)),
    "rillet": ("utilization % of calibrated", (50, 60, 70, 80, 90)),
}
DEFAULTS = {"cpu": 70.0, "concurrency": 70.0, "rillet": 70.0}  # Knative: 100 x 70%
# Rillet's own knobs at the default utilization, one changed at a time.
VARIANTS = (
    (("adaptCapacity", False),),
    (("scaleOnLatency", True),),
    (("scaleDownStabilizationSeconds", 120),),
)


def settings() -> list[Setting]:
    swept = [Setting(p, knob, v) for p, (knob, values) in SWEEPS.items() for v in values]
    knob = SWEEPS["rillet"][0]
    return swept + [Setting("rillet", knob, DEFAULTS["rillet"], v) for v in VARIANTS]


def compare(curve: PodCurve, shifting_mix: bool) -> list[dict[str, Any]]:
    traffic = day_of_traffic(shifting_mix=shifting_mix)
    rows = []
    for setting in settings():
        outcome = run_policy(setting, traffic, curve)
        rows.append(
            {
                "policy": setting.policy,
                "setting": setting.label.split(" ", 1)[1],
                "value": setting.value,
                "variant": bool(setting.autoscaling),
                "default": setting.value == DEFAULTS[setting.policy] and not setting.autoscaling,
                "attainment": outcome.attainment,
                "replica_hours": outcome.replica_hours,
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def cheapest(rows: list[dict[str, Any]], policy: str, attainment: float) -> dict[str, Any] | None:
    meeting = [
        r
        for r in rows
        if r["policy"] == policy and not r["variant"] and r["attainment"] >= attainment
    ]
    return min(meeting, key=lambda r: r["replica_hours"], default=None)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| policy | setting | minutes within TTFT target | replica-hours |",
        "|---|---|---:|---:|",
    ]
    for row in rows:
        mark = " (default)" if row["default"] else ""
        lines.append(
            f"| {row['policy']} | {row['setting']}{mark} | "
            f"{row['attainment'] * 100:.2f}% | {row['replica_hours']:,.0f} |"
        )
    return "\n".join(lines)


def plot(curve: PodCurve, shifting_mix: bool, picks: list[Setting], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    traffic = day_of_traffic(shifting_mix=shifting_mix)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    hours = np.arange(traffic.streams.size) / 3600
    needed = traffic.streams * traffic.cost / curve.capacity(TTFT_TARGET_MS)
    top.plot(hours, needed, color="black", lw=0.6, label="pods needed at calibrated capacity")
    for setting in picks:
        outcome = run_policy(setting, traffic, curve)
        label = f"{outcome.name}: {outcome.attainment * 100:.1f}%, {outcome.replica_hours:,.0f} h"
        top.plot(hours, outcome.replicas, lw=0.8, label=label)
        minutes = np.arange(outcome.ttft_p95_ms_by_minute.size) / 60
        bottom.plot(minutes, np.minimum(outcome.ttft_p95_ms_by_minute, 5000), lw=0.6)
    bottom.axhline(TTFT_TARGET_MS, color="red", ls="--", lw=0.8, label="TTFT p95 target")
    top.set_ylabel("pods")
    top.legend(fontsize=8)
    bottom.set_ylabel("TTFT p95 per minute (ms, cut at 5 s)")
    bottom.set_yscale("log")
    bottom.set_xlabel("hour of day")
    bottom.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--measure", action="store_true", help="measure the pod curve first")
    parser.add_argument("--step-seconds", type=float, default=15)
    parser.add_argument("--plots", type=Path, default=ROOT / "docs" / "img")
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    if options.measure:
        measured = measure_pod(LEVELS, options.step_seconds, tokens=100)
        (options.out / "pod-curve.json").write_text(json.dumps(measured, indent=2))
    else:
        measured = json.loads(CURVE.read_text())
    curve = PodCurve.from_steps(measured["steps"], ADMITTED)
    capacity = curve.capacity(TTFT_TARGET_MS)
    result: dict[str, Any] = {"capacity": capacity, "scenarios": {}}
    for name, shifting in (("steady mix", False), ("shifting mix", True)):
        traffic = day_of_traffic(shifting_mix=shifting)
        rows = compare(curve, shifting)
        bound = oracle_replica_hours(traffic, capacity, MIN_REPLICAS)
        result["scenarios"][name] = {"rows": rows, "oracle_replica_hours": bound}
        print(f"\n## {name}: calibrated capacity {capacity} streams per pod\n")
        print(table(rows))
        print(f"\nlower bound (every second exactly the pods needed, instantly): {bound:,.0f}")
        print("cheapest setting with >= 99% of minutes within target:")
        best = {p: cheapest(rows, p, 0.99) for p in SWEEPS}
        for policy, row in best.items():
            found = f"{row['setting']}, {row['replica_hours']:,.0f} replica-hours" if row else ""
            print(f"- {policy}: {found or 'none'}")
        picks = [Setting(p, SWEEPS[p][0], r["value"]) for p, r in best.items() if r]
        plot(curve, shifting, picks, options.plots / f"autoscaling-{name.replace(' ', '-')}.png")
    (options.out / "autoscaling.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
