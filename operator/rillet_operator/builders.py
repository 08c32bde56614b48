"""Pure builders: (ChatService, its metadata) -> the manifests of its children.

No Kubernetes client and no kopf here: `rillet render` and the golden-file tests call the
same functions the operator applies. Every child is named from the ChatService, labelled,
and owned by it, so deleting the ChatService garbage-collects them.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from rillet_operator.autoscaling import autoscaler
from rillet_operator.crd import to_yaml
from rillet_operator.meta import (
    SERVICE_PORT,
    ChatService,
    labels,
    metadata,
    selector,
)
from rillet_operator.network import NetworkIsolation, network_policies
from rillet_operator.runtime_settings import (
    API_KEYS_DIR,
    CLAIMED_INDEX,
    FIRST_KEY_PRINCIPAL,
    REDIS_PORT,
    SCRATCH_DIR,
    SETTINGS_DIR,
    SETTINGS_FILE,
    api_keys_secret,
    first_key_secret_name,
    redis_service_name,
    runtime_settings,
    secret_env,
    settings_file,
    termination_grace_seconds,
)
from rillet_operator.spec import GROUP, ManagedRedisSpec, RedisPersistenceSpec
from rillet_runtime.settings import SETTINGS_FILE_ENV

RUNTIME_UID = 10001
RUNTIME_CONTAINER = "rillet"
REDIS_UID = 999  # the redis image's own user
REDIS_AUTH_DIR = "/etc/redis"
REDIS_AUTH_FILE = "auth.conf"  # `requirepass`, from the Secret: never on a command line
SECRET_FILE_MODE = 0o440  # the pod's group (fsGroup) reads it, nobody else
HASH_ANNOTATION = f"{GROUP}/settings-hash"
REDIS_DATA_DIR = "/data"
REDIS_DATA_VOLUME = "data"  # also the claim template's name: claims are data-<set>-<ordinal>
# RDB snapshot points (seconds, changes): Redis's own defaults, beside the AOF.
REDIS_SNAPSHOTS = "3600 1 300 100 60 10000"
REDIS_TERMINATION_GRACE_SECONDS = 60


def _settings_yaml(cs: ChatService) -> str:
    return to_yaml(settings_file(runtime_settings(cs.spec)))


def config_map(cs: ChatService) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(cs, f"{cs.name}-settings", "chat"),
        "data": {"settings.yaml": _settings_yaml(cs)},
    }


def settings_hash(cs: ChatService) -> str:
    """Changes when the settings file or the secret references change: it rolls the pods."""
    material = _settings_yaml(cs) + json.dumps(secret_env(cs.name, cs.spec), sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:16]


_RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def _pod_security(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def deployment(cs: ChatService) -> dict[str, Any]:
    spec = cs.spec
    server = runtime_settings(spec).server
    env = [{"name": SETTINGS_FILE_ENV, "value": SETTINGS_FILE}, *secret_env(cs.name, spec)]
    mounts: list[dict[str, Any]] = [
        {"name": "settings", "mountPath": SETTINGS_DIR, "readOnly": True},
        {"name": "scratch", "mountPath": SCRATCH_DIR},
    ]
    container = {
        "name": RUNTIME_CONTAINER,
        "image": cs.image,
        "command": ["rillet", "serve"],
        # `metrics`: gunicorn's master serves /metrics there; the Service exposes `http` only.
        "ports": [
            {"name": name, "containerPort": port, "protocol": "TCP"}
            for name, port in (("http", server.port), ("metrics", server.metrics_port))
            if port is not None
        ],
        "env": env,
        "resources": spec.server.resources.model_dump(),
        "startupProbe": _probe("/healthz", 2, 30),
        "livenessProbe": _probe("/healthz", 10, 3),
        "readinessProbe": _probe("/readyz", 2, 1),
        "lifecycle": {
            "preStop": {
                "exec": {"command": ["rillet", "drain", "--wait", f"{server.drain_seconds:g}"]}
            }
        },
        "securityContext": _RESTRICTED_CONTAINER,
        "volumeMounts": mounts,
    }
    volumes: list[dict[str, Any]] = [
        {"name": "settings", "configMap": {"name": f"{cs.name}-settings"}},
        {"name": "scratch", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    keys = api_keys_secret(cs.name, spec)
    if keys:
        mounts.append({"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": True})
        volumes.append(
            {"name": "api-keys", "secret": {"secretName": keys, "defaultMode": SECRET_FILE_MODE}}
        )
    claim = spec.vector_index.embedded.claim_name
    if spec.vector_index.provider == "embedded" and claim:
        mount = {"name": "index", "mountPath": CLAIMED_INDEX, "readOnly": True}
        if spec.vector_index.embedded.sub_path:
            mount["subPath"] = spec.vector_index.embedded.sub_path
        mounts.append(mount)
        volumes.append(
            {"name": "index", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(cs)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
        },
        "revisionHistoryLimit": 5,
        "template": {
            "metadata": {
                "labels": labels(cs, "chat"),
                "annotations": {HASH_ANNOTATION: settings_hash(cs)},
            },
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": _pod_security(RUNTIME_UID),
                "terminationGracePeriodSeconds": termination_grace_seconds(server),
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": key,
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": selector(cs)},
                    }
                    for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
                ],
                "containers": [container],
                "volumes": volumes,
            },
        },
    }
    if spec.replicas is not None:  # otherwise the HPA owns the count
        deployment_spec["replicas"] = spec.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(cs, cs.name, "chat"),
        "spec": deployment_spec,
    }


def service(cs: ChatService) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(cs, cs.name, "chat"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(cs),
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def pod_disruption_budget(cs: ChatService) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(cs, cs.name, "chat"),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(cs)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def first_key_secret(cs: ChatService, key: str) -> dict[str, Any]:
    """The API keys Secret the operator creates when the spec names none: one random key
    for the principal `default`. Created once and never applied again, so keys its users
    add or rotate stay theirs."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(cs, first_key_secret_name(cs.name), "chat"),
        "type": "Opaque",
        "stringData": {FIRST_KEY_PRINCIPAL: key},
    }


