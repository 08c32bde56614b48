"""`spec.redis.external.sentinel` on a real kube-apiserver: the CEL rules and the schema
refuse what cannot work at `kubectl apply`, with their message; a Sentinel set without a
URL is accepted (the example with one is served in test_operator.py)."""

from __future__ import annotations

from typing import Any

import yaml

from testcluster import TestCluster
from tests.e2e.kube import manifest, wait_ready

SENTINEL = {"masterName": "mymaster", "addresses": ["sentinel-0.data.svc:26379"]}


def test_bad_sentinel_specs_are_refused_with_their_message(
    cluster: TestCluster, namespace: str
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"url": "redis://r:6379", "cluster": True, "sentinel": SENTINEL},
            "redis.external.sentinel and redis.external.cluster exclude each other",
        ),
        (
            {
                "url": "redis:///0",
                "urlSecretRef": {"name": "s", "key": "url"},
                "sentinel": SENTINEL,
            },
            "(with redis.external.sentinel: at most one)",
        ),
        ({"sentinel": {"masterName": "m", "addresses": []}}, "spec.redis.external.sentinel"),
        (
            {"sentinel": {"masterName": "m", "addresses": ["two words"]}},
            "spec.redis.external.sentinel.addresses[0]",
        ),
    ]
    for external, message in cases:
        spec = {"redis": {"external": external}}
        done = cluster.kubectl(
            "apply", "-n", namespace, "-f", "-", input=manifest("bad", **spec), check=False
        )
        assert done.returncode != 0, external
        assert message in done.stderr, done.stderr
    assert not cluster.get_json("-n", namespace, "chatservices")["items"]


def test_a_sentinel_set_without_a_url_reaches_the_pods_settings(
    cluster: TestCluster, namespace: str
) -> None:
    spec = {"replicas": 1, "redis": {"external": {"sentinel": SENTINEL}}}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("ha", **spec))
    wait_ready(cluster, namespace, "ha")
    config = cluster.get_json("-n", namespace, "configmap", "ha-settings")
    state = yaml.safe_load(config["data"]["settings.yaml"])["state"]
    assert state["redis_sentinel"] == {
        "master_name": "mymaster",
        "addresses": ["sentinel-0.data.svc:26379"],
        "failover_seconds": 5.0,  # the CRD's default, filled in by the API server
    }
    container = cluster.get_json("-n", namespace, "deployment", "ha")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert not [e for e in container.get("env", []) if e["name"].startswith("RILLET_STATE")]
