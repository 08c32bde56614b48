"""The managed Redis's data on a real control plane: the StatefulSet controller makes its
claim from the template (the test cluster's default StorageClass provisions it), and the
claim stays through a deleted pod, a rollout, a claim change the API server would refuse,
and a move to an external Redis. KWOK runs no container: these tests check the objects."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from kubernetes.client import Configuration
from kubernetes.config import load_kube_config

from rillet_operator.apply import reconcile
from rillet_operator.kube import Kube
from testcluster import TestCluster
from testcluster.operator import OperatorProcess
from tests.e2e.kube import chat_service, condition, manifest, wait_condition, wait_for, wait_ready

REDIS: dict[str, Any] = {"redis": {"managed": {}}}


def claim(cluster: TestCluster, namespace: str, name: str) -> dict[str, Any] | None:
    done = cluster.kubectl("get", "-n", namespace, "pvc", name, "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def redis_pod(cluster: TestCluster, namespace: str, name: str) -> dict[str, Any] | None:
    """The Redis pod, once Running and Ready (not while it is being deleted)."""
    done = cluster.kubectl(
        "get", "-n", namespace, "pod", f"{name}-redis-0", "-o", "json", check=False
    )
    if done.returncode != 0:
        return None
    pod: dict[str, Any] = json.loads(done.stdout)
    ready = any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )
    return pod if ready and not pod["metadata"].get("deletionTimestamp") else None


def claim_of(pod: dict[str, Any]) -> str:
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "data"]
    name: str = volume["persistentVolumeClaim"]["claimName"]
    return name


def patch(cluster: TestCluster, namespace: str, name: str, spec: dict[str, Any]) -> None:
    body = json.dumps({"spec": spec})
    cluster.kubectl("patch", "-n", namespace, "chat", name, "--type=merge", "-p", body)


def rolled_out(cluster: TestCluster, namespace: str, name: str) -> dict[str, Any] | None:
    """The StatefulSet, once its controller has every pod on the latest template."""
    found: dict[str, Any] = cluster.get_json("-n", namespace, "statefulset", f"{name}-redis")
    status = found.get("status", {})
    done = (
        status.get("observedGeneration") == found["metadata"]["generation"]
        and status.get("updateRevision") == status.get("currentRevision")
        and status.get("updatedReplicas") == 1
        and status.get("readyReplicas") == 1
    )
    return found if done else None


def test_the_claim_outlives_its_pod_and_a_rollout(cluster: TestCluster, namespace: str) -> None:
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=manifest("keep", replicas=1, **REDIS)
    )
    wait_ready(cluster, namespace, "keep")
    redis = cluster.get_json("-n", namespace, "statefulset", "keep-redis")
    assert redis["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendfsync") + 1] == "everysec"
    budget = cluster.get_json("-n", namespace, "pdb", "keep-redis")
    assert budget["spec"]["maxUnavailable"] == 1
    # One pod, evictable: a drain is not held (the disruption controller's own count).
    wait_for(
        "the budget's allowed disruptions",
        lambda: (
            cluster.get_json("-n", namespace, "pdb", "keep-redis")
            .get("status", {})
            .get("disruptionsAllowed")
            == 1
        ),
    )

    data = wait_for(
        "the claim made from the template, bound",
        lambda: (
            (found := claim(cluster, namespace, "data-keep-redis-0"))
            and found["status"].get("phase") == "Bound"
            and found
        ),
    )
    assert data["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert data["metadata"]["labels"]["app.kubernetes.io/instance"] == "keep"
    volume = data["spec"]["volumeName"]
    first = wait_for("the Redis pod", lambda: redis_pod(cluster, namespace, "keep"))
    assert claim_of(first) == "data-keep-redis-0"

    # The pod goes (a crash, an eviction): the StatefulSet brings it back on the same claim.
    cluster.kubectl("delete", "-n", namespace, "pod", "keep-redis-0", "--wait=false")
    second = wait_for(
        "a new Redis pod",
        lambda: (
            (pod := redis_pod(cluster, namespace, "keep"))
            and pod["metadata"]["uid"] != first["metadata"]["uid"]
            and pod
        ),
    )
    assert claim_of(second) == "data-keep-redis-0"
    kept = claim(cluster, namespace, "data-keep-redis-0")
    assert kept is not None
    assert (kept["metadata"]["uid"], kept["spec"]["volumeName"]) == (
        data["metadata"]["uid"],
        volume,
    )

    # A new memory limit is a new pod template: the StatefulSet rolls its pod, the claim stays.
    revision = rolled_out(cluster, namespace, "keep")
    assert revision is not None
    patch(cluster, namespace, "keep", {"redis": {"managed": {"memoryLimit": "512Mi"}}})
    rolled = wait_for(
        "the rollout of the new memory limit",
        lambda: (
            (found := rolled_out(cluster, namespace, "keep"))
            and found["status"]["updateRevision"] != revision["status"]["updateRevision"]
            and found
        ),
        timeout=180,
    )
    container = rolled["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["memory"] == "512Mi"
    third = wait_for(
        "the Redis pod of the new template",
        lambda: (
            (pod := redis_pod(cluster, namespace, "keep"))
            and pod["metadata"]["uid"] not in {first["metadata"]["uid"], second["metadata"]["uid"]}
            and pod
        ),
    )
    assert third["spec"]["containers"][0]["resources"]["limits"]["memory"] == "512Mi"
    assert claim_of(third) == "data-keep-redis-0"
    kept = claim(cluster, namespace, "data-keep-redis-0")
    assert kept is not None
    assert (kept["metadata"]["uid"], kept["spec"]["volumeName"]) == (
        data["metadata"]["uid"],
        volume,
    )
    wait_ready(cluster, namespace, "keep")


def test_a_claim_change_is_reported_not_retried(
    cluster: TestCluster, namespace: str, operator: OperatorProcess
) -> None:
    """volumeClaimTemplates are immutable: the operator keeps the claim in place, applies
    the rest, and says so in Degraded, instead of an apply the API server refuses forever."""
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=manifest("grow", replicas=1, **REDIS)
    )
    wait_ready(cluster, namespace, "grow")
    log_before = len(operator.log_tail(chars=10**9))

    managed = {"memoryLimit": "300Mi", "persistence": {"size": "5Gi"}}
    patch(cluster, namespace, "grow", {"redis": {"managed": managed}})
    body = wait_condition(cluster, namespace, "grow", "Degraded", "True")
    degraded = condition(body, "Degraded")
    assert degraded["reason"] == "RedisClaimImmutable"
    assert "5Gi" in degraded["message"]
    assert "1Gi" in degraded["message"]
    redis = wait_for(
        "the new memory limit, applied beside the kept claim",
        lambda: (
            (found := cluster.get_json("-n", namespace, "statefulset", "grow-redis"))
            and found["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
            == "300Mi"
            and found
        ),
    )
    (template,) = redis["spec"]["volumeClaimTemplates"]
    assert template["spec"]["resources"]["requests"]["storage"] == "1Gi"
    wait_ready(cluster, namespace, "grow")
    since = operator.log_tail(chars=10**9)[log_before:]
    assert "immutable" not in since, since

    # The way docs/state.md gives to a bigger volume: expand the claim, then delete the
    # StatefulSet alone; the operator makes it again with the new template, which adopts
    # the running pod and the claim.
    pod = wait_for("the Redis pod", lambda: redis_pod(cluster, namespace, "grow"))
    data = claim(cluster, namespace, "data-grow-redis-0")
    assert data is not None
    bigger = json.dumps({"spec": {"resources": {"requests": {"storage": "5Gi"}}}})
    cluster.kubectl("patch", "-n", namespace, "pvc", "data-grow-redis-0", "-p", bigger)
    cluster.kubectl(
        "delete", "-n", namespace, "statefulset", "grow-redis", "--cascade=orphan", "--wait"
    )
    remade = wait_for(
        "the StatefulSet made again",
        lambda: (
            (
                found := cluster.kubectl(
                    "get", "-n", namespace, "statefulset", "grow-redis", "-o", "json", check=False
                )
            ).returncode
            == 0
            and (made := json.loads(found.stdout))["metadata"]["uid"] != redis["metadata"]["uid"]
            and made
        ),
    )
    (template,) = remade["spec"]["volumeClaimTemplates"]
    assert template["spec"]["resources"]["requests"]["storage"] == "5Gi"
    body = wait_condition(cluster, namespace, "grow", "Degraded", "False")
    assert condition(body, "Degraded")["reason"] == "AsExpected"
    adopted = wait_for("the pod adopted", lambda: redis_pod(cluster, namespace, "grow"))
    assert adopted["metadata"]["uid"] == pod["metadata"]["uid"]
    assert adopted["metadata"]["ownerReferences"][0]["uid"] == remade["metadata"]["uid"]
    kept = claim(cluster, namespace, "data-grow-redis-0")
    assert kept is not None
    assert kept["metadata"]["uid"] == data["metadata"]["uid"]


class DeletedAfterRead(Kube):
    """The race `kubectl delete statefulset --cascade=orphan` can win: the StatefulSet goes
    after the reconcile has read it (and chosen to keep its claim template) but before the
    apply."""

    def __init__(self, cluster: TestCluster, statefulset: str) -> None:
        configuration = Configuration()
        load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(cluster.kubeconfig), client_configuration=configuration
        )
        super().__init__(configuration)
        self.cluster, self.statefulset, self.deleted = cluster, statefulset, False

    async def get(
        self, api_version: str, kind: str, name: str, namespace: str
    ) -> dict[str, Any] | None:
        found = await super().get(api_version, kind, name, namespace)
        if kind == "StatefulSet" and name == self.statefulset and not self.deleted:
            self.deleted = True
            await asyncio.to_thread(
                self.cluster.kubectl,
                "delete",
                "-n",
                namespace,
                "statefulset",
                name,
                "--cascade=orphan",
                "--wait",
            )
        return found


async def test_a_statefulset_deleted_mid_reconcile_is_not_made_again_with_the_kept_claim(
    cluster: TestCluster, namespace: str, operator: OperatorProcess
) -> None:
    """A StatefulSet kept for its claim template is only ever updated: when it is deleted
    between the reconcile's read and its apply, the apply is refused (409, its uid) rather
    than making it again with the old template, and the deletion's event makes it anew with
    the spec's."""
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=manifest("race", replicas=1, **REDIS)
    )
    wait_ready(cluster, namespace, "race")
    patch(cluster, namespace, "race", {"redis": {"managed": {"persistence": {"size": "3Gi"}}}})
    wait_condition(cluster, namespace, "race", "Degraded", "True")
    old = cluster.get_json("-n", namespace, "statefulset", "race-redis")

    client = DeletedAfterRead(cluster, "race-redis")
    try:
        await reconcile(client, chat_service(cluster, namespace, "race"))
    finally:
        client.close()
    assert client.deleted

    def remade() -> dict[str, Any] | None:
        found = cluster.kubectl(
            "get", "-n", namespace, "statefulset", "race-redis", "-o", "json", check=False
        )
        made = json.loads(found.stdout) if found.returncode == 0 else None
        return made if made and made["metadata"]["uid"] != old["metadata"]["uid"] else None

    (template,) = wait_for("the StatefulSet made again", remade)["spec"]["volumeClaimTemplates"]
    assert template["spec"]["resources"]["requests"]["storage"] == "3Gi"


