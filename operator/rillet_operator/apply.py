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

from rillet_operator.builders import (
    children,
    claim_names,
    first_key_secret,
    persistence_to_apply,
)
from rillet_operator.kube import ApiError, Kube, NotServed, error_status
from rillet_operator.meta import MANAGER, ChatService
from rillet_operator.network import NetworkIsolation
from rillet_operator.runtime_settings import (
    api_keys_secret,
    first_key_secret_name,
    redis_service_name,
)
from rillet_operator.spec import GROUP, KIND, VERSION
from rillet_operator.status import (
    LatencyReading,
    Observed,
    compute_status,
    controlled_by,
    held_back,
    name_conflicts,
)

log = logging.getLogger(__name__)
API_WAIT_SECONDS = 120
CHAT_SERVICE_API = f"{GROUP}/{VERSION}"


@dataclass
class Outcome:
    """What one reconcile did, for Events, and the status it wrote."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    # Claims of a deleted managed Redis StatefulSet, left in place with their data.
    retained_claims: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)


async def redis_password(client: Kube, cs: ChatService) -> str:
    """The managed Redis keeps the password it was born with."""
    existing = await client.get("v1", "Secret", redis_service_name(cs.name), cs.namespace)
    if existing and "password" in existing.get("data", {}):
        return base64.b64decode(existing["data"]["password"]).decode()
    return secrets.token_urlsafe(24)


def _optional_children(cs: ChatService) -> list[tuple[str, str, str]]:
    """(apiVersion, kind, name) of every child some specs have and others not."""
    redis = redis_service_name(cs.name)
    return [
        ("autoscaling/v2", "HorizontalPodAutoscaler", cs.name),
        ("keda.sh/v1alpha1", "ScaledObject", cs.name),
        ("apps/v1", "StatefulSet", redis),
        ("policy/v1", "PodDisruptionBudget", redis),
        ("v1", "Service", redis),
        ("v1", "Secret", redis),
        ("networking.k8s.io/v1", "NetworkPolicy", cs.name),
        ("networking.k8s.io/v1", "NetworkPolicy", redis),
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


Key = tuple[str, str]  # (kind, name)


async def _create_first_key(client: Kube, cs: ChatService, outcome: Outcome) -> None:
    """The API keys Secret the spec did not name, created once with a random key; never
    applied again, so the keys its users rotate or add stay theirs."""
    try:
        await client.create(first_key_secret(cs, secrets.token_urlsafe(32)))
    except ApiError as exc:
        if exc.status != 409:  # 409: it exists after all; it was checked for control
            raise
        return
    outcome.created.append(f"Secret {first_key_secret_name(cs.name)}")


async def _apply_children(
    client: Kube,
    desired: list[dict[str, Any]],
    before: dict[Key, dict[str, Any] | None],
    outcome: Outcome,
) -> tuple[dict[Key, dict[str, Any]], list[str]]:
    """Server-side apply each child: the live objects, and the APIs found not served."""
    live: dict[Key, dict[str, Any]] = {}
    missing_apis: list[str] = []
    for manifest in desired:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        label = f"{kind} {name}"
        try:
            after = await client.apply(manifest)
        except NotServed:
            missing_apis.append(manifest["apiVersion"])
            continue
        except ApiError:
            if not (pinned := manifest["metadata"].get("uid")):
                raise
            now = await client.get(
                manifest["apiVersion"], kind, name, manifest["metadata"]["namespace"]
            )
            if now and now["metadata"]["uid"] == pinned:
                raise
            # Refused because the object it was pinned to went (409) or was made again (422).
            log.info("%s was deleted while being applied; its deletion reconciles again", label)
            continue
        live[kind, name] = after
        previous = before.get((kind, name))
        if previous is None:
            outcome.created.append(label)
        elif changed_by_apply(previous, after):
            outcome.updated.append(label)
    return live, missing_apis


async def _existing_claims(client: Kube, statefulset: dict[str, Any]) -> list[str]:
    """`name (size)` of each claim the StatefulSet's templates made that exists."""
    found = []
    namespace = statefulset["metadata"]["namespace"]
    for name in claim_names(statefulset):
        claim = await client.get("v1", "PersistentVolumeClaim", name, namespace)
        if claim is not None:
            size = claim.get("status", {}).get("capacity", {}).get("storage")
            found.append(f"{name} ({size})" if size else name)
    return found


async def _prune(
    client: Kube, cs: ChatService, desired: list[dict[str, Any]], outcome: Outcome
) -> None:
    """Delete the optional children this spec no longer has, if the ChatService controls
    them. A StatefulSet's claims stay (its retention policy): they are named in `outcome`."""
    wanted = {(m["kind"], m["metadata"]["name"]) for m in desired}
    for api_version, kind, name in _optional_children(cs):
        if (kind, name) in wanted:
            continue
        existing = await client.get(api_version, kind, name, cs.namespace)
        if existing and controlled_by(existing, cs.uid):
            await client.delete(api_version, kind, name, cs.namespace)
            outcome.deleted.append(f"{kind} {name}")
            if kind == "StatefulSet":
                outcome.retained_claims += await _existing_claims(client, existing)


