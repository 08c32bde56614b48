"""Side effects: server-side apply of a ChatService's children, pruning what it no longer
needs, and writing its status. Everything here talks to the API server; the decisions are
made by the pure builders and `status.compute_status`."""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from httpx2 import HTTPStatusError
from lightkube import ALL_NS, ApiError, AsyncClient, codecs
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment, StatefulSet
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import ConfigMap, Secret, Service
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import PatchType

from rillet_operator.builders import children
from rillet_operator.meta import MANAGER, ChatService
from rillet_operator.runtime_settings import redis_service_name
from rillet_operator.spec import GROUP, KIND, PLURAL, VERSION
from rillet_operator.status import LatencyReading, Observed, compute_status

log = logging.getLogger(__name__)
API_WAIT_SECONDS = 120

ChatServiceResource = create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)
ScaledObject = create_namespaced_resource("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects")
KINDS: dict[str, Any] = {
    "ConfigMap": ConfigMap,
    "Deployment": Deployment,
    "HorizontalPodAutoscaler": HorizontalPodAutoscaler,
    "PodDisruptionBudget": PodDisruptionBudget,
    "Secret": Secret,
    "ScaledObject": ScaledObject,
    "Service": Service,
    "StatefulSet": StatefulSet,
}


@dataclass
class Outcome:
    """What one reconcile did, for Events, and the status it wrote."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)


def _not_found(exc: HTTPStatusError) -> bool:
    """404: no such object, or no such API (a CRD such as KEDA's is not installed; lightkube
    raises its parent HTTPStatusError then, as the body is not a Status)."""
    return exc.response.status_code == 404


async def _get(client: AsyncClient, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    try:
        found = await client.get(KINDS[kind], name, namespace=namespace)
    except HTTPStatusError as exc:
        if _not_found(exc):
            return None
        raise
    return _as_dict(found)


def _as_dict(obj: Any) -> dict[str, Any]:
    as_dict: dict[str, Any] = obj.to_dict()
    return as_dict


async def redis_password(client: AsyncClient, cs: ChatService) -> str:
    """The managed Redis keeps the password it was born with."""
    existing = await _get(client, "Secret", redis_service_name(cs.name), cs.namespace)
    if existing and "password" in existing.get("data", {}):
        return base64.b64decode(existing["data"]["password"]).decode()
    return secrets.token_urlsafe(24)


def _optional_children(cs: ChatService) -> list[tuple[str, str]]:
    redis = redis_service_name(cs.name)
    return [
        ("HorizontalPodAutoscaler", cs.name),
        ("ScaledObject", cs.name),
        ("StatefulSet", redis),
        ("Service", redis),
        ("Secret", redis),
    ]


def changed_by_apply(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether our apply changed the spec. The generation says so where there is one:
    controllers' status writes between our read and our apply also move resourceVersion.
    A child being deleted (its namespace, say) was not updated by us."""
    if after["metadata"].get("deletionTimestamp"):
        return False
    key = "generation" if "generation" in after["metadata"] else "resourceVersion"
    changed: bool = before["metadata"].get(key) != after["metadata"].get(key)
    return changed


def _owned_by(obj: dict[str, Any], cs: ChatService) -> bool:
    return any(ref.get("uid") == cs.uid for ref in obj["metadata"].get("ownerReferences", []))


async def reconcile(
    client: AsyncClient,
    body: dict[str, Any],
    prometheus_url: str | None = None,
    latency: LatencyReading | None = None,
    adapted: tuple[int, int] | None = None,
) -> Outcome:
    """`adapted`: a (target, adapted from) the operator chose since status was written."""
    cs = ChatService.from_body(body)
    if adapted:
        cs = replace(cs, adapted_target=adapted[0], adapted_from=adapted[1])
    managed_redis = bool(cs.spec.redis and cs.spec.redis.managed)
    password = await redis_password(client, cs) if managed_redis else None
    outcome = Outcome()
    live: dict[tuple[str, str], dict[str, Any]] = {}
    missing_apis: list[str] = []

    desired = children(cs, password, prometheus_url)
    for manifest in desired:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        before = await _get(client, kind, name, cs.namespace)
        try:
            applied = await client.apply(
                codecs.from_dict(manifest), field_manager=MANAGER, force=True
            )
        except HTTPStatusError as exc:
            if not _not_found(exc):  # apply creates: a 404 means the API is not served
                raise
            missing_apis.append(manifest["apiVersion"])
            continue
        after = _as_dict(applied)
        live[kind, name] = after
        label = f"{kind} {name}"
        if before is None:
            outcome.created.append(label)
        elif changed_by_apply(before, after):
            outcome.updated.append(label)

    wanted = {(m["kind"], m["metadata"]["name"]) for m in desired}
    for kind, name in _optional_children(cs):
        if (kind, name) in wanted:
            continue
        existing = await _get(client, kind, name, cs.namespace)
        if existing and _owned_by(existing, cs):
            await client.delete(KINDS[kind], name, namespace=cs.namespace)
            outcome.deleted.append(f"{kind} {name}")

    observed = Observed(
        generation=body["metadata"].get("generation", 0),
        deployment=live.get(("Deployment", cs.name)),
        redis=live.get(("StatefulSet", redis_service_name(cs.name))),
        missing_apis=tuple(missing_apis),
        prometheus_configured=prometheus_url is not None,
        latency=latency,
    )
    old = body.get("status") or {}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    outcome.status = compute_status(cs, observed, old, now)
    if outcome.status != {k: old.get(k) for k in outcome.status}:
        await client.patch(
            ChatServiceResource.Status,
            cs.name,
            {"status": outcome.status},
            namespace=cs.namespace,
            patch_type=PatchType.MERGE,
        )
    return outcome


async def post_event(client: AsyncClient, body: dict[str, Any], reason: str, message: str) -> None:
    """A Normal Event on the ChatService, for `kubectl describe`. Posted directly rather than
    through kopf, whose posting only works inside its handlers, not in the operator's own
    loops (resync, latency)."""
    meta = body["metadata"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "reason": reason,
        "message": message[:1024],
        "type": "Normal",
        "source": {"component": MANAGER},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    await client.create(codecs.from_dict(event))


def namespace_terminating(exc: ApiError) -> bool:
    """The namespace controller is deleting everything in it: recreating children would
    only fight it (and the API server refuses new objects there anyway)."""
    causes = (exc.status.details and exc.status.details.causes) or []
    return any(cause.reason == "NamespaceTerminating" for cause in causes)


async def wait_for_chat_service_api(client: AsyncClient, namespaces: list[str]) -> None:
    """Wait until ChatServices can be listed where the operator watches them: the CRD may
    still be getting established when the operator starts (helm installs both at once),
    and kopf, without scanning, only watches the APIs it found at startup."""
    namespace = namespaces[0] if namespaces else ALL_NS
    async with asyncio.timeout(API_WAIT_SECONDS):
        while True:
            try:
                async for _ in client.list(ChatServiceResource, namespace=namespace, chunk_size=1):
                    break
                return
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
                log.info("waiting for the ChatService CRD (%s/%s) to be served", GROUP, VERSION)
                await asyncio.sleep(2)


async def read_chat_service(
    client: AsyncClient, namespace: str, name: str
) -> dict[str, Any] | None:
    try:
        found = await client.get(ChatServiceResource, name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise
    return _as_dict(found)
