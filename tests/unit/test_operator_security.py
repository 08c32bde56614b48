"""The operator's security decisions, as pure functions: NetworkPolicies, the pods' auth and
limits settings, the API keys mount, the Redis password's way to redis-server, and when a
reconcile must touch nothing (a name taken by someone else's object)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from rillet_operator import builders
from rillet_operator.meta import ChatService, selector
from rillet_operator.network import NetworkIsolation, network_policies
from rillet_operator.runtime_settings import (
    API_KEYS_DIR,
    FIRST_KEY_PRINCIPAL,
    api_keys_secret,
    runtime_settings,
    settings_file,
)
from rillet_operator.settings import OperatorSettings
from rillet_operator.spec import ChatServiceSpec
from rillet_operator.status import Observed, compute_status, held_back, name_conflicts
from rillet_runtime.settings import CorsSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.yaml"))
MANAGED_REDIS = {"redis": {"managed": {}}}
JWT = {"issuer": "https://issuer", "audience": "chat", "jwksUrl": "https://issuer/jwks"}


def chat_service(spec: dict[str, Any] | None = None, name: str = "chat") -> ChatService:
    body = {"metadata": {"name": name, "namespace": "team", "uid": "uid-1"}, "spec": spec or {}}
    return ChatService.from_body(body)


def example(path: Path) -> ChatService:
    document = yaml.safe_load(path.read_text())
    return chat_service(document["spec"], document["metadata"]["name"])


def policy(policies: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(p["spec"] for p in policies if p["metadata"]["name"] == name)


# -- NetworkPolicies ---------------------------------------------------------------------------


def test_the_chat_pods_take_the_api_from_their_namespace_and_metrics_from_monitoring() -> None:
    cs = chat_service()
    policies = network_policies(cs, NetworkIsolation(monitoring_namespace="prom"))
    assert [p["metadata"]["name"] for p in policies] == ["chat"]  # no managed Redis
    spec = policy(policies, "chat")
    assert spec["podSelector"] == {"matchLabels": selector(cs, "chat")}
    assert spec["policyTypes"] == ["Ingress"]
    server = runtime_settings(cs.spec).server
    api, metrics = spec["ingress"]
    assert api == {"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": 8000}]}
    assert api["ports"][0]["port"] == server.port
    assert metrics == {
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prom"}}}],
        "ports": [{"protocol": "TCP", "port": server.metrics_port}],
    }


def test_allow_from_becomes_the_api_ports_peers() -> None:
    allow_from = [
        {"namespaceSelector": {"matchLabels": {"team": "web"}}},
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}},
            "podSelector": {
                "matchExpressions": [{"key": "app", "operator": "In", "values": ["envoy"]}]
            },
        },
        {"podSelector": {"matchLabels": {"role": "frontend"}}},
    ]
    cs = chat_service({"network": {"allowFrom": allow_from}})
    api = policy(network_policies(cs, NetworkIsolation()), "chat")["ingress"][0]
    assert api["from"] == allow_from


def test_without_a_monitoring_namespace_nobody_reaches_the_metrics_port() -> None:
    spec = policy(network_policies(chat_service(), NetworkIsolation(None)), "chat")
    assert len(spec["ingress"]) == 1
    assert spec["ingress"][0]["ports"][0]["port"] == 8000


def test_the_managed_redis_takes_its_own_chat_pods_only() -> None:
    cs = chat_service(MANAGED_REDIS)
    spec = policy(network_policies(cs, NetworkIsolation()), "chat-redis")
    assert spec["podSelector"] == {"matchLabels": selector(cs, "redis")}
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": selector(cs, "chat")}}],
            "ports": [{"protocol": "TCP", "port": 6379}],
        }
    ]
    assert selector(cs, "chat")["app.kubernetes.io/instance"] == "chat"  # this one's pods


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_no_rule_opens_a_port_to_everyone(path: Path) -> None:
    """An ingress rule without `from` (or with an empty one) admits every source."""
    for manifest in builders.children(example(path), "pw"):
        if manifest["kind"] == "NetworkPolicy":
            for rule in manifest["spec"]["ingress"]:
                assert rule["from"], manifest["metadata"]["name"]
                assert rule["ports"], manifest["metadata"]["name"]


def test_switched_off_there_are_no_policies() -> None:
    cs = chat_service(MANAGED_REDIS)
    kinds = {m["kind"] for m in builders.children(cs, "pw", isolation=None)}
    assert "NetworkPolicy" not in kinds
    on = [m for m in builders.children(cs, "pw") if m["kind"] == "NetworkPolicy"]
    assert [m["metadata"]["name"] for m in on] == ["chat", "chat-redis"]


def test_the_operator_settings_switch_policies_and_name_the_monitoring_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("RILLET_OPERATOR_NETWORK_POLICIES", "RILLET_OPERATOR_MONITORING_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    assert OperatorSettings().isolation() == NetworkIsolation("monitoring")
    monkeypatch.setenv("RILLET_OPERATOR_MONITORING_NAMESPACE", "")  # the chart's "" value
    assert OperatorSettings().isolation() == NetworkIsolation(None)
    monkeypatch.setenv("RILLET_OPERATOR_NETWORK_POLICIES", "false")
    assert OperatorSettings().isolation() is None


# -- auth and limits in the pods' settings -------------------------------------------------------


def pod_settings(cs: ChatService) -> Settings:
    """The settings file as the runtime reads it (secrets aside)."""
    return Settings.model_validate(settings_file(runtime_settings(cs.spec)))


def test_api_keys_by_default_from_the_first_key_secret_mounted_whole() -> None:
    cs = chat_service()
    assert cs.spec.auth.mode == "apiKeys"
    settings = pod_settings(cs)
    assert settings.auth.mode == "api_keys"
    assert settings.auth.api_keys.path == Path(API_KEYS_DIR)
    assert api_keys_secret(cs.name, cs.spec) == "chat-api-keys"
    pod = builders.deployment(cs)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == "chat-api-keys"
    assert "items" not in volume["secret"]  # every key the Secret gets, without a restart
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "api-keys"]
    assert mount == {"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": True}
    assert "subPath" not in mount  # a subPath mount is never updated by the kubelet


def test_a_named_secret_is_mounted_instead() -> None:
    cs = chat_service({"auth": {"apiKeys": {"secretName": "team-keys"}}})
    assert api_keys_secret(cs.name, cs.spec) == "team-keys"
    pod = builders.deployment(cs)["spec"]["template"]["spec"]
    assert {"name": "api-keys", "secret": {"secretName": "team-keys", "defaultMode": 0o440}} in pod[
        "volumes"
    ]


def test_the_first_key_secret_holds_one_key_for_the_default_principal() -> None:
    cs = chat_service()
    secret = builders.first_key_secret(cs, "k-123")
    assert secret["metadata"]["name"] == "chat-api-keys"
    assert secret["stringData"] == {FIRST_KEY_PRINCIPAL: "k-123"}
    owner = secret["metadata"]["ownerReferences"][0]
    assert (owner["uid"], owner["controller"]) == ("uid-1", True)
    assert "k-123" not in json.dumps(builders.children(cs, "pw"))  # created, never applied


def test_jwt_settings_reach_the_runtime_and_mount_no_keys() -> None:
    cs = chat_service({"auth": {"mode": "jwt", "jwt": {**JWT, "principalClaim": "email"}}})
    jwt = pod_settings(cs).auth.jwt
    assert jwt is not None
    assert (jwt.issuer, jwt.audience, jwt.jwks_url) == (JWT["issuer"], "chat", JWT["jwksUrl"])
    assert jwt.principal_claim == "email"
    assert jwt.algorithms == ["RS256", "ES256", "EdDSA"]
    pod = builders.deployment(cs)["spec"]["template"]["spec"]
    assert "api-keys" not in {v["name"] for v in pod["volumes"]}
    assert api_keys_secret(cs.name, cs.spec) is None


def test_trusted_header_and_none() -> None:
    gateway = {"network": {"allowFrom": [{"podSelector": {"matchLabels": {"app": "proxy"}}}]}}
    header = chat_service(
        {"auth": {"mode": "trustedHeader", "trustedHeader": {"header": "X-User"}}, **gateway}
    )
    assert pod_settings(header).auth.mode == "trusted_header"
    assert pod_settings(header).auth.trusted_header == "X-User"
    default_header = chat_service({"auth": {"mode": "trustedHeader"}, **gateway})
    assert pod_settings(default_header).auth.trusted_header == "X-Auth-Request-User"
    # The pods listen on 0.0.0.0, where the runtime refuses `none` unless it is said twice.
    open_auth = pod_settings(chat_service({"auth": {"mode": "none"}})).auth
    assert (open_auth.mode, open_auth.allow_unauthenticated) == ("none", True)


def test_limits_reach_the_runtime_only_when_set() -> None:
    assert "limits" not in settings_file(runtime_settings(ChatServiceSpec()))
    cs = chat_service({"limits": {"concurrentStreams": 3, "requestsPerMinute": 60}})
    limits = pod_settings(cs).limits
    assert (limits.concurrent_streams, limits.requests_per_minute) == (3, 60)
    assert limits.tokens_per_minute is None


def test_cors_reaches_the_runtime_only_when_origins_are_listed() -> None:
    assert "cors" not in settings_file(runtime_settings(ChatServiceSpec())).get("server", {})
    origins = ["https://chat.example.com", "http://localhost:5173"]
    cors = pod_settings(chat_service({"api": {"cors": {"allowOrigins": origins}}})).server.cors
    assert cors.allow_origins == origins
    assert cors.allow_headers == CorsSettings().allow_headers  # the runtime's defaults
    assert (cors.allow_credentials, cors.max_age_seconds) == (False, 600)
    tuned = {"allowOrigins": ["*"], "allowHeaders": ["authorization"], "maxAgeSeconds": 60}
    cors = pod_settings(chat_service({"api": {"cors": tuned}})).server.cors
    assert (cors.allow_origins, cors.allow_headers, cors.max_age_seconds) == (
        ["*"],
        ["authorization"],
        60,
    )
    assert cors.expose_headers == CorsSettings().expose_headers


@pytest.mark.parametrize(
    "cors",
    [
        {"allowOrigins": ["https://chat.example.com/"]},
        {"allowOrigins": ["*"], "allowCredentials": True},
    ],
)
def test_a_bad_cors_spec_is_refused(cors: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="allow"):
        runtime_settings(chat_service({"api": {"cors": cors}}).spec)


def test_any_origin_needs_credentials_a_page_holds() -> None:
    spec = chat_service({"auth": {"mode": "none"}, "api": {"cors": {"allowOrigins": ["*"]}}}).spec
    with pytest.raises(ValueError, match=r"auth\.mode none"):
        runtime_settings(spec)


# -- the Redis password ------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_no_redis_password_on_any_command_line(path: Path) -> None:
    password = "the-generated-password"
    for manifest in builders.children(example(path), password):
        template = manifest.get("spec", {}).get("template", {}).get("spec", {})
        for container in template.get("containers", []):
            line = json.dumps(
                [
                    container.get("command", []),
                    container.get("args", []),
                    container.get("lifecycle"),
                ]
                + [container.get(p) for p in ("readinessProbe", "livenessProbe", "startupProbe")]
            )
            assert password not in line
            assert "REDIS_PASSWORD" not in line
            assert "requirepass" not in line


def test_redis_server_reads_its_password_from_the_secret_as_a_file() -> None:
    cs = chat_service(MANAGED_REDIS)
    secret = builders.redis_secret(cs, 'p"w\\')
    assert secret["stringData"]["auth.conf"] == 'requirepass "p\\"w\\\\"\n'
    pod = builders.redis_stateful_set(cs)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    include = container["args"][container["args"].index("--include") + 1]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "auth"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "auth"]
    assert include == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    assert volume["secret"]["secretName"] == "chat-redis"
    password = {"secretKeyRef": {"name": "chat-redis", "key": "password"}}
    assert {"name": "REDISCLI_AUTH", "valueFrom": password} in container["env"]


# -- no silent takeover ------------------------------------------------------------------------


def owned(kind: str, name: str, uid: str, controller: bool = True) -> dict[str, Any]:
    refs = [{"kind": "ChatService", "name": "chat", "uid": uid, "controller": controller}]
    return {"kind": kind, "metadata": {"name": name, "ownerReferences": refs}}


def test_objects_the_chat_service_does_not_control_are_conflicts() -> None:
    cs = chat_service()
    existing = [
        None,  # not there yet: created
        owned("Deployment", "chat", "uid-1"),  # ours
        {"kind": "Service", "metadata": {"name": "chat"}},  # nobody's
        owned("ConfigMap", "chat-settings", "uid-other"),  # another ChatService's
        owned("Secret", "chat-api-keys", "uid-1", controller=False),  # ours, not as controller
    ]
    assert name_conflicts(cs, existing) == (
        "Service chat",
        "ConfigMap chat-settings",
        "Secret chat-api-keys",
    )


def test_a_conflict_is_degraded_name_conflict_naming_the_object() -> None:
    cs = chat_service()
    observed = Observed(1, None, None, conflicts=("Service chat",))
    held = held_back(cs, observed)
    assert held is not None
    status = compute_status(cs, observed, {}, "t")
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (degraded["status"], degraded["reason"]) == ("True", "NameConflict")
    assert degraded["message"].startswith("Service chat already exists")
    assert (ready["status"], ready["reason"]) == ("False", "NameConflict")
    assert held_back(cs, Observed(1, None, None)) is None


def test_a_trusted_header_without_the_operators_policies_is_held_back() -> None:
    gateway = {"allowFrom": [{"podSelector": {"matchLabels": {"app": "proxy"}}}]}
    cs = chat_service({"auth": {"mode": "trustedHeader"}, "network": gateway})
    held = held_back(cs, Observed(1, None, None, network_policies=False))
    assert held is not None
    assert held["reason"] == "NetworkPoliciesDisabled"
    assert held_back(cs, Observed(1, None, None)) is None
    assert held_back(chat_service(), Observed(1, None, None, network_policies=False)) is None


def test_status_names_the_api_keys_secret_and_nothing_else() -> None:
    status = compute_status(chat_service(), Observed(1, None, None), {}, "t")
    assert status["auth"] == {"apiKeysSecret": "chat-api-keys"}
    named = chat_service({"auth": {"apiKeys": {"secretName": "team-keys"}}})
    assert compute_status(named, Observed(1, None, None), {}, "t")["auth"] == {
        "apiKeysSecret": "team-keys"
    }
    jwt = chat_service({"auth": {"mode": "jwt", "jwt": JWT}})
    assert compute_status(jwt, Observed(1, None, None), {}, "t")["auth"] is None