async def reconcile(
    client: Kube,
    body: dict[str, Any],
    prometheus_url: str | None = None,
    latency: LatencyReading | None = None,
    adapted: tuple[int, int] | None = None,
    isolation: NetworkIsolation | None = NetworkIsolation(),
    default_image: str | None = None,
) -> Outcome:
    """`adapted`: a (target, adapted from) the operator chose since status was written;
    `isolation` None: the operator's NetworkPolicies are switched off; `default_image`
    None: this version's."""
    cs = ChatService.from_body(body)
    if default_image:
        cs = replace(cs, default_image=default_image)
    if adapted:
        cs = replace(cs, adapted_target=adapted[0], adapted_from=adapted[1])
    managed_redis = bool(cs.spec.redis and cs.spec.redis.managed)
    outcome = Outcome()
    # Everything already where a child goes is read before anything is written: an object
    # the ChatService does not control stops the whole reconcile (no silent takeover).
    # The managed Redis's StatefulSet first: its claim template cannot change in place.
    redis_name = redis_service_name(cs.name)
    before: dict[Key, dict[str, Any] | None] = {}
    password, persistence, kept_uid = None, None, None
    if managed_redis:
        password = await redis_password(client, cs)
        live_redis = await client.get("apps/v1", "StatefulSet", redis_name, cs.namespace)
        before["StatefulSet", redis_name] = live_redis
        if live_redis and controlled_by(live_redis, cs.uid):
            persistence = persistence_to_apply(cs, live_redis)
            kept_uid = live_redis["metadata"]["uid"]
    desired = children(cs, password, prometheus_url, isolation, persistence)
    if kept_uid:
        # The claim template was chosen from this very StatefulSet: the apply may update it,
        # never make it again (a `kubectl delete --cascade=orphan` between our read and our
        # apply). With its uid in the manifest the API server refuses that instead, and the
        # deletion's own event reconciles again with the spec's template.
        (redis_set,) = (m for m in desired if m["kind"] == "StatefulSet")
        redis_set["metadata"]["uid"] = kept_uid
    first_key = first_key_secret_name(cs.name)
    wants_first_key = api_keys_secret(cs.name, cs.spec) == first_key

    targets = [(m["apiVersion"], m["kind"], m["metadata"]["name"]) for m in desired]
    if wants_first_key:
        targets.append(("v1", "Secret", first_key))
    for api_version, kind, name in targets:
        if (kind, name) not in before:
            before[kind, name] = await client.get(api_version, kind, name, cs.namespace)
    live = {key: obj for key, obj in before.items() if obj and controlled_by(obj, cs.uid)}
    missing_apis: list[str] = []
    observed = Observed(
        generation=body["metadata"].get("generation", 0),
        deployment=None,
        redis=None,
        prometheus_configured=prometheus_url is not None,
        latency=latency,
        conflicts=name_conflicts(cs, before.values()),
        network_policies=isolation is not None,
    )
    held = held_back(cs, observed)
    if held:
        log.warning("%s/%s: nothing applied: %s", cs.namespace, cs.name, held["message"])
    else:
        if wants_first_key and before["Secret", first_key] is None:
            await _create_first_key(client, cs, outcome)
        applied, missing_apis = await _apply_children(client, desired, before, outcome)
        live.update(applied)
        await _prune(client, cs, desired, outcome)

    redis = live.get(("StatefulSet", redis_name))
    claims = claim_names(redis) if redis and managed_redis else []
    claim = (
        await client.get("v1", "PersistentVolumeClaim", claims[0], cs.namespace) if claims else None
    )
    observed = replace(
        observed,
        deployment=live.get(("Deployment", cs.name)),
        redis=redis,
        redis_claim=claim,
        missing_apis=tuple(missing_apis),
    )
    old = body.get("status") or {}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    outcome.status = compute_status(cs, observed, old, now)
    if outcome.status != {k: old.get(k) for k in outcome.status}:
        await client.patch_status(CHAT_SERVICE_API, KIND, cs.name, cs.namespace, outcome.status)
    return outcome


def retained_message(outcome: Outcome) -> str:
    claims = ", ".join(f"PersistentVolumeClaim {claim}" for claim in outcome.retained_claims)
    return (
        f"the managed Redis is gone; its data stays on {claims}: a managed Redis of this "
        "ChatService takes it back, `kubectl delete pvc` frees it"
    )


async def post_event(client: Kube, body: dict[str, Any], reason: str, message: str) -> None:
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
            "apiVersion": CHAT_SERVICE_API,
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
    await client.create(event)


def namespace_terminating(exc: ApiError) -> bool:
    """The namespace controller is deleting everything in it, or has finished: recreating
    children would only fight it (and the API server refuses new objects there anyway)."""
    details = error_status(exc).get("details") or {}
    if details.get("kind") == "namespaces":  # 404: the namespace itself is gone
        return True
    return any(
        cause.get("reason") == "NamespaceTerminating" for cause in details.get("causes") or []
    )


async def wait_for_chat_service_api(client: Kube, namespaces: list[str]) -> None:
    """Wait until ChatServices can be listed where the operator watches them: the CRD may
    still be getting established when the operator starts (helm installs both at once),
    and kopf, without scanning, only watches the APIs it found at startup."""
    namespace = namespaces[0] if namespaces else None
    async with asyncio.timeout(API_WAIT_SECONDS):
        while True:
            try:
                await client.list_one(CHAT_SERVICE_API, KIND, namespace)
                return
            except (NotServed, ApiError) as exc:
                if isinstance(exc, ApiError) and exc.status != 404:
                    raise
                log.info("waiting for the ChatService CRD (%s) to be served", CHAT_SERVICE_API)
                await asyncio.sleep(2)


async def read_chat_service(client: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    return await client.get(CHAT_SERVICE_API, KIND, name, namespace)
