"""Autoscaling on latency targets, end to end: the operator's HPA is run by the real HPA
controller in kube-controller-manager, which reads custom metrics through the real
aggregator from a small adapter (testcluster/metrics_adapter.py, standing in for
Prometheus + prometheus-adapter because KWOK pods serve no /metrics); KWOK pods become
Ready as the Deployment scales. The operator reads observed latency from the same
adapter's Prometheus query API."""

from __future__ import annotations

from typing import Any

from rillet_operator.autoscaling import ACTIVE_STREAMS, TTFT_P95
from testcluster import TestCluster
from testcluster.metrics_adapter import MetricsAdapter
from tests.e2e.kube import (
    chat_service,
    condition,
    manifest,
    wait_condition,
    wait_for,
    wait_ready,
)

SCALING = {
    "minReplicas": 1,
    "maxReplicas": 4,
    "streamsPerPod": 10,
    "targetUtilizationPercent": 80,  # scale out above 8 streams per pod
    "scaleDownStabilizationSeconds": 5,
}


def replicas(cluster: TestCluster, namespace: str) -> tuple[int, int]:
    """(wanted, available) of the ChatService's Deployment."""
    deployment = cluster.get_json("-n", namespace, "deployment", "chat")
    return deployment["spec"]["replicas"], deployment["status"].get("availableReplicas", 0)


def wait_replicas(cluster: TestCluster, namespace: str, count: int) -> None:
    wait_for(
        f"{count} available pods",
        lambda: replicas(cluster, namespace) == (count, count) or replicas(cluster, namespace),
        timeout=90,
    )


def hpa_condition(cluster: TestCluster, namespace: str, kind: str) -> dict[str, Any]:
    return condition(cluster.get_json("-n", namespace, "hpa", "chat"), kind)


def test_the_hpa_scales_out_on_streams_and_on_latency_and_back_in(
    cluster: TestCluster, namespace: str, metrics: MetricsAdapter
) -> None:
    metrics.spread(namespace, "chat", ACTIVE_STREAMS, 0)
    metrics.each(namespace, "chat", TTFT_P95, 0.1)
    scaling = {**SCALING, "scaleOnLatency": True}
    spec = {"autoscaling": scaling, "latencyTargets": {"ttftP95Ms": 1000}}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("chat", **spec))
    wait_ready(cluster, namespace, "chat")
    wait_replicas(cluster, namespace, 1)

    # 20 streams at 8 per pod: ceil(20 / 8) = 3 pods.
    metrics.spread(namespace, "chat", ACTIVE_STREAMS, 20)
    wait_replicas(cluster, namespace, 3)
    wait_for(
        "status to count 3 ready pods",
        lambda: chat_service(cluster, namespace, "chat")["status"].get("readyReplicas") == 3,
    )

    # Streams within capacity but TTFT p95 at twice the target: out to maxReplicas.
    metrics.each(namespace, "chat", TTFT_P95, 2.0)
    wait_replicas(cluster, namespace, 4)

    # Load falls to 2 pods' worth: in again after the stabilization window. (The 10% a
    # minute rate counts from the period's start, so right after a scale-out the HPA may
    # undo it at once: the rate itself is the HPA controller's, pinned in golden files.)
    metrics.each(namespace, "chat", TTFT_P95, 0.1)
    metrics.spread(namespace, "chat", ACTIVE_STREAMS, 12)
    wait_replicas(cluster, namespace, 2)
    assert hpa_condition(cluster, namespace, "ScalingActive")["reason"] == "ValidMetricFound"


def test_status_compares_observed_latency_with_the_targets(
    cluster: TestCluster, namespace: str, metrics: MetricsAdapter
) -> None:
    targets = {"ttftP95Ms": 500, "interTokenP95Ms": 50}
    spec = {"replicas": 1, "latencyTargets": targets}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("chat", **spec))
    wait_ready(cluster, namespace, "chat")
    slo = condition(chat_service(cluster, namespace, "chat"), "SLOMet")
    assert (slo["status"], slo["reason"]) == ("Unknown", "NoTraffic"), slo

    metrics.latency(namespace, "chat", ttft_seconds=0.42, inter_token_seconds=0.03)
    body = wait_condition(cluster, namespace, "chat", "SLOMet", "True")
    assert body["status"]["observedLatency"]["ttftP95Ms"] == 420
    # NAME READY REPLICAS "TTFT TARGET" "TTFT P95" "SLO MET" AGE
    row = cluster.kubectl("get", "-n", namespace, "chat", "chat", "--no-headers").stdout.split()
    assert row[:6] == ["chat", "True", "1", "500", "420", "True"], row

    metrics.latency(namespace, "chat", ttft_seconds=0.75, inter_token_seconds=0.03)
    missed = condition(wait_condition(cluster, namespace, "chat", "SLOMet", "False"), "SLOMet")
    assert missed["reason"] == "TargetMissed"
    assert "TTFT p95 750 ms > 500 ms" in missed["message"]


