"""The running operator: what it knows of every ChatService between reconciles (latency
read from Prometheus, adapted streams-per-pod targets), the reconcile the queue runs, and
its periodic loops: resync, latency observation, capacity adaptation."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import httpx
from prometheus_client import Counter, Gauge, Histogram

from rillet_operator.apply import (
    namespace_terminating,
    post_event,
    read_chat_service,
    reconcile,
    retained_message,
    wait_for_chat_service_api,
)
from rillet_operator.autoscaling import adapted_target, configured_target, streams_per_pod_target
from rillet_operator.kube import ApiError, Kube
from rillet_operator.meta import ChatService
from rillet_operator.observe import PrometheusReader
from rillet_operator.queue import Key, ReconcileQueue
from rillet_operator.settings import OperatorSettings
from rillet_operator.status import LatencyReading

log = logging.getLogger(__name__)

RECONCILES = Counter(
    "rillet_operator_reconciles_total", "Reconciles of a ChatService, by result", ["result"]
)
RECONCILE_SECONDS = Histogram(
    "rillet_operator_reconcile_duration_seconds",
    "Time to reconcile one ChatService (reads, applies, status)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CHAT_SERVICES = Gauge("rillet_operator_chat_services", "ChatServices the operator manages")


class Operator:
    def __init__(
        self, client: Kube, settings: OperatorSettings, prometheus: PrometheusReader | None = None
    ) -> None:
        self.client = client
        self.settings = settings
        self.prometheus = prometheus
        self.queue = ReconcileQueue(self._reconcile_named)
        self.known: set[Key] = set()  # every ChatService seen, for the periodic resync
        self.latency: dict[Key, LatencyReading] = {}
        self.latency_error: str | None = "not read yet"
        self.adapted: dict[Key, tuple[int, int]] = {}  # (target, adapted from), until in status
        self.adapt_due: dict[Key, float] = {}
        self._loops: list[asyncio.Task[None]] = []

    @classmethod
    async def start(cls, settings: OperatorSettings) -> Operator:
        """Connect, wait for the ChatService API, and start the loops."""
        client = await Kube.connect()
        try:
            await wait_for_chat_service_api(client, settings.namespaces)
        except BaseException:
            client.close()
            raise
        url = settings.prometheus_url
        operator = cls(client, settings, PrometheusReader(url) if url else None)
        operator._loops.append(asyncio.create_task(operator.resync_forever()))
        if operator.prometheus:
            loop = operator.observe_latency_forever(operator.prometheus)
            operator._loops.append(asyncio.create_task(loop))
        return operator

    async def aclose(self) -> None:
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self.queue.aclose()
        self.client.close()
        if self.prometheus:
            await self.prometheus.aclose()

    async def reconcile_now(self, namespace: str, name: str) -> None:
        """Reconcile a ChatService (after any reconcile of it in progress); errors raise."""
        self.known.add((namespace, name))
        await self.queue.run(namespace, name)

    def reconcile_soon(self, namespace: str, name: str) -> None:
        """Queue a reconcile of a ChatService; errors are logged, the resync retries."""
        self.queue.request(namespace, name)

    def forget(self, namespace: str, name: str) -> None:
        self.known.discard((namespace, name))
        self.adapted.pop((namespace, name), None)
        self.adapt_due.pop((namespace, name), None)
        self.queue.forget(namespace, name)

    async def resync_forever(self) -> None:
        """Reconcile every known ChatService every resync_seconds, to catch what a watch
        missed. One loop rather than a kopf timer per object: a timer makes kopf put a
        finalizer on every ChatService, and deleting one would hang while no operator runs."""
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            for namespace, name in sorted(self.known):
                self.queue.request(namespace, name)

    async def observe_latency_forever(self, prometheus: PrometheusReader) -> None:
        """Read every ChatService's latency each observe_seconds; reconcile those whose
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
                    self.queue.request(*key)
            await asyncio.sleep(self.settings.observe_seconds)

    async def _adapt_if_due(self, key: Key) -> bool:
        """Every adapt_seconds per ChatService: move its streams-per-pod target by what
        Prometheus saw over the window (autoscaling.adapted_target), with an Event."""
        now = time.monotonic()
        every = self.settings.adapt_seconds
        due = self.adapt_due.setdefault(key, now + every)
        reading = self.reading(key)
        if now < due or reading is None or reading.error:
            return False
        self.adapt_due[key] = now + every
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
                isolation=self.settings.isolation(),
                default_image=self.settings.default_image,
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
        if outcome.retained_claims:
            await post_event(self.client, body, "RedisClaimRetained", retained_message(outcome))
        return "changed" if outcome.created or outcome.updated or outcome.deleted else "unchanged"
