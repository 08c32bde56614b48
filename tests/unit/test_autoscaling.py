"""Latency targets to autoscaling rules: pure functions, no cluster."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from rillet_operator.autoscaling import (
    adapted_target,
    autoscaler,
    autoscaling_status,
    configured_target,
    streams_per_pod_target,
    target_bounds,
)
from rillet_operator.meta import ChatService
from rillet_operator.spec import ChatServiceSpec
from rillet_operator.status import LatencyReading, Observed, slo_condition


def chat(**autoscaling: Any) -> ChatService:
    spec = {
        "autoscaling": {"streamsPerPod": 100, "targetUtilizationPercent": 70, **autoscaling},
        "latencyTargets": {"ttftP95Ms": 500, "interTokenP95Ms": 50},
    }
    return ChatService("chat", "ns", "uid", ChatServiceSpec.model_validate(spec))


def test_the_target_is_a_share_of_the_capacity_never_above_what_workers_admit() -> None:
    assert streams_per_pod_target(chat()) == 70
    # 2 workers x 20 streams (the conservative default) when nothing was calibrated
    assert streams_per_pod_target(chat(streamsPerPod=None)) == 28
    small = ChatServiceSpec.model_validate(
        {"server": {"maxConcurrentStreamsPerWorker": 10}, "autoscaling": {"streamsPerPod": 500}}
    )
    assert streams_per_pod_target(ChatService("c", "ns", "u", small)) == 14  # 70% of 2 x 10


def test_latency_over_90_percent_of_the_target_lowers_the_target_to_half_at_most() -> None:
    cs = chat()
    change = adapted_target(cs, ttft_p95_ms=460, streams_per_pod=10)
    assert change is not None
    assert change[0] == 63
    assert "TTFT p95 460 ms" in change[1]
    floor = replace(cs, adapted_target=50, adapted_from=70)
    assert adapted_target(floor, 900, 50) is None  # already at half the capacity


def test_the_target_rises_only_with_evidence_and_up_to_120_percent() -> None:
    cs = chat()
    assert adapted_target(cs, ttft_p95_ms=200, streams_per_pod=20) is None  # pods idle
    change = adapted_target(cs, ttft_p95_ms=200, streams_per_pod=65)
    assert change is not None
    assert change[0] == 73
    ceiling = replace(cs, adapted_target=120, adapted_from=70)
    assert adapted_target(ceiling, 200, 120) is None
    assert adapted_target(cs, 400, 70) is None  # between the two thresholds: keep


def test_a_new_configured_target_or_adaptation_off_starts_over() -> None:
    adapted = replace(chat(), adapted_target=60, adapted_from=70)
    assert streams_per_pod_target(adapted) == 60
    assert autoscaling_status(adapted) == {"streamsPerPodTarget": 60, "adaptedFrom": 70}
    respecified = replace(chat(targetUtilizationPercent=80), adapted_target=60, adapted_from=70)
    assert streams_per_pod_target(respecified) == configured_target(respecified) == 80
    assert autoscaling_status(respecified) is None
    off = replace(chat(adaptCapacity=False), adapted_target=60, adapted_from=70)
    assert streams_per_pod_target(off) == 70
    assert adapted_target(off, 900, 70) is None


def test_the_hpa_scales_on_streams_and_optionally_on_latency() -> None:
    hpa = autoscaler(chat(), None)
    assert hpa is not None
    names = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]]
    assert names == ["rillet_active_streams"]
    latency = autoscaler(chat(scaleOnLatency=True), None)
    assert latency is not None
    ttft = latency["spec"]["metrics"][1]["pods"]
    assert ttft["metric"]["name"] == "rillet_time_to_first_token_p95_seconds"
    assert ttft["target"]["averageValue"] == "500m"  # 500 ms as a quantity of seconds


def test_keda_needs_a_prometheus_and_expresses_the_same_rules() -> None:
    assert autoscaler(chat(engine="keda"), None) is None
    scaled = autoscaler(chat(engine="keda", scaleOnLatency=True), "http://prom:9090")
    assert scaled is not None
    assert scaled["kind"] == "ScaledObject"
    streams, ttft = scaled["spec"]["triggers"]
    assert streams["metadata"]["query"] == (
        'sum(rillet_active_streams{namespace="ns",chatservice="chat"})'
    )
    assert streams["metadata"]["threshold"] == "70"
    assert ttft["metricType"] == "Value"
    assert ttft["metadata"]["threshold"] == "0.5"
    assert ttft["metadata"]["query"].endswith("or vector(0)")


@pytest.mark.parametrize(
    ("reading", "status", "reason"),
    [
        (None, "Unknown", "PrometheusUnavailable"),
        (LatencyReading(error="connection refused"), "Unknown", "PrometheusUnavailable"),
        (LatencyReading(), "Unknown", "NoTraffic"),
        (LatencyReading(420, 30), "True", "WithinTargets"),
        (LatencyReading(420, 80), "False", "TargetMissed"),
        (LatencyReading(750, 30), "False", "TargetMissed"),
    ],
)
def test_slo_condition(reading: LatencyReading | None, status: str, reason: str) -> None:
    observed = Observed(1, None, None, prometheus_configured=True, latency=reading)
    condition = slo_condition(chat(), observed)
    assert (condition["status"], condition["reason"]) == (status, reason)
    no_prometheus = slo_condition(chat(), Observed(1, None, None))
    assert (no_prometheus["status"], no_prometheus["reason"]) == ("Unknown", "NoPrometheus")


def test_adaptation_never_aims_past_what_the_workers_admit() -> None:
    spec = ChatServiceSpec.model_validate(
        {"server": {"maxConcurrentStreamsPerWorker": 50}, "autoscaling": {"streamsPerPod": 100}}
    )
    at_the_cap = ChatService("c", "ns", "u", spec, adapted_target=100, adapted_from=70)
    assert target_bounds(at_the_cap) == (50, 100)  # 2 workers x 50, not 1.2 x 100
    assert adapted_target(at_the_cap, 100, 100) is None
