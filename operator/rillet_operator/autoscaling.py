"""Latency targets compiled into autoscaling rules: pure builders for the HPA (custom
metrics served by prometheus-adapter) and the KEDA ScaledObject (Prometheus triggers),
and the rule by which the operator adapts the target (docs/design/2026-11-25-autoscaling.md).

- The autoscaler aims at active streams per pod: a share of the pod's calibrated
  capacity. Streams lead latency (TTFT rises only once a pod is past its capacity) and
  are linear in load, which is what the HPA's proportional rule assumes.
- Observed TTFT p95 moves that target slowly (`adapted_target`), correcting a calibration
  that no longer holds. As an HPA metric of its own (`scaleOnLatency`) it lags and
  overshoots, so that is opt-in.
"""

from __future__ import annotations

from typing import Any

from rillet_operator.meta import ChatService, metadata

ACTIVE_STREAMS = "rillet_active_streams"
TTFT_P95 = "rillet_time_to_first_token_p95_seconds"  # served by prometheus-adapter's rule
STREAMS_PER_WORKER_DEFAULT = 20
LATENCY_WINDOW = "2m"  # rate window for the HPA signals: short, they must react
STATUS_WINDOW = "5m"  # for status: steadier
KEDA_API_VERSION = "keda.sh/v1alpha1"


def pod_capacity(cs: ChatService) -> int:
    """Streams one pod serves within the targets: calibrated, or a conservative default;
    never above what its workers admit (past that they answer 503)."""
    measured = cs.spec.autoscaling.streams_per_pod
    default = cs.spec.server.workers_per_pod * STREAMS_PER_WORKER_DEFAULT
    return min(admitted_streams(cs), measured or default)


def configured_target(cs: ChatService) -> int:
    percent = cs.spec.autoscaling.target_utilization_percent
    return max(1, pod_capacity(cs) * percent // 100)


def admitted_streams(cs: ChatService) -> int:
    server = cs.spec.server
    return server.workers_per_pod * server.max_concurrent_streams_per_worker


def target_bounds(cs: ChatService) -> tuple[int, int]:
    """How far adaptation may move the target: half to 1.2x the pod's capacity, and never
    past what the workers admit."""
    capacity = pod_capacity(cs)
    return max(1, capacity // 2), max(1, min(admitted_streams(cs), capacity * 6 // 5))


def streams_per_pod_target(cs: ChatService) -> int:
    """What the autoscaler aims at: the adapted target when there is one in bounds."""
    return current_adaptation(cs) or configured_target(cs)


def current_adaptation(cs: ChatService) -> int | None:
    """The adapted target, if it still applies to this spec."""
    adapted, low, high = cs.adapted_target, *target_bounds(cs)
    if not cs.spec.autoscaling.adapt_capacity or adapted is None:
        return None
    if cs.adapted_from != configured_target(cs) or not low <= adapted <= high:
        return None
    return adapted


def autoscaling_status(cs: ChatService) -> dict[str, int] | None:
    adapted = current_adaptation(cs)
    if adapted is None or cs.spec.replicas is not None:
        return None
    return {"streamsPerPodTarget": adapted, "adaptedFrom": configured_target(cs)}


# Adaptation: additive-increase would be too slow for a day's swing, so both ways are
# multiplicative; down fast (a missed target costs users), up slowly and only on evidence
# (pods were actually loaded near the target while latency stayed well under it).
ADAPT_SECONDS = 300
TOO_SLOW, FAST_ENOUGH = 0.9, 0.75  # of the TTFT target (chosen by the simulation)
LOADED = 0.85  # of the current target, streams per pod, for evidence


def adapted_target(
    cs: ChatService, ttft_p95_ms: float | None, streams_per_pod: float | None
) -> tuple[int, str] | None:
    """The next target and why, or None to keep it. Pure: the operator calls it every
    ADAPT_SECONDS with what Prometheus saw over that window."""
    if cs.spec.replicas is not None or not cs.spec.autoscaling.adapt_capacity:
        return None  # no autoscaler, or adaptation off
    if ttft_p95_ms is None:
        return None
    current = streams_per_pod_target(cs)
    low, high = target_bounds(cs)
    target_ms = cs.spec.latency_targets.ttft_p95_ms
    if ttft_p95_ms > TOO_SLOW * target_ms:
        new = max(low, int(current * 0.9))
        why = f"TTFT p95 {ttft_p95_ms:.0f} ms is over {TOO_SLOW:.0%} of the {target_ms} ms target"
    elif (
        ttft_p95_ms < FAST_ENOUGH * target_ms
        and streams_per_pod is not None
        and streams_per_pod >= LOADED * current
    ):
        new = min(high, max(current + 1, int(current * 1.05)))
        why = (
            f"TTFT p95 {ttft_p95_ms:.0f} ms at {streams_per_pod:.0f} streams per pod is under "
            f"{FAST_ENOUGH:.0%} of the {target_ms} ms target"
        )
    else:
        return None
    return (new, why) if new != current else None


def ttft_target_seconds(cs: ChatService) -> str:
    """The TTFT target as a Kubernetes quantity in seconds: 500 ms is "500m"."""
    return f"{cs.spec.latency_targets.ttft_p95_ms}m"


def behavior(cs: ChatService) -> dict[str, Any]:
    return {
        # Up at once: a latency target is missed seconds after a burst, and a pod takes
        # tens of seconds to start.
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 15},
                {"type": "Pods", "value": 4, "periodSeconds": 15},
            ],
        },
        # Down slowly: only to the highest recommendation of the window, and 10% a minute
        # (the HPA rounds that to at least one pod): each removed pod drains its streams.
        "scaleDown": {
            "stabilizationWindowSeconds": cs.spec.autoscaling.scale_down_stabilization_seconds,
            "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}],
        },
    }


