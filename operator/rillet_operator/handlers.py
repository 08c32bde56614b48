"""kopf handlers, and only them: each hands its trigger (a ChatService created, changed,
found at startup or deleted; one of its children changed or deleted) to the operator
(`loops.Operator`), whose queue runs the same idempotent reconcile of the owning
ChatService, one at a time per ChatService."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from rillet_operator.kube import ApiError, error_message
from rillet_operator.loops import Operator
from rillet_operator.meta import MANAGER
from rillet_operator.settings import OperatorSettings
from rillet_operator.spec import GROUP, PLURAL, VERSION
from rillet_runtime.version import describe

log = logging.getLogger(__name__)

# Not Secrets: watching them needs list and watch on every Secret in the watched
# namespaces, which the operator must not have. It reads the Secrets it needs by name
# during a reconcile, and one of its Secrets deleted is made again by the next reconcile:
# the periodic resync, or sooner any change to the ChatService or its other children.
CHILD_KINDS = [
    ("v1", "configmaps"),
    ("v1", "services"),
    ("networking.k8s.io/v1", "networkpolicies"),
    ("apps/v1", "deployments"),
    ("apps/v1", "statefulsets"),
    ("policy/v1", "poddisruptionbudgets"),
    ("autoscaling/v2", "horizontalpodautoscalers"),
]
OURS = {"app.kubernetes.io/managed-by": MANAGER}
SELECTOR = ",".join(f"{key}={value}" for key, value in OURS.items())


def _operator(memo: Any) -> Operator:
    operator: Operator = memo.operator
    return operator


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    """kopf's own settings (`settings`), then the operator, from ours (`memo.settings`)."""
    log.info("starting %s", describe())
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.watching.connect_timeout = 10
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.posting.level = logging.INFO
    for _api_version, plural in CHILD_KINDS:
        # Filtered by the API server: the operator receives its own children, not every
        # ConfigMap and Service in the cluster.
        settings.watching.label_selectors[plural] = SELECTOR
    # No CRD and namespace scanning: it needs cluster-wide list rights that a namespaced
    # install must not have. The ChatService API is found once, at startup, instead.
    settings.scanning.disabled = True
    operator_settings: OperatorSettings = memo.settings
    memo.operator = await Operator.start(operator_settings)


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
    await _operator(memo).aclose()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def chat_service_changed(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    try:
        await _operator(memo).reconcile_now(namespace or "", name)
    except ApiError as exc:
        raise kopf.TemporaryError(f"API server: {error_message(exc)}", delay=5) from exc


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)  # optional: no finalizer
async def chat_service_deleted(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    _operator(memo).forget(namespace or "", name)


def _watch_children() -> None:
    for api_version, plural in CHILD_KINDS:

        @kopf.on.event(api_version, plural, labels=OURS)
        async def child_changed(
            namespace: str | None, labels: Mapping[str, str], memo: Any, **_: Any
        ) -> None:
            """A child changed (status, drift) or was deleted: reconcile its owner."""
            owner = labels.get("app.kubernetes.io/instance")
            if owner and namespace:
                _operator(memo).reconcile_soon(namespace, owner)


_watch_children()
