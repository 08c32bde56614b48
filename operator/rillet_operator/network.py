"""Pure builders of a ChatService's NetworkPolicies: who may reach its pods.

Two policies, both Ingress only (the pods' own calls to model providers and indexes are
left alone): the chat pods take the API port from `spec.network.allowFrom` (default: the
ChatService's namespace) and the metrics port from the monitoring namespace only; the
managed Redis takes connections from that ChatService's chat pods and nothing else.
A pod matching none of a policy's rules gets nothing, so an empty rule list never opens
a port to everyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rillet_operator.meta import ChatService, metadata, selector
from rillet_operator.runtime_settings import REDIS_PORT, redis_service_name, runtime_settings

DEFAULT_MONITORING_NAMESPACE = "monitoring"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace


@dataclass(frozen=True)
class NetworkIsolation:
    """The cluster's side of the policies, from the operator's settings."""

    monitoring_namespace: str | None = DEFAULT_MONITORING_NAMESPACE


def _tcp(port: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def api_peers(cs: ChatService) -> list[dict[str, Any]]:
    """`spec.network.allowFrom` as NetworkPolicy peers; unset: every pod of the namespace."""
    allow_from = cs.spec.network.allow_from
    if not allow_from:
        return [{"podSelector": {}}]
    return [peer.model_dump(by_alias=True, exclude_none=True) for peer in allow_from]


def chat_network_policy(cs: ChatService, isolation: NetworkIsolation) -> dict[str, Any]:
    server = runtime_settings(cs.spec).server
    rules: list[dict[str, Any]] = [{"from": api_peers(cs), "ports": [_tcp(server.port)]}]
    if isolation.monitoring_namespace and server.metrics_port is not None:
        monitoring = {"matchLabels": {NAMESPACE_NAME_LABEL: isolation.monitoring_namespace}}
        rules.append(
            {"from": [{"namespaceSelector": monitoring}], "ports": [_tcp(server.metrics_port)]}
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(cs, cs.name, "chat"),
        "spec": {
            "podSelector": {"matchLabels": selector(cs, "chat")},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }


def redis_network_policy(cs: ChatService) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(cs, redis_service_name(cs.name), "redis"),
        "spec": {
            "podSelector": {"matchLabels": selector(cs, "redis")},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": selector(cs, "chat")}}],
                    "ports": [_tcp(REDIS_PORT)],
                }
            ],
        },
    }


def network_policies(cs: ChatService, isolation: NetworkIsolation) -> list[dict[str, Any]]:
    policies = [chat_network_policy(cs, isolation)]
    if cs.spec.redis and cs.spec.redis.managed:
        policies.append(redis_network_policy(cs))
    return policies