def _pods_metric(name: str, average: str) -> dict[str, Any]:
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": name},
            "target": {"type": "AverageValue", "averageValue": average},
        },
    }


def horizontal_pod_autoscaler(cs: ChatService) -> dict[str, Any]:
    scaling = cs.spec.autoscaling
    metrics = [_pods_metric(ACTIVE_STREAMS, str(streams_per_pod_target(cs)))]
    if scaling.scale_on_latency:
        metrics.append(_pods_metric(TTFT_P95, ttft_target_seconds(cs)))
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(cs, cs.name, "chat"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": cs.name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": metrics,
            "behavior": behavior(cs),
        },
    }


# -- PromQL: one place for the queries KEDA, the status reader and the docs use -------------


def matchers(namespace: str, name: str) -> str:
    """The series of one ChatService's pods, as labelled by the chart's PodMonitor."""
    return f'namespace="{namespace}",chatservice="{name}"'


def quantile_query(histogram: str, selector: str, window: str, by: str = "") -> str:
    group = ", ".join(part for part in (by, "le") if part)
    return (
        f"histogram_quantile(0.95, sum by ({group}) "
        f"(rate({histogram}_bucket{{{selector}}}[{window}])))"
    )


def ttft_p95_query(selector: str, window: str, by: str = "") -> str:
    return quantile_query("rillet_time_to_first_token_seconds", selector, window, by)


def inter_token_p95_query(selector: str, window: str, by: str = "") -> str:
    return quantile_query("rillet_inter_token_latency_seconds", selector, window, by)


def streams_per_pod_query(selector: str, window: str, by: str) -> str:
    return f"avg by ({by}) (avg_over_time({ACTIVE_STREAMS}{{{selector}}}[{window}]))"


def scaled_object(cs: ChatService, prometheus_url: str) -> dict[str, Any]:
    """The same two rules as the HPA, for KEDA: the Prometheus queries are per ChatService,
    so active streams are summed and divided by KEDA (AverageValue) and TTFT is compared
    as is (Value)."""
    scaling = cs.spec.autoscaling
    selector = matchers(cs.namespace, cs.name)
    triggers: list[dict[str, Any]] = [
        {
            "type": "prometheus",
            "name": "active-streams",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": prometheus_url,
                "query": f"sum({ACTIVE_STREAMS}{{{selector}}})",
                "threshold": str(streams_per_pod_target(cs)),
                "ignoreNullValues": "true",
            },
        }
    ]
    if scaling.scale_on_latency:
        triggers.append(
            {
                "type": "prometheus",
                "name": "ttft-p95",
                "metricType": "Value",
                "metadata": {
                    "serverAddress": prometheus_url,
                    # No traffic gives no sample: 0, not an error that blocks scaling in.
                    "query": f"{ttft_p95_query(selector, LATENCY_WINDOW)} or vector(0)",
                    "threshold": str(cs.spec.latency_targets.ttft_p95_ms / 1000),
                    "ignoreNullValues": "true",
                },
            }
        )
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": metadata(cs, cs.name, "chat"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": cs.name},
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "pollingInterval": 15,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior(cs)}},
            "triggers": triggers,
        },
    }


def autoscaler(cs: ChatService, prometheus_url: str | None) -> dict[str, Any] | None:
    """The autoscaler child, or None: a fixed replica count, or KEDA without Prometheus
    (reported in status rather than half-built)."""
    if cs.spec.replicas is not None:
        return None
    if cs.spec.autoscaling.engine == "keda":
        return scaled_object(cs, prometheus_url) if prometheus_url else None
    return horizontal_pod_autoscaler(cs)