# -- managed Redis ---------------------------------------------------------------------------


def _redis_config_string(value: str) -> str:
    """A value as a quoted string of Redis's config syntax."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def redis_secret(cs: ChatService, password: str) -> dict[str, Any]:
    """The password is generated once by the operator and kept; the builder only places it:
    as `password` for the chat pods and as a config file redis-server includes."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(cs, redis_service_name(cs.name), "redis"),
        "type": "Opaque",
        "stringData": {
            "password": password,
            REDIS_AUTH_FILE: f"requirepass {_redis_config_string(password)}\n",
        },
    }


def _managed_redis(cs: ChatService) -> ManagedRedisSpec:
    managed = cs.spec.redis.managed if cs.spec.redis else None
    if managed is None:
        raise ValueError(f"{cs.name} has no managed Redis")
    return managed


def quantity(value: str, field: str) -> Decimal:
    try:
        parsed: Decimal = parse_quantity(value)  # type: ignore[no-untyped-call]
    except ValueError:
        raise ValueError(f"{field} is not a quantity: {value}") from None
    return parsed


def redis_args(cs: ChatService, persistence: RedisPersistenceSpec | None = None) -> list[str]:
    """`persistence`: what the StatefulSet gets (`persistence_to_apply`); None: the spec's."""
    managed = _managed_redis(cs)
    persistence = persistence or managed.persistence
    limit = quantity(managed.memory_limit, "redis.managed.memoryLimit")
    maxmemory = int(limit * 8 // 10)  # room for Redis's own overhead
    if persistence.enabled:
        # Every write reaches the AOF before its reply; fsync'd as the spec says. The RDB
        # snapshots are a compact second copy, written again on a clean shutdown.
        durability = ["--appendonly", "yes", "--appendfsync", persistence.fsync]
        durability += ["--save", REDIS_SNAPSHOTS]
    else:
        durability = ["--appendonly", "no", "--save", ""]
    return [
        "--include",
        f"{REDIS_AUTH_DIR}/{REDIS_AUTH_FILE}",
        "--maxmemory",
        str(maxmemory),
        "--maxmemory-policy",
        managed.eviction_policy,
        *durability,
        "--dir",
        REDIS_DATA_DIR,
    ]


def requested_storage(claim: dict[str, Any]) -> str | None:
    """What a PersistentVolumeClaim asks for (its spec: an expansion asked is counted)."""
    storage: str | None = (
        claim.get("spec", {}).get("resources", {}).get("requests", {}).get("storage")
    )
    return storage


def claim_names(statefulset: dict[str, Any]) -> list[str]:
    """The claims the StatefulSet controller makes from a StatefulSet's templates:
    `<template>-<set>-<ordinal>`."""
    name = statefulset["metadata"]["name"]
    spec = statefulset.get("spec", {})
    return [
        f"{template['metadata']['name']}-{name}-{ordinal}"
        for template in spec.get("volumeClaimTemplates") or []
        for ordinal in range(spec.get("replicas", 1))
    ]


def claim_in_place(statefulset: dict[str, Any]) -> RedisPersistenceSpec:
    """The persistence an existing Redis StatefulSet was made with: its claim template."""
    templates = statefulset.get("spec", {}).get("volumeClaimTemplates") or []
    if not templates:
        return RedisPersistenceSpec(enabled=False)
    claim = templates[0].get("spec", {})
    return RedisPersistenceSpec(
        enabled=True,
        size=claim.get("resources", {}).get("requests", {}).get("storage", "0"),
        storage_class_name=claim.get("storageClassName"),
    )


def same_claim(a: RedisPersistenceSpec, b: RedisPersistenceSpec) -> bool:
    """Whether two persistence settings give the same claim template (size as a quantity)."""
    if not (a.enabled and b.enabled):
        return a.enabled == b.enabled
    field = "redis.managed.persistence.size"
    same_size = quantity(a.size, field) == quantity(b.size, field)
    return same_size and a.storage_class_name == b.storage_class_name


def persistence_to_apply(
    cs: ChatService, statefulset: dict[str, Any] | None
) -> RedisPersistenceSpec:
    """The spec's persistence, unless the Redis exists with another claim template: a
    StatefulSet's volumeClaimTemplates are immutable (the API server refuses every update
    that changes them), so the one in place is kept and status says so."""
    wanted = _managed_redis(cs).persistence
    if statefulset is None:
        return wanted
    in_place = claim_in_place(statefulset)
    if same_claim(wanted, in_place):
        return wanted
    return in_place.model_copy(update={"fsync": wanted.fsync})  # the claim alone is fixed


def redis_stateful_set(
    cs: ChatService, persistence: RedisPersistenceSpec | None = None
) -> dict[str, Any]:
    """`persistence`: what the StatefulSet gets (`persistence_to_apply`); None: the spec's."""
    managed = _managed_redis(cs)
    persistence = persistence or managed.persistence
    name = redis_service_name(cs.name)
    # redis-cli takes the password from REDISCLI_AUTH; it exits 0 even on an error reply
    # (NOAUTH, LOADING), so the probes check the answer. Ready: PONG only. Alive: PONG, or
    # LOADING while it reads a large AOF back, which must not be killed half way.
    ready = {
        "exec": {"command": ["sh", "-c", 'test "$(redis-cli ping)" = PONG']},
        "periodSeconds": 5,
        "timeoutSeconds": 2,
    }
    alive = {
        "exec": {
            "command": [
                "sh",
                "-c",
                'case "$(redis-cli ping)" in PONG|LOADING*) ;; *) exit 1;; esac',
            ]
        },
        "periodSeconds": 15,
        "timeoutSeconds": 2,
        "failureThreshold": 4,
    }
    container = {
        "name": "redis",
        "image": managed.image,
        "command": ["redis-server"],
        "args": redis_args(cs, persistence),
        "env": [
            {
                "name": "REDISCLI_AUTH",
                "valueFrom": {"secretKeyRef": {"name": name, "key": "password"}},
            }
        ],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": "100m", "memory": managed.memory_limit},
            "limits": {"memory": managed.memory_limit},
        },
        "readinessProbe": ready,
        "livenessProbe": alive,
        "securityContext": _RESTRICTED_CONTAINER,
        "volumeMounts": [
            {"name": REDIS_DATA_VOLUME, "mountPath": REDIS_DATA_DIR},
            {"name": "auth", "mountPath": REDIS_AUTH_DIR, "readOnly": True},
        ],
    }
    auth_volume = {
        "name": "auth",
        "secret": {
            "secretName": name,
            "items": [{"key": REDIS_AUTH_FILE, "path": REDIS_AUTH_FILE}],
            "defaultMode": SECRET_FILE_MODE,
        },
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # A large volume is not walked again on every start once its owner is right.
        "securityContext": {**_pod_security(REDIS_UID), "fsGroupChangePolicy": "OnRootMismatch"},
        # On SIGTERM Redis fsyncs the AOF and writes an RDB snapshot before it exits.
        "terminationGracePeriodSeconds": REDIS_TERMINATION_GRACE_SECONDS,
        "containers": [container],
        "volumes": [auth_volume],
    }
    stateful_spec: dict[str, Any] = {
        "serviceName": name,
        "replicas": 1,
        "selector": {"matchLabels": selector(cs, "redis")},
        "updateStrategy": {"type": "RollingUpdate"},
        # The claim outlives the StatefulSet (deleted, or pruned when the ChatService moves
        # to an external Redis) and a scale-down: the data goes only when a person says so.
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
        "template": {"metadata": {"labels": labels(cs, "redis")}, "spec": pod_spec},
    }
    if persistence.enabled:
        claim: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": persistence.size}},
        }
        if persistence.storage_class_name:
            claim["storageClassName"] = persistence.storage_class_name
        stateful_spec["volumeClaimTemplates"] = [
            {"metadata": {"name": REDIS_DATA_VOLUME}, "spec": claim}
        ]
    else:
        pod_spec["volumes"].append({"name": REDIS_DATA_VOLUME, "emptyDir": {}})
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(cs, name, "redis"),
        "spec": stateful_spec,
    }


