"""ChatService status, computed from what the children report (level-based, never from
what the operator last attempted)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rillet_operator.autoscaling import STATUS_WINDOW, autoscaling_status
from rillet_operator.builders import (
    RUNTIME_CONTAINER,
    claim_in_place,
    quantity,
    requested_storage,
    same_claim,
)
from rillet_operator.meta import ChatService, selector_string
from rillet_operator.runtime_settings import api_keys_secret
from rillet_operator.spec import RedisPersistenceSpec

Condition = dict[str, Any]


@dataclass(frozen=True)
class LatencyReading:
    """One ChatService's latency as Prometheus saw it over STATUS_WINDOW; None: no samples
    (no traffic). `error` says why there is no reading at all."""

    ttft_p95_ms: float | None = None
    inter_token_p95_ms: float | None = None
    streams_per_pod: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Observed:
    """The children's live state, as read back from the API server."""

    generation: int
    deployment: dict[str, Any] | None
    redis: dict[str, Any] | None  # the managed Redis StatefulSet, when there is one
    missing_apis: tuple[str, ...] = ()  # children whose API the cluster does not serve
    prometheus_configured: bool = False
    latency: LatencyReading | None = None
    # Objects named like children that the ChatService does not control ("Service demo").
    conflicts: tuple[str, ...] = ()
    network_policies: bool = True  # the operator creates NetworkPolicies (its settings)
    redis_claim: dict[str, Any] | None = None  # the managed Redis's PersistentVolumeClaim


def controlled_by(obj: dict[str, Any], uid: str) -> bool:
    """Whether `obj` names the object with `uid` as its controller (a controller owner
    reference: what the operator puts on every child)."""
    return any(
        ref.get("controller") and ref.get("uid") == uid
        for ref in obj.get("metadata", {}).get("ownerReferences") or []
    )


def name_conflicts(cs: ChatService, existing: Iterable[dict[str, Any] | None]) -> tuple[str, ...]:
    """`Kind name` of every existing object, read where a child goes, that the ChatService
    does not control: applying over it would silently take someone else's object over."""
    return tuple(
        f"{obj['kind']} {obj['metadata']['name']}"
        for obj in existing
        if obj is not None and not controlled_by(obj, cs.uid)
    )


def held_back(cs: ChatService, observed: Observed) -> Condition | None:
    """Why the operator must apply nothing at all for this ChatService, as its Degraded
    condition; None when it may go ahead."""
    if observed.conflicts:
        return _condition(
            "Degraded",
            True,
            "NameConflict",
            ", ".join(observed.conflicts)
            + " already exists and is not controlled by this ChatService: nothing is "
            "applied until it is renamed or deleted",
        )
    if cs.spec.auth.mode == "trustedHeader" and not observed.network_policies:
        return _condition(
            "Degraded",
            True,
            "NetworkPoliciesDisabled",
            "auth.mode trustedHeader trusts a header only the gateway may set, which needs "
            "the operator's NetworkPolicies, and they are switched off: nothing is applied",
        )
    return None


def _condition(kind: str, ok: bool | None, reason: str, message: str = "") -> Condition:
    status = "Unknown" if ok is None else "True" if ok else "False"
    return {"type": kind, "status": status, "reason": reason, "message": message}