def test_moving_to_an_external_redis_leaves_the_claim_and_says_so(
    cluster: TestCluster, namespace: str
) -> None:
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=manifest("move", replicas=1, **REDIS)
    )
    wait_ready(cluster, namespace, "move")
    data = wait_for("the claim", lambda: claim(cluster, namespace, "data-move-redis-0"))

    external = {"managed": None, "external": {"url": "redis://cache:6379/0"}}
    patch(cluster, namespace, "move", {"redis": external})
    wait_for(
        "the managed Redis and its budget to be pruned",
        lambda: all(
            cluster.kubectl("get", "-n", namespace, kind, "move-redis", check=False).returncode
            for kind in ("statefulset", "pdb")
        ),
    )
    wait_for(
        "the Redis pod to go",
        lambda: (
            cluster.kubectl("get", "-n", namespace, "pod", "move-redis-0", check=False).returncode
        ),
    )
    kept = claim(cluster, namespace, "data-move-redis-0")
    assert kept is not None
    assert kept["metadata"]["uid"] == data["metadata"]["uid"]
    assert not kept["metadata"].get("deletionTimestamp")

    def retained() -> list[dict[str, Any]]:
        events = cluster.get_json(
            "-n", namespace, "events", "--field-selector", "involvedObject.name=move"
        )["items"]
        return [e for e in events if e["reason"] == "RedisClaimRetained"]

    (event,) = wait_for("the Event naming the claim", retained)
    assert event["involvedObject"]["kind"] == "ChatService"
    assert "PersistentVolumeClaim data-move-redis-0" in event["message"]
    wait_ready(cluster, namespace, "move")
    assert condition(chat_service(cluster, namespace, "move"), "RedisReady")["reason"] == "External"


