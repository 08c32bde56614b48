"""The operator end to end, as a user runs it: the real kubectl against a real
kube-apiserver, etcd, controller-manager, scheduler and KWOK nodes, and `rillet operator`
as a real process. Pods never run here (KWOK marks them Ready), so these tests are about
what the operator writes and how the cluster's own controllers take it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from rillet_runtime.version import describe
from testcluster import TestCluster
from testcluster.operator import OperatorProcess
from tests.e2e.kube import (
    EXAMPLES,
    GROUP,
    apply_example,
    chat_service,
    condition,
    manifest,
    wait_for,
    wait_ready,
)


def test_demo_example_creates_children_and_becomes_ready(
    cluster: TestCluster, namespace: str
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "demo.yaml"))
    wait_ready(cluster, namespace, "demo")

    deployment = cluster.get_json("-n", namespace, "deployment", "demo")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["rillet", "serve"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ChatService", "demo", True)
    fields = cluster.get_json("-n", namespace, "deployment", "demo", "--show-managed-fields")
    managers = {entry["manager"] for entry in fields["metadata"]["managedFields"]}
    assert "rillet-operator" in managers

    settings = cluster.get_json("-n", namespace, "configmap", "demo-settings")
    assert "settings.yaml" in settings["data"]
    assert cluster.get_json("-n", namespace, "service", "demo")["spec"]["ports"][0]["port"] == 80
    pdb = cluster.get_json("-n", namespace, "poddisruptionbudget", "demo")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    hpa = cluster.get_json("-n", namespace, "horizontalpodautoscaler", "demo")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)

    # The cluster's own controllers take it from there: the HPA raises the Deployment to
    # its minimum, the scheduler binds the pods to KWOK nodes, KWOK marks them Ready.
    wait_for(
        "the HPA's minimum of 2 available pods",
        lambda: (
            cluster.get_json("-n", namespace, "deployment", "demo")["status"].get(
                "availableReplicas"
            )
            == 2
        ),
    )
    body = wait_for(
        "status with 2 ready replicas",
        lambda: (
            (cs := chat_service(cluster, namespace, "demo"))["status"].get("readyReplicas") == 2
            and cs
        ),
    )
    status = body["status"]
    assert status["observedGeneration"] == body["metadata"]["generation"]
    assert status["endpoint"] == f"http://demo.{namespace}.svc:80"
    assert condition(body, "Degraded")["status"] == "False"

    table = cluster.kubectl("get", "chat", "-n", namespace).stdout
    assert table.split("\n")[0].split()[:3] == ["NAME", "READY", "REPLICAS"]
    assert table.split("\n")[1].split()[:2] == ["demo", "True"]
    events = cluster.get_json(
        "-n", namespace, "events", "--field-selector", "involvedObject.name=demo"
    )
    reasons = {(e["involvedObject"]["kind"], e["reason"]) for e in events["items"]}
    assert ("ChatService", "Created") in reasons


def test_the_operator_logs_what_runs_at_startup(operator: OperatorProcess) -> None:
    assert f"starting {describe(operator.env)}" in operator.log_tail(chars=10**9)


def test_the_operator_reports_its_reconciles_as_metrics(
    cluster: TestCluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("counted", replicas=1))
    wait_ready(cluster, namespace, "counted")
    metrics = urllib.request.urlopen(operator.metrics_url, timeout=5).read().decode()
    pattern = r'^rillet_operator_reconciles_total\{result="changed"\} (\S+)'
    changed = re.search(pattern, metrics, re.M)
    assert changed is not None
    assert float(changed[1]) >= 1
    assert "rillet_operator_reconcile_duration_seconds_bucket" in metrics


def test_managed_redis_example(cluster: TestCluster, namespace: str) -> None:
    cluster.kubectl(
        "create", "secret", "generic", "openai", "-n", namespace, "--from-literal=api-key=sk-test"
    )
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "openai-managed-redis.yaml"))
    wait_ready(cluster, namespace, "support-chat")

    body = chat_service(cluster, namespace, "support-chat")
    assert condition(body, "RedisReady")["status"] == "True"
    redis = cluster.get_json("-n", namespace, "statefulset", "support-chat-redis")
    assert "--maxmemory-policy" in redis["spec"]["template"]["spec"]["containers"][0]["args"]
    secret = cluster.get_json("-n", namespace, "secret", "support-chat-redis")
    assert secret["data"]["password"]

    settings = cluster.get_json("-n", namespace, "configmap", "support-chat-settings")
    assert "sk-test" not in json.dumps(settings)  # secrets reach pods as env, never as config
    env = cluster.get_json("-n", namespace, "deployment", "support-chat")["spec"]["template"][
        "spec"
    ]["containers"][0]["env"]
    key_ref = next(e for e in env if e["name"] == "RILLET_MODEL__API_KEY")
    assert key_ref["valueFrom"]["secretKeyRef"] == {"name": "openai", "key": "api-key"}

    # Switching to an external Redis removes the managed one the operator created.
    patch = {"spec": {"redis": {"managed": None, "external": {"url": "redis://cache:6379/0"}}}}
    cluster.kubectl(
        "patch", "-n", namespace, "chat", "support-chat", "--type=merge", "-p", json.dumps(patch)
    )
    wait_for(
        "the managed Redis to be pruned",
        lambda: (
            cluster.kubectl(
                "get", "-n", namespace, "statefulset", "support-chat-redis", check=False
            ).returncode
            != 0
        ),
    )
    wait_ready(cluster, namespace, "support-chat")


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_is_accepted_and_served(
    cluster: TestCluster, namespace: str, example: Path
) -> None:
    """Each documented example, as written (its Secrets made as its comments say)."""
    document = yaml.safe_load(example.read_text())
    target, name = apply_example(cluster, namespace, example)
    wait_ready(cluster, target, name)
    body = chat_service(cluster, target, name)
    assert condition(body, "Degraded")["status"] == "False", body["status"]
    if "replicas" in document["spec"]:  # a fixed count: no HPA
        deployment = cluster.get_json("-n", target, "deployment", name)
        assert deployment["spec"]["replicas"] == document["spec"]["replicas"]
        assert cluster.kubectl("get", "-n", target, "hpa", name, check=False).returncode != 0
    managed = bool(document["spec"].get("redis", {}).get("managed"))
    redis = cluster.kubectl("get", "-n", target, "statefulset", f"{name}-redis", check=False)
    assert (redis.returncode == 0) == managed
    cluster.kubectl("delete", "-n", target, "chat", name, "--wait=false")


def test_spec_change_rolls_the_pods(cluster: TestCluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("roll", replicas=2))
    wait_ready(cluster, namespace, "roll")
    before = cluster.get_json("-n", namespace, "pods", "-l", "app.kubernetes.io/instance=roll")
    old_pods = {p["metadata"]["name"] for p in before["items"]}
    old_hash = cluster.get_json("-n", namespace, "deployment", "roll")["spec"]["template"][
        "metadata"
    ]["annotations"]["rillet.dev/settings-hash"]

    patch = {"spec": {"streaming": {"coalesceMaxChars": 8}}}
    cluster.kubectl(
        "patch", "-n", namespace, "chat", "roll", "--type=merge", "-p", json.dumps(patch)
    )

    def rolled() -> bool:
        body = chat_service(cluster, namespace, "roll")
        ready = condition(body, "Ready")
        return (
            body["status"].get("observedGeneration") == body["metadata"]["generation"]
            and ready.get("status") == "True"
        )

    wait_for("the rollout of the new settings", rolled, timeout=180)
    deployment = cluster.get_json("-n", namespace, "deployment", "roll")
    new_hash = deployment["spec"]["template"]["metadata"]["annotations"]["rillet.dev/settings-hash"]
    assert new_hash != old_hash
    settings = cluster.get_json("-n", namespace, "configmap", "roll-settings")
    assert "8" in settings["data"]["settings.yaml"]
    wait_for(
        "every old pod to be replaced",
        lambda: (
            not old_pods
            & {
                p["metadata"]["name"]
                for p in cluster.get_json(
                    "-n", namespace, "pods", "-l", "app.kubernetes.io/instance=roll"
                )["items"]
            }
        ),
    )


def test_invalid_specs_are_rejected_with_the_cel_message(
    cluster: TestCluster, namespace: str
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
            "minReplicas must not exceed maxReplicas",
        ),
        (
            {"redis": {"managed": {}, "external": {"url": "redis://r:6379"}}},
            "set exactly one of redis.managed and redis.external",
        ),
        ({"model": {"provider": "anthropic", "name": "claude"}}, "apiKeySecretRef is required"),
        ({"server": {"workersPerPod": 0}}, "spec.server.workersPerPod"),
        (
            {"vectorIndex": {"provider": "qdrant", "hybrid": True, "qdrant": QDRANT}},
            "hybrid search needs the embedded index",
        ),
        (
            {"embeddings": {"provider": "openai", "baseUrl": "http://tei:80/v1"}},
            "the image's built-in index holds offline embeddings",
        ),
        (
            {"redis": {"managed": {"replicas": 3}}},
            "give redis.external as a Sentinel set (redis.external.sentinel)",
        ),
        ({"redis": {"managed": {"persistence": {"size": "1GB"}}}}, "persistence.size"),
    ]
    for spec, message in cases:
        done = cluster.kubectl(
            "apply", "-n", namespace, "-f", "-", input=manifest("bad", **spec), check=False
        )
        assert done.returncode != 0, spec
        assert message in done.stderr, done.stderr
    assert not cluster.get_json("-n", namespace, "chatservices")["items"]


def test_deleting_collects_every_child(cluster: TestCluster, namespace: str) -> None:
    cluster.kubectl(
        "create", "secret", "generic", "openai", "-n", namespace, "--from-literal=api-key=k"
    )
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "openai-managed-redis.yaml"))
    wait_ready(cluster, namespace, "support-chat")
    kinds = "configmaps,services,secrets,deployments,statefulsets,pdb,hpa,networkpolicies"
    selector = "app.kubernetes.io/instance=support-chat"
    # 2 Secrets (the Redis password, the first API key), 2 Services, 2 NetworkPolicies,
    # 2 PodDisruptionBudgets (the chat pods', the Redis pod's)
    assert len(cluster.get_json("-n", namespace, kinds, "-l", selector)["items"]) == 12

    cluster.kubectl("delete", "-n", namespace, "chat", "support-chat", "--timeout=60s")
    wait_for(
        "garbage collection of the children",
        lambda: not cluster.get_json("-n", namespace, kinds, "-l", selector)["items"],
    )
    wait_for(
        "the pods to go",
        lambda: not cluster.get_json("-n", namespace, "pods", "-l", selector)["items"],
    )
    # The user's Secret was never the operator's.
    cluster.kubectl("get", "-n", namespace, "secret", "openai")


def test_deleting_works_while_the_operator_is_down(
    cluster: TestCluster, namespace: str, operator: OperatorProcess
) -> None:
    """No finalizer: an uninstalled or crashed operator never blocks a deletion."""
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("orphan", replicas=1))
    wait_ready(cluster, namespace, "orphan")
    assert not chat_service(cluster, namespace, "orphan")["metadata"].get("finalizers")
    operator.stop()
    cluster.kubectl("delete", "-n", namespace, "chat", "orphan", "--timeout=30s")
    wait_for(
        "garbage collection of the Deployment",
        lambda: (
            cluster.kubectl("get", "-n", namespace, "deployment", "orphan", check=False).returncode
        ),
    )


def test_deleting_the_namespace_is_not_fought(
    cluster: TestCluster, operator: OperatorProcess
) -> None:
    """The operator stands back while the namespace controller empties a namespace."""
    cluster.kubectl("create", "namespace", "doomed")
    cluster.kubectl("apply", "-n", "doomed", "-f", str(EXAMPLES / "demo.yaml"))
    wait_ready(cluster, "doomed", "demo")
    log_before = len(operator.log_tail(chars=10**9))
    cluster.kubectl("delete", "namespace", "doomed", "--timeout=120s")
    since = operator.log_tail(chars=10**9)[log_before:]
    assert "failed" not in since, since
    assert "Traceback" not in since, since


def test_drift_is_corrected(cluster: TestCluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("drift", replicas=1))
    wait_ready(cluster, namespace, "drift")
    service_uid = cluster.get_json("-n", namespace, "service", "drift")["metadata"]["uid"]

    cluster.kubectl("delete", "-n", namespace, "service", "drift")
    wait_for(
        "the Service to be recreated",
        lambda: (
            (
                found := cluster.kubectl(
                    "get", "-n", namespace, "service", "drift", "-o", "json", check=False
                )
            ).returncode
            == 0
            and json.loads(found.stdout)["metadata"]["uid"] != service_uid
        ),
    )

    cluster.kubectl(
        "patch",
        "-n",
        namespace,
        "deployment",
        "drift",
        "--type=json",
        "-p",
        json.dumps(
            [
                {
                    "op": "replace",
                    "path": "/spec/template/spec/containers/0/command",
                    "value": ["sleep", "1d"],
                }
            ]
        ),
    )
    wait_for(
        "the Deployment's command to be restored",
        lambda: (
            cluster.get_json("-n", namespace, "deployment", "drift")["spec"]["template"]["spec"][
                "containers"
            ][0]["command"]
            == ["rillet", "serve"]
        ),
    )
    events = cluster.get_json(
        "-n", namespace, "events", "--field-selector", "involvedObject.name=drift"
    )
    messages = " ".join(
        e["message"] for e in events["items"] if e["reason"] in {"Created", "Updated"}
    )
    assert "Service drift" in messages
    assert "Deployment drift" in messages


def test_operator_killed_mid_reconcile_converges(
    cluster: TestCluster, namespace: str, operator: OperatorProcess
) -> None:
    names = [f"restart-{i}" for i in range(5)]
    documents = [json.loads(manifest(name, replicas=1)) for name in names]
    cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}),
    )
    # Kill it as soon as it has started on them: some children exist, others not yet.
    wait_for(
        "the first child",
        lambda: cluster.get_json(
            "-n", namespace, "configmaps", "-l", "app.kubernetes.io/managed-by=rillet-operator"
        )["items"],
        timeout=60,
    )
    operator.stop(signal.SIGKILL)
    operator.start()
    for name in names:
        wait_ready(cluster, namespace, name)
    for name in names:
        assert cluster.kubectl("get", "-n", namespace, "deployment", name).returncode == 0


@pytest.mark.timeout(900)
def test_fifty_chat_services_applied_at_once_all_become_ready(
    cluster: TestCluster, namespace: str
) -> None:
    documents = [json.loads(manifest(f"many-{i}", replicas=1)) for i in range(50)]
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=listing)
    cluster.kubectl(
        "wait",
        "-n",
        namespace,
        "chatservice",
        "--all",
        "--for=condition=Ready",
        "--timeout=600s",
        timeout=660,
    )
    services = cluster.get_json("-n", namespace, "chatservices")["items"]
    assert len(services) == 50
    assert all(condition(cs, "Ready")["status"] == "True" for cs in services)


QDRANT = {"url": "http://qdrant.search:6333", "collection": "docs"}


def test_a_remote_index_gets_its_settings_and_its_key_from_a_secret(
    cluster: TestCluster, namespace: str
) -> None:
    cluster.kubectl(
        "create", "secret", "generic", "-n", namespace, "qdrant", "--from-literal=key=q1"
    )
    qdrant = {**QDRANT, "apiKeySecretRef": {"name": "qdrant", "key": "key"}}
    spec = {"replicas": 1, "vectorIndex": {"provider": "qdrant", "qdrant": qdrant, "k": 5}}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("qdrant", **spec))
    wait_ready(cluster, namespace, "qdrant")
    body = chat_service(cluster, namespace, "qdrant")
    assert condition(body, "Degraded")["status"] == "False"
    settings_file = cluster.get_json("-n", namespace, "configmap", "qdrant-settings")["data"]
    settings = yaml.safe_load(settings_file["settings.yaml"])
    assert settings["retrieval"]["qdrant"] == QDRANT
    assert "q1" not in settings_file["settings.yaml"]
    container = cluster.get_json("-n", namespace, "deployment", "qdrant")["spec"]["template"][
        "spec"
    ]["containers"][0]
    assert {
        "name": "RILLET_RETRIEVAL__QDRANT__API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "qdrant", "key": "key"}},
    } in container["env"]


def test_an_index_on_a_claim_is_mounted_read_only(cluster: TestCluster, namespace: str) -> None:
    """A volume built by `rillet ingest` (a Job, docs/retrieval.md), bound here statically."""
    volume = f"kb-index-{namespace}"
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": volume},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadOnlyMany"],
                    "storageClassName": "",
                    "hostPath": {"path": "/var/lib/kb-index"},
                    "claimRef": {"namespace": namespace, "name": "kb-index"},
                },
            }
        ),
    )
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "kb-index"},
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "",
            "volumeName": volume,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(claim))
    embedded = {"claimName": "kb-index", "subPath": "v3"}
    spec = {
        "replicas": 1,
        "vectorIndex": {"provider": "embedded", "embedded": embedded},
        "embeddings": {"provider": "openai", "baseUrl": "http://tei.models:80/v1"},
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("kb", **spec))
    wait_ready(cluster, namespace, "kb")  # scheduled: the claim bound, the pod running
    pod = cluster.get_json("-n", namespace, "deployment", "kb")["spec"]["template"]["spec"]
    assert {
        "name": "index",
        "persistentVolumeClaim": {"claimName": "kb-index", "readOnly": True},
    } in pod["volumes"]
    mount = {"name": "index", "mountPath": "/var/lib/rillet/index", "readOnly": True}
    assert {**mount, "subPath": "v3"} in pod["containers"][0]["volumeMounts"]
    settings_file = cluster.get_json("-n", namespace, "configmap", "kb-settings")["data"]
    settings = yaml.safe_load(settings_file["settings.yaml"])
    assert settings["retrieval"]["embedded"] == {"path": "/var/lib/rillet/index"}
    assert settings["embeddings"] == {"provider": "openai", "base_url": "http://tei.models:80/v1"}
    cluster.kubectl("delete", "-n", namespace, "chat", "kb", "--wait=false")
    cluster.kubectl("delete", "pv", volume, "--wait=false")


def test_kubectl_scale_fixes_the_count_and_removes_the_hpa(
    cluster: TestCluster, namespace: str
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "demo.yaml"))
    wait_ready(cluster, namespace, "demo")
    cluster.kubectl("get", "-n", namespace, "hpa", "demo")

    cluster.kubectl("scale", "-n", namespace, "chat/demo", "--replicas=3")
    wait_for(
        "3 available pods",
        lambda: (
            cluster.get_json("-n", namespace, "deployment", "demo")["status"].get(
                "availableReplicas"
            )
            == 3
        ),
    )
    wait_for(
        "the HPA to be removed",
        lambda: cluster.kubectl("get", "-n", namespace, "hpa", "demo", check=False).returncode,
    )
    path = f"/apis/{GROUP}/v1alpha1/namespaces/{namespace}/chatservices/demo/scale"
    scale = json.loads(cluster.kubectl("get", "--raw", path).stdout)
    assert scale["spec"]["replicas"] == 3


def test_render_prints_what_the_operator_applies(cluster: TestCluster, namespace: str) -> None:
    """`rillet render` output, diffed against the live objects, shows no difference in spec."""
    example = EXAMPLES / "demo.yaml"
    cluster.kubectl("apply", "-n", namespace, "-f", str(example))
    wait_ready(cluster, namespace, "demo")
    rendered = subprocess.run(
        [sys.executable, "-m", "rillet_runtime", "render", "-f", str(example)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    uid = chat_service(cluster, namespace, "demo")["metadata"]["uid"]
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    for document in documents:
        document["metadata"]["namespace"] = namespace
        document["metadata"]["ownerReferences"][0]["uid"] = uid
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
    diff = cluster.kubectl(
        "diff",
        "--server-side",
        "--field-manager=rillet-operator",
        "--force-conflicts",
        "-f",
        "-",
        input=listing,
        check=False,
    )
    assert diff.returncode == 0, diff.stdout + diff.stderr
