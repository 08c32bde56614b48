"""Operator benchmark on the test control plane: time from `kubectl apply` to Ready for 1
and for 50 ChatServices, side by side with the same Deployment applied directly (the floor
the cluster's own controllers set: scheduler, ReplicaSet controller, KWOK), and the
operator's resident memory while it manages 200 ChatServices.

    make bench-operator      # or: python -m testcluster.bench --out bench-results
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from kubernetes.config import new_client_from_config
from kubernetes.dynamic import DynamicClient

from rillet_operator.builders import deployment
from rillet_operator.meta import ChatService
from rillet_operator.spec import GROUP, KIND, VERSION, ChatServiceSpec
from testcluster.cluster import TestCluster
from testcluster.operator import OperatorProcess

ROOT = Path(__file__).resolve().parent.parent
CHAT_SERVICES = (f"{GROUP}/{VERSION}", KIND)
DEPLOYMENTS = ("apps/v1", "Deployment")
SPEC = {"replicas": 1}


def has_condition(obj: dict[str, Any], kind: str) -> bool:
    conditions = obj.get("status", {}).get("conditions", [])
    return any(c["type"] == kind and c["status"] == "True" for c in conditions)


class ReadyClock:
    """Watches one kind in a namespace and stamps the first moment each object is ready."""

    def __init__(
        self, client: DynamicClient, resource: Any, namespace: str, ready: Callable[[Any], bool]
    ) -> None:
        self.ready_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, args=(client, resource, namespace, ready), daemon=True
        )
        self._thread.start()
        time.sleep(1)  # let the watch connect before anything is applied

    def _watch(
        self, client: DynamicClient, resource: Any, namespace: str, ready: Callable[[Any], bool]
    ) -> None:
        # A broken watch (the cluster stopping) ends the thread; a missed object then
        # shows up as a timeout in wait(), never as a wrong number.
        with contextlib.suppress(Exception):
            for event in client.watch(resource, namespace=namespace):  # type: ignore[no-untyped-call]
                body = event["raw_object"]
                name = body["metadata"]["name"]
                if name not in self.ready_at and ready(body):
                    self.ready_at[name] = time.monotonic()
                if self._stop.is_set():
                    return

    def wait(self, names: list[str], timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while not set(names) <= set(self.ready_at):
            if time.monotonic() > deadline:
                missing = sorted(set(names) - set(self.ready_at))
                raise TimeoutError(f"not ready after {timeout}s: {missing[:5]}")
            time.sleep(0.05)
        self._stop.set()


def chat_services(names: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name},
            "spec": SPEC,
        }
        for name in names
    ]


def bare_deployments(names: list[str], namespace: str) -> list[dict[str, Any]]:
    """The Deployment the operator would build, applied directly, without an owner."""
    spec = ChatServiceSpec.model_validate(SPEC)
    manifests = []
    for name in names:
        manifest = deployment(ChatService(name, namespace, "none", spec))
        manifest["metadata"].pop("ownerReferences", None)
        manifests.append(manifest)
    return manifests


def apply_and_time(
    cluster: TestCluster,
    client: DynamicClient,
    namespace: str,
    documents: list[dict[str, Any]],
    kind: tuple[str, str],
    ready: Callable[[Any], bool],
) -> list[float]:
    """`kind`: (apiVersion, kind) of what `ready` is asked about."""
    names = [d["metadata"]["name"] for d in documents]
    resource = client.resources.get(api_version=kind[0], kind=kind[1])
    clock = ReadyClock(client, resource, namespace, ready)
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
    started = time.monotonic()
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=listing)
    clock.wait(names)
    return [clock.ready_at[name] - started for name in names]


def percentiles(seconds: list[float]) -> dict[str, float]:
    if len(seconds) == 1:
        return {"p50": seconds[0] * 1000, "p95": seconds[0] * 1000}
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return {"p50": cuts[49] * 1000, "p95": cuts[94] * 1000}


def latency_round(
    cluster: TestCluster, client: DynamicClient, count: int, repeats: int, round_id: str
) -> dict[str, Any]:
    """Alternate ChatService and bare-Deployment batches so drift hits both alike."""
    samples: dict[str, list[float]] = {"chatservice": [], "deployment": []}
    for repeat in range(repeats):
        order = ("chatservice", "deployment")
        for kind in order if repeat % 2 == 0 else reversed(order):
            namespace = f"bench-{round_id}-{kind}-{repeat}"
            cluster.kubectl("create", "namespace", namespace)
            names = [f"svc-{i}" for i in range(count)]
            if kind == "chatservice":
                docs = chat_services(names)
                times = apply_and_time(
                    cluster,
                    client,
                    namespace,
                    docs,
                    CHAT_SERVICES,
                    lambda b: has_condition(b, "Ready"),
                )
            else:
                docs = bare_deployments(names, namespace)
                times = apply_and_time(
                    cluster,
                    client,
                    namespace,
                    docs,
                    DEPLOYMENTS,
                    lambda b: has_condition(b, "Available"),
                )
            samples[kind] += times
            cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    cs, bare = percentiles(samples["chatservice"]), percentiles(samples["deployment"])
    return {
        "count": count,
        "repeats": repeats,
        "chatservice_ms": cs,
        "deployment_ms": bare,
        "ratio_p50": cs["p50"] / bare["p50"],
        "ratio_p95": cs["p95"] / bare["p95"],
    }


def memory_round(
    cluster: TestCluster, client: DynamicClient, operator: OperatorProcess, count: int
) -> dict[str, Any]:
    process = psutil.Process(operator.pid)
    idle = process.memory_info().rss
    namespace = "bench-memory"
    cluster.kubectl("create", "namespace", namespace)
    apply_and_time(
        cluster,
        client,
        namespace,
        chat_services([f"svc-{i}" for i in range(count)]),
        CHAT_SERVICES,
        lambda b: has_condition(b, "Ready"),
    )
    time.sleep(10)  # let follow-up events (status writes, child updates) settle
    managing = process.memory_info().rss
    return {
        "count": count,
        "idle_rss_mib": idle / 2**20,
        "managing_rss_mib": managing / 2**20,
        "per_chatservice_kib": (managing - idle) / count / 1024,
    }


def summary(result: dict[str, Any]) -> str:
    lines = [
        "| ChatServices at once | apply→Ready p50 / p95 (ms) "
        "| bare Deployment apply→Available p50 / p95 (ms) | ratio p50 / p95 |",
        "|---|---|---|---|",
    ]
    for row in result["latency"]:
        cs, bare = row["chatservice_ms"], row["deployment_ms"]
        lines.append(
            f"| {row['count']} (x{row['repeats']}) | {cs['p50']:.0f} / {cs['p95']:.0f} | "
            f"{bare['p50']:.0f} / {bare['p95']:.0f} | "
            f"{row['ratio_p50']:.2f} / {row['ratio_p95']:.2f} |"
        )
    memory = result["memory"]
    lines.append(
        f"\nOperator RSS: {memory['idle_rss_mib']:.1f} MiB idle, "
        f"{memory['managing_rss_mib']:.1f} MiB managing {memory['count']} ChatServices "
        f"({memory['per_chatservice_kib']:.0f} KiB each)."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--repeats", type=int, default=10, help="batches of one ChatService")
    parser.add_argument("--memory-count", type=int, default=200)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="rillet-bench-cluster-"))
    with TestCluster(workdir, crds=(ROOT / "crds",)) as cluster:
        operator = OperatorProcess(cluster, cluster.logs / "operator.log")
        operator.start()
        api = new_client_from_config(str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
        client = DynamicClient(api)  # type: ignore[no-untyped-call]
        try:
            result = {
                "latency": [
                    latency_round(cluster, client, 1, args.repeats, "one"),
                    latency_round(cluster, client, 50, 2, "fifty"),
                ],
                "memory": memory_round(cluster, client, operator, args.memory_count),
            }
        finally:
            operator.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "operator.json").write_text(json.dumps(result, indent=2))
    (args.out / "operator.md").write_text(summary(result) + "\n")
    print(summary(result))


if __name__ == "__main__":
    main()
