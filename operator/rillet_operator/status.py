"""ChatService status, computed from what the children report (level-based, never from
what the operator last attempted)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rillet_operator.builders import ChatService, selector_string

Condition = dict[str, Any]


@dataclass(frozen=True)
class Observed:
    """The children's live state, as read back from the API server."""

    generation: int
    deployment: dict[str, Any] | None
    redis: dict[str, Any] | None  # the managed Redis StatefulSet, when there is one
    unsupported: tuple[str, ...] = ()


def _condition(kind: str, ok: bool, reason: str, message: str = "") -> Condition:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}


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
        result.append(
            _condition(
                "RedisReady",
                ready,
                "Ready" if ready else "Starting",
                "managed Redis is ready" if ready else "waiting for the managed Redis pod",
            )
        )
    elif redis and redis.external:
        result.append(
            _condition(
                "RedisReady",
                True,
                "External",
                "external Redis: not probed by the operator; pods report state_unavailable",
            )
        )

    if not redis_ok:
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

    if stuck.get("reason") == "ProgressDeadlineExceeded":
        degraded = _condition(
            "Degraded", True, "ProgressDeadlineExceeded", stuck.get("message", "")
        )
    elif failure.get("status") == "True":
        degraded = _condition("Degraded", True, "ReplicaFailure", failure.get("message", ""))
    elif observed.unsupported:
        degraded = _condition(
            "Degraded",
            True,
            "UnsupportedSettings",
            "this runtime version ignores: " + ", ".join(observed.unsupported),
        )
    else:
        degraded = _condition("Degraded", False, "AsExpected")
    result.append(degraded)
    return result


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
    }