def redis_service(cs: ChatService) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(cs, redis_service_name(cs.name), "redis"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(cs, "redis"),
            "ports": [
                {"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}
            ],
        },
    }


def redis_disruption_budget(cs: ChatService) -> dict[str, Any]:
    """One pod, evicted one at a time. Not `minAvailable: 1`: with a single Redis that
    refuses every eviction and holds node drains until a person steps in. An eviction
    costs a short outage (Redis saves on SIGTERM, the claim follows the pod), no data;
    no outage at all takes an external Redis with failover (docs/design)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(cs, redis_service_name(cs.name), "redis"),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(cs, "redis")},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def children(
    cs: ChatService,
    redis_password: str | None = None,
    prometheus_url: str | None = None,
    isolation: NetworkIsolation | None = NetworkIsolation(),
    redis_persistence: RedisPersistenceSpec | None = None,
) -> list[dict[str, Any]]:
    """Every child the operator applies, in apply order: what pods need (and the policies
    that guard them) exists before the pods. `isolation` None: no NetworkPolicies.
    `redis_persistence`: the managed Redis's, from `persistence_to_apply`; None: the spec's."""
    built: list[dict[str, Any]] = network_policies(cs, isolation) if isolation else []
    if cs.spec.redis and cs.spec.redis.managed:
        if redis_password is None:
            raise ValueError("a managed Redis needs its password")
        built += [
            redis_secret(cs, redis_password),
            redis_service(cs),
            redis_stateful_set(cs, redis_persistence),
            redis_disruption_budget(cs),
        ]
    built += [config_map(cs), deployment(cs), service(cs), pod_disruption_budget(cs)]
    scaler = autoscaler(cs, prometheus_url)
    if scaler:
        built.append(scaler)
    return built