def test_persistence_switched_off_is_an_empty_dir_and_a_warning(
    cluster: TestCluster, namespace: str
) -> None:
    spec = {"redis": {"managed": {"persistence": {"enabled": False}}}}
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=manifest("scratch", replicas=1, **spec)
    )
    wait_ready(cluster, namespace, "scratch")
    redis = condition(chat_service(cluster, namespace, "scratch"), "RedisReady")
    assert (redis["status"], redis["reason"]) == ("True", "PersistenceDisabled")
    statefulset = cluster.get_json("-n", namespace, "statefulset", "scratch-redis")
    assert "volumeClaimTemplates" not in statefulset["spec"]
    assert {"name": "data", "emptyDir": {}} in statefulset["spec"]["template"]["spec"]["volumes"]
    assert not cluster.get_json("-n", namespace, "pvc")["items"]


def test_the_claim_stays_when_the_chat_service_is_deleted(
    cluster: TestCluster, namespace: str
) -> None:
    """Garbage collection takes the StatefulSet, not the data: a ChatService of the same
    name made again gets the same claim back."""
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=manifest("again", replicas=1, **REDIS)
    )
    wait_ready(cluster, namespace, "again")
    data = wait_for("the claim", lambda: claim(cluster, namespace, "data-again-redis-0"))
    cluster.kubectl("delete", "-n", namespace, "chat", "again", "--timeout=60s")
    wait_for(
        "garbage collection of the StatefulSet",
        lambda: (
            cluster.kubectl(
                "get", "-n", namespace, "statefulset", "again-redis", check=False
            ).returncode
        ),
    )
    kept = claim(cluster, namespace, "data-again-redis-0")
    assert kept is not None
    assert kept["metadata"]["uid"] == data["metadata"]["uid"]

    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=manifest("again", replicas=1, **REDIS)
    )
    wait_ready(cluster, namespace, "again")
    pod = wait_for("the Redis pod", lambda: redis_pod(cluster, namespace, "again"))
    assert claim_of(pod) == "data-again-redis-0"
    kept = claim(cluster, namespace, "data-again-redis-0")
    assert kept is not None
    assert kept["metadata"]["uid"] == data["metadata"]["uid"]
