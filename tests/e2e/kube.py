"""What the e2e tests share: waiting on a real cluster and reading ChatServices back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from testcluster import TestCluster
from tests.support.processes import wait_for as wait_for  # re-exported for the e2e tests

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
GROUP = "rillet.dev"


def apply_example(cluster: TestCluster, namespace: str, example: Path) -> tuple[str, str]:
    """A documented example, as written, its Secrets made as its comments say: its
    (namespace, name)."""
    document = yaml.safe_load(example.read_text())
    target = document["metadata"].get("namespace", namespace)
    if target != namespace:
        cluster.kubectl("create", "namespace", target, check=False)
    for line in example.read_text().splitlines():
        if "create secret generic" in line:
            args = line.split("kubectl", 1)[1].split()
            cluster.kubectl(*args, *(["-n", target] if "-n" not in args else []), check=False)
    cluster.kubectl("apply", "-n", target, "-f", str(example))
    return target, document["metadata"]["name"]


def condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [c for c in body.get("status", {}).get("conditions", []) if c["type"] == kind]
    return found[0] if found else {}


def wait_ready(cluster: TestCluster, namespace: str, name: str, timeout: int = 180) -> None:
    cluster.kubectl(
        "wait",
        "-n",
        namespace,
        f"chatservice/{name}",
        "--for=condition=Ready",
        f"--timeout={timeout}s",
        timeout=timeout + 30,
    )


def chat_service(cluster: TestCluster, namespace: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = cluster.get_json("-n", namespace, "chatservice", name)
    return body


def manifest(name: str, **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "ChatService",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def wait_condition(
    cluster: TestCluster, namespace: str, name: str, kind: str, status: str
) -> dict[str, Any]:
    """The ChatService, read back once its `kind` condition has `status`."""

    def reached() -> dict[str, Any] | None:
        body = chat_service(cluster, namespace, name)
        return body if condition(body, kind).get("status") == status else None

    found: dict[str, Any] = wait_for(f"{name}: {kind}={status}", reached)
    return found
