"""The autoscaling simulation's parts (the benchmark itself is `make bench-autoscaling`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.autoscaling import CURVE, Setting, chat_service, run_policy
from bench.simulate import (
    PodCurve,
    Pods,
    day_of_traffic,
    oracle_replica_hours,
    second_latency,
)

STEPS = json.loads(Path(CURVE).read_text())["steps"]


def test_the_measured_curve_gives_the_calibrated_capacity_and_extends_past_it() -> None:
    curve = PodCurve.from_steps(STEPS, admitted=200)
    capacity = curve.capacity(500)
    assert all(s["ttft_p95_ms"] <= 500 for s in STEPS if s["concurrency"] <= capacity)
    beyond = curve.ttft(np.array([curve.concurrency[-1] * 2]))[0]
    assert beyond > curve.ttft_p95_ms[-1]  # extrapolated upwards, not flat


def test_pods_serve_only_after_they_start_and_bill_while_draining() -> None:
    pods = Pods(start_seconds=45, drain_seconds=30)
    pods.scale_to(3, now=0)
    pods.tick(44)
    assert (pods.ready, pods.billed()) == (0, 3)
    pods.tick(45)
    assert pods.ready == 3
    pods.scale_to(1, now=50)
    assert (pods.ready, pods.billed()) == (1, 3)
    pods.tick(80)
    assert pods.billed() == 1


def test_overloaded_pods_refuse_and_miss() -> None:
    curve = PodCurve.from_steps(STEPS, admitted=200)
    ttft, refused = second_latency(streams=4000, cost=1.0, ready=10, curve=curve)
    assert refused >= 0.5  # 400 per pod where 200 are admitted
    assert ttft == float("inf")
    calm, none = second_latency(streams=200, cost=1.0, ready=10, curve=curve)
    assert none == 0
    assert calm < 500


def test_a_day_under_rillets_policy_keeps_the_target_above_the_oracle_cost() -> None:
    curve = PodCurve.from_steps(STEPS, admitted=200)
    traffic = day_of_traffic()
    outcome = run_policy(Setting("rillet", "utilization", 70), traffic, curve)
    assert outcome.attainment > 0.95
    assert outcome.replica_hours > oracle_replica_hours(traffic, curve.capacity(500), 2)
    cs = chat_service(curve, Setting("rillet", "utilization", 70))
    assert cs.spec.autoscaling.streams_per_pod == curve.capacity(500)
