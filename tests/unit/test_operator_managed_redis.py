"""The managed Redis as the operator builds it: durability flags, the claim and what may
change of it, the disruption budget, the one-replica rule, and what status says."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from rillet_operator import builders
from rillet_operator.apply import Outcome, _optional_children, retained_message
from rillet_operator.crd import build_crd, render_reference
from rillet_operator.meta import ChatService, selector
from rillet_operator.spec import (
    MANAGED_REDIS_REPLICAS_MESSAGE,
    ChatServiceSpec,
    RedisPersistenceSpec,
)
from rillet_operator.status import Observed, compute_status

READY_DEPLOYMENT = {
    "metadata": {"generation": 1},
    "spec": {"replicas": 1},
    "status": {
        "observedGeneration": 1,
        "replicas": 1,
        "updatedReplicas": 1,
        "availableReplicas": 1,
        "readyReplicas": 1,
        "conditions": [{"type": "Available", "status": "True"}],
    },
}


def chat_service(**managed: Any) -> ChatService:
    body = {
        "metadata": {"name": "chat", "namespace": "team", "uid": "uid-1"},
        "spec": {"redis": {"managed": managed}},
    }
    return ChatService.from_body(body)


def argument(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def pod_of(statefulset: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = statefulset["spec"]["template"]["spec"]
    return pod


def live(statefulset: dict[str, Any], ready: int = 1) -> dict[str, Any]:
    """A StatefulSet as the API server would give it back (defaults filled in)."""
    spec = dict(statefulset["spec"])
    spec["volumeClaimTemplates"] = [
        {
            **template,
            "spec": {**template["spec"], "volumeMode": "Filesystem"},
            "status": {"phase": "Pending"},
        }
        for template in spec.get("volumeClaimTemplates", [])
    ]
    if not spec["volumeClaimTemplates"]:
        del spec["volumeClaimTemplates"]
    return {**statefulset, "spec": spec, "status": {"readyReplicas": ready}}


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in status["conditions"] if c["type"] == kind)
    return found


# -- durability ----------------------------------------------------------------------------


def test_by_default_every_write_reaches_an_aof_fsynced_each_second_plus_snapshots() -> None:
    args = builders.redis_args(chat_service())
    assert argument(args, "--appendonly") == "yes"
    assert argument(args, "--appendfsync") == "everysec"
    assert argument(args, "--save") == "3600 1 300 100 60 10000"
    assert argument(args, "--dir") == "/data"
    assert argument(args, "--maxmemory-policy") == "noeviction"


def test_fsync_always_is_a_choice_that_survives_a_kept_claim() -> None:
    """`always`: Redis fsyncs before it replies, so no acknowledged turn is lost with the
    node. It changes the pod, not the claim, so it applies even when the claim is kept."""
    cs = chat_service(persistence={"fsync": "always"})
    assert argument(builders.redis_args(cs), "--appendfsync") == "always"
    existing = live(builders.redis_stateful_set(chat_service()))
    resized = chat_service(persistence={"fsync": "always", "size": "5Gi"})
    kept = builders.persistence_to_apply(resized, existing)
    assert builders.same_claim(kept, builders.claim_in_place(existing))
    assert argument(builders.redis_args(resized, kept), "--appendfsync") == "always"


def test_switched_off_redis_writes_nothing_to_disk() -> None:
    cs = chat_service(persistence={"enabled": False})
    args = builders.redis_args(cs)
    assert argument(args, "--appendonly") == "no"
    assert argument(args, "--save") == ""
    assert "--appendfsync" not in args
    statefulset = builders.redis_stateful_set(cs)
    assert "volumeClaimTemplates" not in statefulset["spec"]
    assert {"name": "data", "emptyDir": {}} in pod_of(statefulset)["volumes"]


def test_the_data_lives_on_a_claim_from_the_template() -> None:
    statefulset = builders.redis_stateful_set(chat_service())
    (template,) = statefulset["spec"]["volumeClaimTemplates"]
    assert template["metadata"]["name"] == "data"
    assert template["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}},
    }  # no storageClassName: the cluster's default class
    (container,) = pod_of(statefulset)["containers"]
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    assert all(v["name"] != "data" for v in pod_of(statefulset)["volumes"])
    assert builders.claim_names(statefulset) == ["data-chat-redis-0"]

    sized = chat_service(persistence={"size": "20Gi", "storageClassName": "fast-ssd"})
    (template,) = builders.redis_stateful_set(sized)["spec"]["volumeClaimTemplates"]
    assert template["spec"]["resources"] == {"requests": {"storage": "20Gi"}}
    assert template["spec"]["storageClassName"] == "fast-ssd"


def test_the_claim_outlives_the_stateful_set_and_rollouts_replace_the_pod_in_place() -> None:
    spec = builders.redis_stateful_set(chat_service())["spec"]
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert spec["updateStrategy"] == {"type": "RollingUpdate"}
    assert spec["replicas"] == 1
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 30  # time to fsync and snapshot
    assert pod["securityContext"]["fsGroup"] == builders.REDIS_UID


def test_a_large_aof_being_read_back_is_alive_but_not_ready() -> None:
    (container,) = pod_of(builders.redis_stateful_set(chat_service()))["containers"]
    ready = container["readinessProbe"]["exec"]["command"][-1]
    alive = container["livenessProbe"]["exec"]["command"][-1]
    assert "LOADING" not in ready
    assert "LOADING" in alive


def test_the_redis_pod_has_a_budget_that_lets_a_drain_through() -> None:
    cs = chat_service()
    manifests = builders.children(cs, redis_password="pw")
    budgets = {
        m["metadata"]["name"]: m["spec"] for m in manifests if m["kind"] == "PodDisruptionBudget"
    }
    assert set(budgets) == {"chat", "chat-redis"}
    redis_pods = builders.redis_stateful_set(cs)["spec"]["template"]["metadata"]["labels"]
    budget = budgets["chat-redis"]
    assert budget["selector"] == {"matchLabels": selector(cs, "redis")}
    assert budget["selector"]["matchLabels"].items() <= redis_pods.items()
    assert budget["maxUnavailable"] == 1  # minAvailable 1 would hold every node drain
    assert "minAvailable" not in budget
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    # The chat pods' budget does not count the Redis pod, nor the other way round.
    assert budgets["chat"]["selector"]["matchLabels"] != budget["selector"]["matchLabels"]
    # Moving to an external Redis prunes its budget with it.
    assert ("policy/v1", "PodDisruptionBudget", "chat-redis") in _optional_children(cs)


# -- the claim cannot change in place --------------------------------------------------------


def test_an_unchanged_claim_is_applied_as_the_spec_says() -> None:
    cs = chat_service(persistence={"size": "1024Mi"})
    in_place = live(builders.redis_stateful_set(chat_service()))  # made with 1Gi
    assert builders.persistence_to_apply(cs, in_place) == cs.spec.redis.managed.persistence  # type: ignore[union-attr]
    assert builders.persistence_to_apply(cs, None) == cs.spec.redis.managed.persistence  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({}, {"persistence": {"size": "2Gi"}}),
        ({}, {"persistence": {"storageClassName": "fast-ssd"}}),
        ({}, {"persistence": {"enabled": False}}),
        ({"persistence": {"enabled": False}}, {}),
    ],
    ids=["size", "class", "switched-off", "switched-on"],
)
def test_a_changed_claim_keeps_the_one_in_place_and_applies_the_rest(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    """The API server refuses any change to volumeClaimTemplates: applying one would fail
    every reconcile. The template in place stays, everything else rolls out."""
    existing = live(builders.redis_stateful_set(chat_service(**before)))
    changed = chat_service(**after, memoryLimit="512Mi")
    kept = builders.persistence_to_apply(changed, existing)
    assert builders.same_claim(kept, builders.claim_in_place(existing))

    desired = next(
        m
        for m in builders.children(changed, "pw", redis_persistence=kept)
        if m["kind"] == "StatefulSet"
    )
    assert builders.same_claim(builders.claim_in_place(desired), kept)
    (container,) = pod_of(desired)["containers"]
    assert container["resources"]["limits"]["memory"] == "512Mi"  # the rest is applied
    # The pod stays whole: every mount has its volume, AOF only with a claim under it.
    volumes = {v["name"] for v in pod_of(desired)["volumes"]}
    claims = {t["metadata"]["name"] for t in desired["spec"].get("volumeClaimTemplates", [])}
    assert {m["name"] for m in container["volumeMounts"]} <= volumes | claims
    assert (argument(container["args"], "--appendonly") == "yes") == bool(claims)

    status = compute_status(changed, Observed(1, READY_DEPLOYMENT, live(desired)), {}, "t")
    degraded = condition(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RedisClaimImmutable")
    assert "cannot change in place" in degraded["message"]
    assert condition(status, "Ready")["status"] == "True"  # it serves, with the old claim


def test_a_claim_as_asked_is_not_degraded() -> None:
    cs = chat_service(persistence={"size": "2Gi"})
    statefulset = live(builders.redis_stateful_set(cs))
    status = compute_status(cs, Observed(1, READY_DEPLOYMENT, statefulset), {}, "t")
    assert condition(status, "Degraded")["reason"] == "AsExpected"
    assert condition(status, "RedisReady")["reason"] == "Ready"


def test_a_template_grown_over_a_claim_not_expanded_says_so() -> None:
    """After `kubectl delete statefulset --cascade=orphan` the new template asks for more
    than the claim it adopts: the claim itself must be expanded."""
    cs = chat_service(persistence={"size": "5Gi"})
    statefulset = live(builders.redis_stateful_set(cs))

    def claim(storage: str) -> dict[str, Any]:
        return {
            "metadata": {"name": "data-chat-redis-0"},
            "spec": {"resources": {"requests": {"storage": storage}}},
        }

    observed = Observed(1, READY_DEPLOYMENT, statefulset, redis_claim=claim("1Gi"))
    degraded = condition(compute_status(cs, observed, {}, "t"), "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RedisClaimNotExpanded")
    assert "kubectl patch pvc data-chat-redis-0" in degraded["message"]

    expanding = Observed(1, READY_DEPLOYMENT, statefulset, redis_claim=claim("5120Mi"))
    assert condition(compute_status(cs, expanding, {}, "t"), "Degraded")["reason"] == "AsExpected"


# -- status and Events --------------------------------------------------------------------


def test_persistence_off_is_a_warning_in_the_redis_condition() -> None:
    cs = chat_service(persistence={"enabled": False})
    statefulset = live(builders.redis_stateful_set(cs))
    status = compute_status(cs, Observed(1, READY_DEPLOYMENT, statefulset), {}, "t")
    redis = condition(status, "RedisReady")
    assert (redis["status"], redis["reason"]) == ("True", "PersistenceDisabled")
    assert "loses every thread" in redis["message"]
    assert condition(status, "Degraded")["reason"] == "AsExpected"  # what was asked for
    starting = compute_status(cs, Observed(1, READY_DEPLOYMENT, live(statefulset, 0)), {}, "t")
    assert condition(starting, "RedisReady")["reason"] == "Starting"


def test_the_event_for_a_pruned_redis_names_the_claim_left_in_place() -> None:
    message = retained_message(Outcome(retained_claims=["data-chat-redis-0 (1Gi)"]))
    assert "PersistentVolumeClaim data-chat-redis-0 (1Gi)" in message
    assert "kubectl delete pvc" in message


# -- one replica, said clearly --------------------------------------------------------------


def test_more_than_one_replica_is_refused_pointing_at_an_external_redis() -> None:
    assert ChatServiceSpec.model_validate({"redis": {"managed": {"replicas": 1}}})
    with pytest.raises(ValidationError, match="Sentinel set"):
        ChatServiceSpec.model_validate({"redis": {"managed": {"replicas": 3}}})
    managed = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["redis"]["properties"]["managed"]
    assert managed["properties"]["replicas"]["maximum"] == 1
    assert {
        "rule": "!has(self.replicas) || self.replicas == 1",
        "message": MANAGED_REDIS_REPLICAS_MESSAGE,
    } in managed["x-kubernetes-validations"]
    assert "redis.external.sentinel" in MANAGED_REDIS_REPLICAS_MESSAGE
    assert MANAGED_REDIS_REPLICAS_MESSAGE in render_reference()


@pytest.mark.parametrize("size", ["1GB", "1 Gi", "-1Gi", "Gi"])
def test_a_size_kubernetes_would_not_read_is_refused_at_apply(size: str) -> None:
    with pytest.raises(ValidationError, match=r"persistence\.size"):
        ChatServiceSpec.model_validate({"redis": {"managed": {"persistence": {"size": size}}}})
    managed = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["redis"]["properties"]["managed"]["properties"]
    for field in (managed["persistence"]["properties"]["size"], managed["memoryLimit"]):
        assert field["pattern"] == "^[0-9]+(\\.[0-9]+)?([KMGTPE]i|[kMGTPE])?$"
    for good in ("512Mi", "20Gi", "1G", "1.5Gi"):
        builders.quantity(good, "size")  # what the API server and the builders read


def test_the_defaults_the_api_server_fills_in() -> None:
    managed = ChatServiceSpec.model_validate({"redis": {"managed": {}}}).redis.managed  # type: ignore[union-attr]
    assert managed is not None
    assert managed.persistence == RedisPersistenceSpec(enabled=True, size="1Gi")
    assert managed.eviction_policy == "noeviction"
    assert managed.replicas == 1
