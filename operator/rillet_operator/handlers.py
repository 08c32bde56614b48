"""kopf handlers: thin. Every trigger (a ChatService created, changed or found at startup;
one of its children changed or deleted; the periodic resync) leads to the same idempotent
`reconcile` of the owning ChatService, one at a time per ChatService."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import httpx
import kopf
from lightkube import ApiError, AsyncClient
from prometheus_client import Counter, Gauge, Histogram

from rillet_operator import autoscaling
from rillet_operator.apply import (
    namespace_terminating,
    post_event,
    read_chat_service,
    reconcile,
    wait_for_chat_service_api,
)
from rillet_operator.autoscaling import adapted_target, configured_target, streams_per_pod_target
from rillet_operator.meta import MANAGER, ChatService
from rillet_operator.observe import PrometheusReader
from rillet_operator.spec import GROUP, PLURAL, VERSION
from rillet_operator.status import LatencyReading

log = logging.getLogger(__name__)

CHILD_KINDS = [
    ("v1", "configmaps"),
    ("v1", "services"),
    ("v1", "secrets"),
    ("apps/v1", "deployments"),
    ("apps/v1", "statefulsets"),
    ("policy/v1", "poddisruptionbudgets"),
    ("autoscaling/v2", "horizontalpodautoscalers"),
]
OURS = {"app.kubernetes.io/managed-by": MANAGER}
SELECTOR = ",".join(f"{key}={value}" for key, value in OURS.items())
RESYNC_SECONDS = 300
OBSERVE_SECONDS = float(os.environ.get("RILLET_OBSERVE_SECONDS", "30"))
ADAPT_SECONDS = float(os.environ.get("RILLET_ADAPT_SECONDS", str(autoscaling.ADAPT_SECONDS)))

Key = tuple[str, str]

RECONCILES = Counter(
    "rillet_operator_reconciles_total", "Reconciles of a ChatService, by result", ["result"]
)
RECONCILE_SECONDS = Histogram(
    "rillet_operator_reconcile_duration_seconds",
    "Time to reconcile one ChatService (reads, applies, status)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CHAT_SERVICES = Gauge("rillet_operator_chat_services", "ChatServices the operator manages")


class Coalescer:
    """At most one reconcile per ChatService at a time; requests during one run it once more."""

    def __init__(self, work: Callable[[str, str], Awaitable[None]]) -> None:
        self._work = work
        self._locks: dict[Key, asyncio.Lock] = {}
        self._pending: dict[Key, asyncio.Task[None]] = {}

    async def run(self, namespace: str, name: str) -> None:
        lock = self._locks.setdefault((namespace, name), asyncio.Lock())
        async with lock:
            await self._work(namespace, name)

    def request(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        if key not in self._pending:  # a queued run will see this change too
            task = asyncio.create_task(self._queued(key))
            self._pending[key] = task

    async def _queued(self, key: Key) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            self._pending.pop(key, None)
            try:
                await self._work(*key)
            except Exception:
                log.exception("reconcile of %s/%s failed; the next event or resync retries", *key)

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)

    async def aclose(self) -> None:
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Operator:
    def __init__(self, client: AsyncClient, prometheus: PrometheusReader | None = None) -> None:
        self.client = client
        self.prometheus = prometheus
        self.coalescer = Coalescer(self._reconcile_named)
        self.known: set[Key] = set()  # every ChatService seen, for the periodic resync
        self.latency: dict[Key, LatencyReading] = {}
        self.latency_error: str | None = "not read yet"
        self.adapted: dict[Key, tuple[int, int]] = {}  # (target, adapted from), until in status
        self.adapt_due: dict[Key, float] = {}

    def forget(self, namespace: str, name: str) -> None:
        self.known.discard((namespace, name))
        self.adapted.pop((namespace, name), None)
        self.adapt_due.pop((namespace, name), None)
        self.coalescer.forget(namespace, name)

    async def resync_forever(self) -> None:
        """Reconcile every known ChatService every RESYNC_SECONDS, to catch what a watch
        missed. One loop rather than a kopf timer per object: a timer makes kopf put a
        finalizer on every ChatService, and deleting one would hang while no operator runs."""
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            for namespace, name in sorted(self.known):
                self.coalescer.request(namespace, name)

    async def observe_latency_forever(self, prometheus: PrometheusReader) -> None:
        """Read every ChatService's latency each OBSERVE_SECONDS; reconcile those whose
        reading changed, so status (observedLatency, SLOMet) follows."""
        while True:
            before = {key: self.reading(key) for key in self.known}
            try:
                self.latency, self.latency_error = await prometheus.latency(), None
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                self.latency_error = f"{prometheus.url}: {exc or type(exc).__name__}"
                log.warning("reading latency from Prometheus failed: %s", self.latency_error)
            for key in sorted(self.known):
                try:
                    adapted = await self._adapt_if_due(key)
                except Exception:  # one ChatService must not stop the loop; the next round retries
                    log.exception("adapting %s/%s failed", *key)
                    adapted = False
                if adapted or self.reading(key) != before.get(key):
                    self.coalescer.request(*key)
            await asyncio.sleep(OBSERVE_SECONDS)

    async def _adapt_if_due(self, key: Key) -> bool:
        """Every ADAPT_SECONDS per ChatService: move its streams-per-pod target by what
        Prometheus saw over the window (autoscaling.adapted_target), with an Event."""
        now = time.monotonic()
        due = self.adapt_due.setdefault(key, now + ADAPT_SECONDS)
        reading = self.reading(key)
        if now < due or reading is None or reading.error:
            return False
        self.adapt_due[key] = now + ADAPT_SECONDS
        body = await read_chat_service(self.client, *key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return False
        cs = self._with_adaptation(ChatService.from_body(body), key)
        change = adapted_target(cs, reading.ttft_p95_ms, reading.streams_per_pod)
        if change is None:
            return False
        target, why = change
        self.adapted[key] = (target, configured_target(cs))
        message = f"streams per pod target {streams_per_pod_target(cs)} -> {target}: {why}"
        await post_event(self.client, body, "CapacityAdapted", message)
        return True

    def _with_adaptation(self, cs: ChatService, key: Key) -> ChatService:
        if key not in self.adapted:
            return cs
        target, adapted_from = self.adapted[key]
        return replace(cs, adapted_target=target, adapted_from=adapted_from)

    def reading(self, key: Key) -> LatencyReading | None:
        if self.prometheus is None:
            return None
        if self.latency_error:
            return LatencyReading(error=self.latency_error)
        return self.latency.get(key, LatencyReading())

    async def _reconcile_named(self, namespace: str, name: str) -> None:
        result = "error"
        try:
            with RECONCILE_SECONDS.time():
                result = await self._reconcile_once(namespace, name)
        finally:
            RECONCILES.labels(result).inc()
            CHAT_SERVICES.set(len(self.known))

    async def _reconcile_once(self, namespace: str, name: str) -> str:
        body = await read_chat_service(self.client, namespace, name)
        if body is None:
            self.forget(namespace, name)
            return "gone"
        if body["metadata"].get("deletionTimestamp"):
            return "deleting"  # garbage collection removes the children
        try:
            outcome = await reconcile(
                self.client,
                body,
                prometheus_url=self.prometheus.url if self.prometheus else None,
                latency=self.reading((namespace, name)),
                adapted=self.adapted.get((namespace, name)),
            )
        except ApiError as exc:
            if not namespace_terminating(exc):
                raise
            log.info("%s/%s: its namespace is being deleted; nothing to do", namespace, name)
            return "deleting"
        for verb, items in (
            ("Created", outcome.created),
            ("Updated", outcome.updated),
            ("Deleted", outcome.deleted),
        ):
            if items:
                await post_event(self.client, body, verb, f"{verb.lower()} " + ", ".join(items))
        return "changed" if outcome.created or outcome.updated or outcome.deleted else "unchanged"


def _operator(memo: Any) -> Operator:
    operator: Operator = memo.operator
    return operator


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
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
        # Secret and ConfigMap in the cluster.
        settings.watching.label_selectors[plural] = SELECTOR
    # No CRD and namespace scanning: it needs cluster-wide list rights that a namespaced
    # install must not have. The ChatService API is found once, at startup, instead.
    settings.scanning.disabled = True
    client = AsyncClient(field_manager=MANAGER)
    await wait_for_chat_service_api(client, list(getattr(memo, "namespaces", None) or []))
    url = getattr(memo, "prometheus_url", None)
    prometheus = PrometheusReader(url) if url else None
    memo.operator = operator = Operator(client, prometheus)
    memo.loops = [asyncio.create_task(operator.resync_forever())]
    if prometheus:
        memo.loops.append(asyncio.create_task(operator.observe_latency_forever(prometheus)))


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
    operator = _operator(memo)
    for loop in memo.loops:
        loop.cancel()
    await asyncio.gather(*memo.loops, return_exceptions=True)
    await operator.coalescer.aclose()
    await operator.client.close()
    if operator.prometheus:
        await operator.prometheus.aclose()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def chat_service_changed(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    operator = _operator(memo)
    operator.known.add((namespace or "", name))
    try:
        await operator.coalescer.run(namespace or "", name)
    except ApiError as exc:
        raise kopf.TemporaryError(f"API server: {exc.status.message}", delay=5) from exc


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
                _operator(memo).coalescer.request(namespace, owner)


_watch_children()