def hpa_streams_target(cluster: TestCluster, namespace: str) -> int:
    metrics = cluster.get_json("-n", namespace, "hpa", "chat")["spec"]["metrics"]
    streams = next(m for m in metrics if m["pods"]["metric"]["name"] == ACTIVE_STREAMS)
    return int(streams["pods"]["target"]["averageValue"])


def test_the_streams_target_adapts_to_observed_latency_with_events(
    cluster: TestCluster, namespace: str, metrics: MetricsAdapter
) -> None:
    """The operator here adapts every 2 s (RILLET_OPERATOR_ADAPT_SECONDS), not every 5 minutes."""
    spec = {"autoscaling": SCALING, "latencyTargets": {"ttftP95Ms": 500}}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("chat", **spec))
    wait_ready(cluster, namespace, "chat")
    assert hpa_streams_target(cluster, namespace) == 8  # 80% of 10

    # TTFT p95 over 90% of the target: the target steps down, to half the capacity at most.
    metrics.latency(namespace, "chat", ttft_seconds=0.48, inter_token_seconds=0.02)
    wait_for("the floor of 5 streams per pod", lambda: hpa_streams_target(cluster, namespace) == 5)
    status = chat_service(cluster, namespace, "chat")["status"]["autoscaling"]
    assert status == {"streamsPerPodTarget": 5, "adaptedFrom": 8}
    events = cluster.get_json("-n", namespace, "events")["items"]
    adapted = [e["message"] for e in events if e["reason"] == "CapacityAdapted"]
    assert any("8 -> 7: TTFT p95 480 ms" in message for message in adapted), adapted

    # Fast while the pods carry their target: it steps up again.
    metrics.latency(namespace, "chat", 0.2, 0.02, streams_per_pod=5)
    wait_for("a higher target", lambda: hpa_streams_target(cluster, namespace) > 5)

    # A new configured target starts over from the spec.
    spec["autoscaling"] = {**SCALING, "targetUtilizationPercent": 50}
    metrics.latency(namespace, "chat", 0.4, 0.02, streams_per_pod=1)  # neither way
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("chat", **spec))
    wait_for("the configured 5", lambda: hpa_streams_target(cluster, namespace) == 5)


def test_keda_is_reported_missing_then_used_once_installed(
    cluster: TestCluster, namespace: str, metrics: MetricsAdapter
) -> None:
    spec: dict[str, Any] = {"autoscaling": {"engine": "keda", "minReplicas": 1}}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("chat", **spec))
    degraded = condition(wait_condition(cluster, namespace, "chat", "Degraded", "True"), "Degraded")
    assert degraded["reason"] == "APINotInstalled"
    assert "keda.sh/v1alpha1" in degraded["message"]
    assert "install KEDA" in degraded["message"]
    assert cluster.kubectl("get", "-n", namespace, "hpa", "chat", check=False).returncode != 0

    keda_crds = cluster.bin_dir.parent / "crds-keda"
    cluster.kubectl("apply", "--server-side", "-f", str(keda_crds))
    cluster.wait_crds_established()
    spec["autoscaling"]["minReplicas"] = 2  # any change: the operator reconciles again
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("chat", **spec))
    scaled = wait_for(
        "a ScaledObject",
        lambda: (
            cluster.kubectl(
                "get", "-n", namespace, "scaledobject", "chat", "-o", "json", check=False
            ).stdout
        ),
    )
    assert '"minReplicaCount": 2' in scaled
    assert metrics.prometheus_url in scaled
    assert '"name": "active-streams"' in scaled
    wait_condition(cluster, namespace, "chat", "Degraded", "False")
