"""A small custom-metrics adapter and Prometheus query API for the test control plane.

KWOK pods run no process, so nothing can be scraped: this stands in for Prometheus plus
prometheus-adapter, answering with values the test sets. Everything on the other side is
real: the kube-apiserver's aggregator proxies `custom.metrics.k8s.io/v1beta2` to it (an
APIService backed by an ExternalName Service `localhost`, as prometheus-adapter is
registered in a cluster), the HPA controller in kube-controller-manager reads it, and
the operator queries the Prometheus API (`/api/v1/query`) for status.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from testcluster.cluster import TestCluster

GROUP_VERSION = "custom.metrics.k8s.io/v1beta2"
METRICS = ("rillet_active_streams", "rillet_time_to_first_token_p95_seconds")
SERVICE = ("kube-system", "rillet-test-metrics")
# The operator's queries, told apart by the series they read.
PROMQL_SERIES = {
    "rillet_time_to_first_token_seconds": "ttft",
    "rillet_inter_token_latency_seconds": "inter_token",
    "rillet_active_streams": "streams_per_pod",
}
POD_METRIC_PATH = re.compile(
    rf"^/apis/{re.escape(GROUP_VERSION)}/namespaces/([^/]+)/pods/([^/]+)/([^/]+)$"
)


@dataclass
class MetricsAdapter:
    """`start()` it, `register()` it with the cluster, then set values:
    Only namespaces with a value set are answered (others get no items, as with no
    adapter). `spread(ns, chat_service, metric, total)` splits a total evenly over the pods (active
    streams), `each(ns, chat_service, metric, value)` gives every pod the value (TTFT p95),
    `latency(ns, chat_service, ...)` feeds the Prometheus API."""

    cluster: TestCluster
    totals: dict[tuple[str, str, str], float] = field(default_factory=dict)
    per_pod: dict[tuple[str, str, str], float] = field(default_factory=dict)
    latencies: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    _servers: list[ThreadingHTTPServer] = field(default_factory=list)

    def spread(self, namespace: str, chat_service: str, metric: str, total: float) -> None:
        self.totals[namespace, chat_service, metric] = total

    def each(self, namespace: str, chat_service: str, metric: str, value: float) -> None:
        self.per_pod[namespace, chat_service, metric] = value

    def latency(
        self,
        namespace: str,
        chat_service: str,
        ttft_seconds: float,
        inter_token_seconds: float,
        streams_per_pod: float = 0.0,
    ) -> None:
        self.latencies[namespace, chat_service] = {
            "ttft": ttft_seconds,
            "inter_token": inter_token_seconds,
            "streams_per_pod": streams_per_pod,
        }

    # -- serving ---------------------------------------------------------------------------

    @property
    def custom_metrics_port(self) -> int:
        return self._servers[0].server_address[1]

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def start(self) -> MetricsAdapter:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # The API server's certificate names localhost; the APIService skips verification
        # (the aggregator would want <service>.<namespace>.svc), as test adapters do.
        tls.load_cert_chain(self.cluster.pki / "apiserver.crt", self.cluster.pki / "apiserver.key")
        custom = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(self._custom_metrics))
        custom.socket = tls.wrap_socket(custom.socket, server_side=True)
        prometheus = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(self._prometheus))
        self._servers = [custom, prometheus]
        for server in self._servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def register(self) -> None:
        """The APIService and its ExternalName Service, then wait until it is Available."""
        namespace, name = SERVICE
        objects = [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"type": "ExternalName", "externalName": "localhost"},
            },
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": "v1beta2.custom.metrics.k8s.io"},
                "spec": {
                    "group": "custom.metrics.k8s.io",
                    "version": "v1beta2",
                    "service": {
                        "namespace": namespace,
                        "name": name,
                        "port": self.custom_metrics_port,
                    },
                    "insecureSkipTLSVerify": True,
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            },
        ]
        for obj in objects:
            self.cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
        self.cluster.kubectl(
            "wait",
            "--for=condition=Available",
            "apiservice/v1beta2.custom.metrics.k8s.io",
            "--timeout=60s",
        )

    def _handler(self, answer: Any) -> type[BaseHTTPRequestHandler]:
        adapter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                adapter.requests.append(self.path)
                status, body = answer(urlparse(self.path))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: Any) -> None:
                pass

        return Handler

    def _custom_metrics(self, url: Any) -> tuple[int, dict[str, Any]]:
        if url.path.rstrip("/") == f"/apis/{GROUP_VERSION}":
            resources = [
                {
                    "name": f"pods/{metric}",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "MetricValueList",
                    "verbs": ["get"],
                }
                for metric in METRICS
            ]
            return 200, {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": GROUP_VERSION,
                "resources": resources,
            }
        match = POD_METRIC_PATH.match(url.path)
        if not match:
            return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}
        namespace, pod_name, metric = map(unquote, match.groups())  # "*" arrives as %2A
        if namespace not in {key[0] for key in self.totals | self.per_pod}:
            return 200, {"kind": "MetricValueList", "apiVersion": GROUP_VERSION, "items": []}
        selector = parse_qs(url.query).get("labelSelector", [""])[0]
        pods = self._pods(namespace, selector)
        if pod_name != "*":
            pods = [pod for pod in pods if pod["metadata"]["name"] == pod_name]
        items = []
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for pod in pods:
            value = self._value(namespace, pod, metric, len(pods))
            items.append(
                {
                    "describedObject": {
                        "kind": "Pod",
                        "namespace": namespace,
                        "name": pod["metadata"]["name"],
                        "apiVersion": "/v1",
                    },
                    "metric": {"name": metric, "selector": None},
                    "timestamp": now,
                    "windowSeconds": 60,
                    "value": f"{round(value * 1000)}m",
                }
            )
        return 200, {
            "kind": "MetricValueList",
            "apiVersion": GROUP_VERSION,
            "metadata": {},
            "items": items,
        }

    def _pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        args = ["-n", namespace, "pods"] + (["-l", selector] if selector else [])
        pods: list[dict[str, Any]] = self.cluster.get_json(*args)["items"]
        return [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]

    def _value(self, namespace: str, pod: dict[str, Any], metric: str, pods: int) -> float:
        """What the test set; 0 when it set nothing (an idle pod)."""
        chat_service = pod["metadata"].get("labels", {}).get("app.kubernetes.io/instance", "")
        key = (namespace, chat_service, metric)
        if key in self.totals:
            return self.totals[key] / pods
        return self.per_pod.get(key, 0.0)

    def _prometheus(self, url: Any) -> tuple[int, dict[str, Any]]:
        if url.path != "/api/v1/query":
            return 404, {"status": "error", "error": "not found"}
        query = parse_qs(url.query).get("query", [""])[0]
        kind = next((k for name, k in PROMQL_SERIES.items() if name in query), None)
        if kind is None:
            return 400, {"status": "error", "errorType": "bad_data", "error": "unknown query"}
        result = [
            {
                "metric": {"namespace": namespace, "chatservice": chat_service},
                "value": [datetime.now(UTC).timestamp(), str(values[kind])],
            }
            for (namespace, chat_service), values in self.latencies.items()
        ]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}
