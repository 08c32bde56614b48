"""The operator's security footprint on a real API server: the NetworkPolicies it writes
(KWOK enforces nothing, so the tests check the objects, and that their selectors pick
exactly the pods they are meant to), no silent takeover of an object it does not control,
the first API key Secret, no Redis password on a command line, and the CEL rules of the
auth and network fields."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml

from testcluster import TestCluster
from testcluster.operator import OperatorProcess
from tests.e2e.kube import (
    EXAMPLES,
    chat_service,
    condition,
    manifest,
    wait_condition,
    wait_for,
    wait_ready,
)

GATEWAY = [{"podSelector": {"matchLabels": {"app": "oauth2-proxy"}}}]


def exists(cluster: TestCluster, namespace: str, kind: str, name: str) -> bool:
    found = cluster.kubectl("get", "-n", namespace, kind, name, check=False)
    return found.returncode == 0


def pod_names(cluster: TestCluster, namespace: str, match_labels: dict[str, str]) -> set[str]:
    selector = ",".join(f"{key}={value}" for key, value in match_labels.items())
    pods = cluster.get_json("-n", namespace, "pods", "-l", selector)["items"]
    return {pod["metadata"]["name"] for pod in pods}


def container_port(workload: dict[str, Any], name: str) -> int:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    port: int = next(p["containerPort"] for p in container["ports"] if p["name"] == name)
    return port


def apply_managed_redis_example(cluster: TestCluster, namespace: str) -> None:
    cluster.kubectl(
        "create", "secret", "generic", "openai", "-n", namespace, "--from-literal=api-key=sk-test"
    )
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "openai-managed-redis.yaml"))
    wait_ready(cluster, namespace, "support-chat")


def patch_spec(cluster: TestCluster, namespace: str, name: str, spec: dict[str, Any]) -> None:
    patch = json.dumps({"spec": spec})
    cluster.kubectl("patch", "-n", namespace, "chat", name, "--type=merge", "-p", patch)


def reconciled(cluster: TestCluster, namespace: str, name: str) -> dict[str, Any]:
    """The ChatService once its status reflects its current generation."""

    def current() -> dict[str, Any] | None:
        body = chat_service(cluster, namespace, name)
        generation = body["metadata"]["generation"]
        return body if body.get("status", {}).get("observedGeneration") == generation else None

    found: dict[str, Any] = wait_for(f"{name} reconciled", current)
    return found


def test_a_chat_service_gets_its_network_policies(cluster: TestCluster, namespace: str) -> None:
    apply_managed_redis_example(cluster, namespace)
    selector = "app.kubernetes.io/instance=support-chat"
    policies = {
        p["metadata"]["name"]: p
        for p in cluster.get_json("-n", namespace, "networkpolicies", "-l", selector)["items"]
    }
    assert set(policies) == {"support-chat", "support-chat-redis"}
    uid = chat_service(cluster, namespace, "support-chat")["metadata"]["uid"]
    for policy in policies.values():
        (owner,) = policy["metadata"]["ownerReferences"]
        assert (owner["uid"], owner["controller"]) == (uid, True)
        assert policy["spec"]["policyTypes"] == ["Ingress"]

    deployment = cluster.get_json("-n", namespace, "deployment", "support-chat")
    redis = cluster.get_json("-n", namespace, "statefulset", "support-chat-redis")
    chat_pods = pod_names(cluster, namespace, deployment["spec"]["selector"]["matchLabels"])
    redis_pods = pod_names(cluster, namespace, redis["spec"]["selector"]["matchLabels"])
    assert chat_pods
    assert redis_pods

    # The chat pods: the API port from the namespace, the metrics port from monitoring.
    chat = policies["support-chat"]["spec"]
    assert pod_names(cluster, namespace, chat["podSelector"]["matchLabels"]) == chat_pods
    api, metrics = chat["ingress"]
    assert api["from"] == [{"podSelector": {}}]
    assert api["ports"] == [{"protocol": "TCP", "port": container_port(deployment, "http")}]
    monitoring = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert metrics["from"] == [{"namespaceSelector": monitoring}]
    assert metrics["ports"] == [{"protocol": "TCP", "port": container_port(deployment, "metrics")}]

    # The managed Redis: from this ChatService's chat pods, and nothing else.
    guarded = policies["support-chat-redis"]["spec"]
    assert pod_names(cluster, namespace, guarded["podSelector"]["matchLabels"]) == redis_pods
    (rule,) = guarded["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}  # no namespaceSelector: this namespace only
    assert pod_names(cluster, namespace, peer["podSelector"]["matchLabels"]) == chat_pods
    assert rule["ports"] == [{"protocol": "TCP", "port": container_port(redis, "redis")}]

    # allowFrom replaces the namespace default; a deleted policy comes back (a watched kind).
    allow_from = [{"namespaceSelector": {"matchLabels": {"team": "web"}}}]
    patch_spec(cluster, namespace, "support-chat", {"network": {"allowFrom": allow_from}})
    wait_for(
        "the API rule to follow allowFrom",
        lambda: (
            cluster.get_json("-n", namespace, "networkpolicy", "support-chat")["spec"]["ingress"][
                0
            ]["from"]
            == allow_from
        ),
    )
    cluster.kubectl("delete", "-n", namespace, "networkpolicy", "support-chat-redis")
    wait_for(
        "the Redis policy to be recreated",
        lambda: exists(cluster, namespace, "networkpolicy", "support-chat-redis"),
    )

    # Without a managed Redis, its policy goes with it.
    external = {"redis": {"managed": None, "external": {"url": "redis://cache:6379/0"}}}
    patch_spec(cluster, namespace, "support-chat", external)
    wait_for(
        "the Redis policy to be pruned",
        lambda: not exists(cluster, namespace, "networkpolicy", "support-chat-redis"),
    )
    assert exists(cluster, namespace, "networkpolicy", "support-chat")


def test_switched_off_the_policies_are_pruned_and_a_trusted_header_is_refused(
    cluster: TestCluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("open", replicas=1))
    wait_ready(cluster, namespace, "open")
    assert exists(cluster, namespace, "networkpolicy", "open")

    operator.stop()
    switched_off = OperatorProcess(
        cluster,
        cluster.logs / "operator-without-policies.log",
        env={**operator.env, "RILLET_OPERATOR_NETWORK_POLICIES": "false"},
    )
    switched_off.start()
    try:
        wait_for(
            "the policy to be pruned",
            lambda: not exists(cluster, namespace, "networkpolicy", "open"),
        )
        gateway = manifest(
            "gateway",
            replicas=1,
            auth={"mode": "trustedHeader"},
            network={"allowFrom": GATEWAY},
        )
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=gateway)
        body = wait_condition(cluster, namespace, "gateway", "Degraded", "True")
        assert condition(body, "Degraded")["reason"] == "NetworkPoliciesDisabled"
        assert not exists(cluster, namespace, "deployment", "gateway")
        wait_ready(cluster, namespace, "open")  # the others are served as before
    finally:
        switched_off.stop()

    operator.start()  # policies on again: both get theirs, the gateway its pods
    wait_ready(cluster, namespace, "gateway")
    assert condition(chat_service(cluster, namespace, "gateway"), "Degraded")["status"] == "False"
    policy = cluster.get_json("-n", namespace, "networkpolicy", "gateway")
    assert policy["spec"]["ingress"][0]["from"] == GATEWAY
    wait_for("the policy to be back", lambda: exists(cluster, namespace, "networkpolicy", "open"))


def test_an_unowned_service_with_the_name_is_a_name_conflict(
    cluster: TestCluster, namespace: str
) -> None:
    theirs = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "taken", "labels": {"app": "theirs"}},
        "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 5432, "targetPort": 5432}]},
    }
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(theirs))
    before = cluster.get_json("-n", namespace, "service", "taken")

    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("taken", replicas=1))
    body = wait_condition(cluster, namespace, "taken", "Degraded", "True")
    degraded = condition(body, "Degraded")
    assert degraded["reason"] == "NameConflict"
    assert "Service taken" in degraded["message"]
    assert condition(body, "Ready")["status"] == "False"
    # A later reconcile (a spec change) touches it no more than the first.
    patch_spec(cluster, namespace, "taken", {"streaming": {"coalesceMaxChars": 8}})
    assert condition(reconciled(cluster, namespace, "taken"), "Degraded")["reason"] == (
        "NameConflict"
    )

    after = cluster.get_json("-n", namespace, "service", "taken", "--show-managed-fields")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["spec"] == before["spec"]
    assert after["metadata"]["labels"] == {"app": "theirs"}
    assert "ownerReferences" not in after["metadata"]
    assert "rillet-operator" not in {m["manager"] for m in after["metadata"]["managedFields"]}
    # Nothing else was applied either.
    for kind, name in [
        ("deployment", "taken"),
        ("configmap", "taken-settings"),
        ("secret", "taken-api-keys"),
        ("networkpolicy", "taken"),
    ]:
        assert not exists(cluster, namespace, kind, name), f"{kind} {name}"

    # Once the name is free, the next reconcile creates everything.
    cluster.kubectl("delete", "-n", namespace, "service", "taken")
    patch_spec(cluster, namespace, "taken", {"streaming": {"coalesceMaxChars": 16}})
    wait_ready(cluster, namespace, "taken")
    assert condition(chat_service(cluster, namespace, "taken"), "Degraded")["status"] == "False"
    service = cluster.get_json("-n", namespace, "service", "taken")
    assert service["metadata"]["ownerReferences"][0]["kind"] == "ChatService"


def test_the_first_api_key_secret_is_created_named_in_status_and_mounted(
    cluster: TestCluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "demo.yaml"))
    wait_ready(cluster, namespace, "demo")
    body = chat_service(cluster, namespace, "demo")
    assert body["status"]["auth"] == {"apiKeysSecret": "demo-api-keys"}

    secret = cluster.get_json("-n", namespace, "secret", "demo-api-keys")
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["uid"], owner["controller"]) == (body["metadata"]["uid"], True)
    assert set(secret["data"]) == {"default"}
    key = base64.b64decode(secret["data"]["default"]).decode()
    assert len(key) >= 32

    deployment = cluster.get_json("-n", namespace, "deployment", "demo")
    pod = deployment["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == "demo-api-keys"
    assert "items" not in volume["secret"]  # the whole Secret: new keys appear as files
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "api-keys"]
    assert "subPath" not in mount  # the kubelet never updates a subPath mount
    settings_file = cluster.get_json("-n", namespace, "configmap", "demo-settings")
    settings = yaml.safe_load(settings_file["data"]["settings.yaml"])
    assert settings["auth"] == {"mode": "api_keys", "api_keys": {"path": mount["mountPath"]}}

    # The key is nowhere but in its Secret: not in the ConfigMap, status, Events or log.
    events = cluster.get_json("-n", namespace, "events")
    for where in (settings_file, body, events, deployment):
        assert key not in json.dumps(where)
    assert key not in operator.log_tail(chars=10**9)

    # Rotation is an edit of the Secret, and the operator leaves it alone: a reconcile (a
    # spec change that does not touch the pods) keeps the edit and rolls no pod.
    rotated = {"default": "rotated-key-0123456789", "alice": "alice-key-0123456789"}
    data = {name: base64.b64encode(value.encode()).decode() for name, value in rotated.items()}
    cluster.kubectl(
        "patch", "-n", namespace, "secret", "demo-api-keys", "-p", json.dumps({"data": data})
    )
    generation = deployment["metadata"]["generation"]
    patch_spec(cluster, namespace, "demo", {"autoscaling": {"maxReplicas": 5}})
    reconciled(cluster, namespace, "demo")
    wait_for(
        "the HPA to follow the spec",
        lambda: cluster.get_json("-n", namespace, "hpa", "demo")["spec"]["maxReplicas"] == 5,
    )
    secret = cluster.get_json("-n", namespace, "secret", "demo-api-keys")
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == rotated
    deployment = cluster.get_json("-n", namespace, "deployment", "demo")
    assert deployment["metadata"]["generation"] == generation

    # A Secret the spec names is mounted instead, and no first key is made.
    named = manifest("named", replicas=1, auth={"apiKeys": {"secretName": "team-keys"}})
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=named)
    body = reconciled(cluster, namespace, "named")
    assert body["status"]["auth"] == {"apiKeysSecret": "team-keys"}
    assert not exists(cluster, namespace, "secret", "named-api-keys")
    volumes = cluster.get_json("-n", namespace, "deployment", "named")["spec"]["template"]["spec"][
        "volumes"
    ]
    assert {"name": "api-keys", "secret": {"secretName": "team-keys", "defaultMode": 0o440}} in (
        volumes
    )


def test_no_redis_password_on_any_command_line(cluster: TestCluster, namespace: str) -> None:
    apply_managed_redis_example(cluster, namespace)
    secret = cluster.get_json("-n", namespace, "secret", "support-chat-redis")
    password = base64.b64decode(secret["data"]["password"]).decode()
    pods = cluster.get_json("-n", namespace, "pods")["items"]
    assert {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods} == {
        "chat",
        "redis",
    }
    for pod in pods:
        spec = pod["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            probes = [container.get(p) for p in ("readinessProbe", "livenessProbe", "startupProbe")]
            lines = json.dumps(
                [
                    container.get("command"),
                    container.get("args"),
                    container.get("lifecycle"),
                    probes,
                ]
            )
            assert password not in lines, pod["metadata"]["name"]
            assert "REDIS_PASSWORD" not in lines
            assert "requirepass" not in lines
    redis = next(
        p for p in pods if p["metadata"]["labels"]["app.kubernetes.io/component"] == "redis"
    )
    (container,) = redis["spec"]["containers"]
    assert "--include" in container["args"]  # the password: a config file from the Secret
    auth = next(e for e in container["env"] if e["name"] == "REDISCLI_AUTH")
    assert auth["valueFrom"]["secretKeyRef"] == {"name": "support-chat-redis", "key": "password"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"auth": {"mode": "jwt"}}, "auth.jwt is required for mode jwt"),
        (
            {"auth": {"mode": "jwt", "jwt": {"issuer": "https://i", "audience": "a"}}},
            "set exactly one of auth.jwt.jwksUrl and auth.jwt.publicKey",
        ),
        (
            {
                "auth": {
                    "mode": "jwt",
                    "jwt": {
                        "issuer": "https://i",
                        "audience": "a",
                        "jwksUrl": "https://i/jwks",
                        "publicKey": "-----BEGIN PUBLIC KEY-----\nAA\n-----END PUBLIC KEY-----",
                    },
                }
            },
            "set exactly one of auth.jwt.jwksUrl and auth.jwt.publicKey",
        ),
        (
            {
                "auth": {
                    "mode": "jwt",
                    "jwt": {
                        "issuer": "https://i",
                        "audience": "a",
                        "jwksUrl": "https://i/jwks",
                        "algorithms": ["HS256"],
                    },
                }
            },
            'Unsupported value: "HS256"',
        ),
        ({"auth": {"mode": "trustedHeader"}}, "auth.mode trustedHeader needs network.allowFrom"),
        ({"auth": {"mode": "basic"}}, "spec.auth.mode"),
        ({"network": {"allowFrom": [{}]}}, "set namespaceSelector, podSelector or both"),
        ({"network": {"allowFrom": []}}, "spec.network.allowFrom"),
        ({"limits": {"concurrentStreams": 0}}, "spec.limits.concurrentStreams"),
        (
            {"auth": {"mode": "none"}, "api": {"cors": {"allowOrigins": ["*"]}}},
            "api.cors.allowOrigins `*` needs auth.mode apiKeys or jwt",
        ),
        (
            {"api": {"cors": {"allowOrigins": ["*"], "allowCredentials": True}}},
            "api.cors.allowCredentials with `*`",
        ),
        ({"api": {"cors": {"allowOrigins": ["https://a.example/"]}}}, "spec.api.cors.allowOrigins"),
    ],
    ids=[
        "jwt-missing",
        "jwt-no-key",
        "jwt-two-keys",
        "jwt-hmac",
        "trusted-header-open",
        "unknown-mode",
        "empty-peer",
        "empty-allow-from",
        "zero-limit",
        "cors-any-origin-open",
        "cors-any-origin-cookies",
        "cors-origin-with-a-path",
    ],
)
def test_auth_and_network_rules_are_enforced_by_the_api_server(
    cluster: TestCluster, namespace: str, spec: dict[str, Any], message: str
) -> None:
    done = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=manifest("bad", **spec), check=False
    )
    assert done.returncode != 0, spec
    assert message in done.stderr, done.stderr