def _deployment_condition(deployment: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in deployment.get("status", {}).get("conditions", []):
        if condition.get("type") == kind:
            return dict(condition)
    return {}


def rollout(deployment: dict[str, Any] | None) -> tuple[bool, str]:
    """(complete, why not): every replica updated and available, no old one left."""
    if deployment is None:
        return False, "the Deployment does not exist yet"
    status = deployment.get("status", {})
    if status.get("observedGeneration", 0) < deployment["metadata"].get("generation", 0):
        return False, "the Deployment controller has not seen the latest spec"
    want = deployment.get("spec", {}).get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    available = status.get("availableReplicas", 0)
    total = status.get("replicas", 0)
    if updated < want or total > updated or available < updated:
        return False, f"{updated} of {want} pods updated, {available} available, {total} running"
    return True, f"{available} pods available"


def conditions(cs: ChatService, observed: Observed) -> list[Condition]:
    held = held_back(cs, observed)
    deployment = observed.deployment
    complete, progress = rollout(deployment)
    available = (
        bool(deployment)
        and _deployment_condition(deployment or {}, "Available").get("status") == "True"
    )
    stuck = _deployment_condition(deployment or {}, "Progressing")
    failure = _deployment_condition(deployment or {}, "ReplicaFailure")

    result: list[Condition] = []
    redis_ok = True
    redis = cs.spec.redis
    if redis and redis.managed:
        ready = (observed.redis or {}).get("status", {}).get("readyReplicas", 0) >= 1
        redis_ok = ready
        # What it runs with: its StatefulSet's claim, once there is one.
        in_place = claim_in_place(observed.redis) if observed.redis else redis.managed.persistence
        result.append(_managed_redis_condition(ready, in_place))
    elif redis and redis.external:
        result.append(
            _condition(
                "RedisReady",
                True,
                "External",
                "external Redis: not probed by the operator; pods report state_unavailable",
            )
        )

    if held:
        ready = _condition("Ready", False, held["reason"], held["message"])
    elif not redis_ok:
        ready = _condition("Ready", False, "RedisNotReady", "waiting for the managed Redis")
    elif not available:
        ready = _condition("Ready", False, "DeploymentUnavailable", progress)
    elif not complete:
        ready = _condition("Ready", False, "RollingOut", progress)
    else:
        ready = _condition("Ready", True, "Ready", f"{progress}; serving at {cs.endpoint}")
    result.append(ready)
    result.append(
        _condition(
            "Progressing", not complete, "RollingOut" if not complete else "Complete", progress
        )
    )

    if held:
        degraded = held
    elif stuck.get("reason") == "ProgressDeadlineExceeded":
        degraded = _condition(
            "Degraded", True, "ProgressDeadlineExceeded", stuck.get("message", "")
        )
    elif failure.get("status") == "True":
        degraded = _condition("Degraded", True, "ReplicaFailure", failure.get("message", ""))
    elif claim_change := redis_claim_change(cs, observed):
        degraded = _condition("Degraded", True, *claim_change)
    elif observed.missing_apis:
        degraded = _condition(
            "Degraded",
            True,
            "APINotInstalled",
            "the cluster does not serve "
            + ", ".join(observed.missing_apis)
            + (" (install KEDA)" if cs.spec.autoscaling.engine == "keda" else ""),
        )
    elif _keda_without_prometheus(cs, observed):
        degraded = _condition(
            "Degraded",
            True,
            "NoPrometheus",
            "autoscaling.engine=keda needs the operator's --prometheus-url; not autoscaling",
        )
    else:
        degraded = _condition("Degraded", False, "AsExpected")
    result.append(degraded)
    result.append(slo_condition(cs, observed))
    return result


def _managed_redis_condition(ready: bool, persistence: RedisPersistenceSpec) -> Condition:
    if not ready:
        return _condition("RedisReady", False, "Starting", "waiting for the managed Redis pod")
    if not persistence.enabled:
        return _condition(
            "RedisReady",
            True,
            "PersistenceDisabled",
            "managed Redis is ready, without persistence: a restart, reschedule or rollout "
            "of its pod loses every thread (redis.managed.persistence.enabled)",
        )
    return _condition("RedisReady", True, "Ready", "managed Redis is ready")


def _describe_claim(persistence: RedisPersistenceSpec) -> str:
    if not persistence.enabled:
        return "no claim (persistence off)"
    storage_class = persistence.storage_class_name
    where = f"StorageClass {storage_class}" if storage_class else "the default StorageClass"
    return f"a {persistence.size} claim of {where}"


def redis_claim_change(cs: ChatService, observed: Observed) -> tuple[str, str] | None:
    """(reason, message) when the managed Redis's claim is not what the spec asks for;
    None when it is. A StatefulSet's claim template cannot change in place, so the
    operator keeps it; the claim itself grows only when someone expands it."""
    redis = cs.spec.redis
    if not (redis and redis.managed and observed.redis):
        return None
    wanted, in_place = redis.managed.persistence, claim_in_place(observed.redis)
    if not same_claim(wanted, in_place):
        return "RedisClaimImmutable", (
            f"redis.managed.persistence asks for {_describe_claim(wanted)}; the Redis has "
            f"{_describe_claim(in_place)}, which cannot change in place (a StatefulSet's "
            "volumeClaimTemplates are immutable): the rest of the spec is applied, the claim "
            "stays. docs/state.md#changing-the-claim says how to move"
        )
    claim = observed.redis_claim
    requested = requested_storage(claim) if claim and wanted.enabled else None
    field = "redis.managed.persistence.size"
    if claim and requested and quantity(requested, field) < quantity(wanted.size, field):
        name = claim["metadata"]["name"]
        return "RedisClaimNotExpanded", (
            f"PersistentVolumeClaim {name} asks for {requested}, {field} for {wanted.size}: "
            f"expand the claim (`kubectl patch pvc {name}`, where its StorageClass allows "
            "volume expansion)"
        )
    return None


def _keda_without_prometheus(cs: ChatService, observed: Observed) -> bool:
    keda = cs.spec.autoscaling.engine == "keda" and cs.spec.replicas is None
    return keda and not observed.prometheus_configured


def slo_condition(cs: ChatService, observed: Observed) -> Condition:
    """Observed p95 latency against the targets, or Unknown saying what is missing."""
    if not observed.prometheus_configured:
        return _condition(
            "SLOMet", None, "NoPrometheus", "start the operator with --prometheus-url to compare"
        )
    reading = observed.latency
    if reading is None or reading.error:
        why = (reading.error if reading else None) or "not read yet"
        return _condition("SLOMet", None, "PrometheusUnavailable", why)
    if reading.ttft_p95_ms is None:
        return _condition("SLOMet", None, "NoTraffic", f"no streams in the last {STATUS_WINDOW}")
    targets = cs.spec.latency_targets
    checks = [("TTFT", reading.ttft_p95_ms, targets.ttft_p95_ms)]
    if reading.inter_token_p95_ms is not None:
        checks.append(("inter-token", reading.inter_token_p95_ms, targets.inter_token_p95_ms))
    missed = [
        f"{name} p95 {value:.0f} ms > {target} ms"
        for name, value, target in checks
        if value > target
    ]
    if missed:
        return _condition("SLOMet", False, "TargetMissed", "; ".join(missed))
    met = "; ".join(f"{name} p95 {value:.0f} ms <= {target} ms" for name, value, target in checks)
    return _condition("SLOMet", True, "WithinTargets", met)


def observed_latency(observed: Observed) -> dict[str, Any] | None:
    reading = observed.latency
    if reading is None or reading.ttft_p95_ms is None:
        return None
    return {
        "ttftP95Ms": round(reading.ttft_p95_ms),
        "interTokenP95Ms": None
        if reading.inter_token_p95_ms is None
        else round(reading.inter_token_p95_ms),
        "window": STATUS_WINDOW,
    }


def with_transition_times(
    new: list[Condition], old: list[Condition], now: str, generation: int
) -> list[Condition]:
    """Keep lastTransitionTime while a condition's status stays the same."""
    previous = {c.get("type"): c for c in old}
    stamped = []
    for condition in new:
        before = previous.get(condition["type"], {})
        same = before.get("status") == condition["status"]
        when = before.get("lastTransitionTime") if same else None
        stamped.append(
            {**condition, "lastTransitionTime": when or now, "observedGeneration": generation}
        )
    return stamped


def compute_status(
    cs: ChatService, observed: Observed, old_status: dict[str, Any], now: str
) -> dict[str, Any]:
    status = (observed.deployment or {}).get("status", {})
    return {
        "observedGeneration": observed.generation,
        "conditions": with_transition_times(
            conditions(cs, observed), old_status.get("conditions", []), now, observed.generation
        ),
        "replicas": status.get("replicas", 0),
        "readyReplicas": status.get("readyReplicas", 0),
        "selector": selector_string(cs),
        "endpoint": cs.endpoint,
        "image": pod_image(observed.deployment),
        "observedLatency": observed_latency(observed),
        "autoscaling": autoscaling_status(cs),
        "auth": auth_status(cs),
    }


def pod_image(deployment: dict[str, Any] | None) -> str | None:
    """The image the live Deployment gives its pods: spec.image or the operator's default."""
    pod = (deployment or {}).get("spec", {}).get("template", {}).get("spec", {})
    images = [c.get("image") for c in pod.get("containers", []) if c["name"] == RUNTIME_CONTAINER]
    return images[0] if images else None


def auth_status(cs: ChatService) -> dict[str, Any] | None:
    """The Secret the pods read their API keys from; its name only, never a key."""
    secret = api_keys_secret(cs.name, cs.spec)
    return {"apiKeysSecret": secret} if secret else None
