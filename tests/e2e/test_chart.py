"""The Helm chart as a platform engineer uses it: the real helm and kubectl against a
control plane of its own (no CRD installed beforehand, so the chart installs it), and the
operator run with the chart's ServiceAccount token, not admin credentials, which proves
the chart's RBAC is enough and no wider than it says. The operator pod itself never runs
here (KWOK fakes pods), so `rillet operator` runs as a local process with the command and
environment of the Deployment the chart installed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis.exceptions import OutOfMemoryError

from rillet_operator import builders
from rillet_operator.autoscaling import ACTIVE_STREAMS, LATENCY_WINDOW, TTFT_P95
from rillet_operator.meta import ChatService
from rillet_runtime.events import CheckpointCorrupt
from rillet_runtime.llm.errors import classify_error
from rillet_runtime.metrics import STATE_ERRORS
from rillet_runtime.version import version
from testcluster import TestCluster, build
from testcluster.operator import OperatorProcess
from tests.e2e.kube import EXAMPLES, apply_example, condition, wait_ready
from tests.support.promql import parse_errors

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "rillet"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
K8S_VERSION = "v1.37.2"
OWN_REGISTRY = "registry.example/rillet"  # where a user pushed the image they built


@pytest.fixture(scope="module")
def bare_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    """Only the Prometheus Operator's PodMonitor and PrometheusRule CRDs, which the chart
    may use, are there."""
    bin_dir = build()
    workdir = tmp_path_factory.mktemp("chart-cluster")
    with TestCluster(workdir, bin_dir=bin_dir, crds=(bin_dir.parent / "crds",)) as cluster:
        yield cluster


def render(cluster: TestCluster, values: Path, namespace: str) -> list[dict[str, Any]]:
    out = cluster.helm(
        "template",
        "rillet",
        str(CHART),
        "-n",
        namespace,
        "-f",
        str(values),
        "--kube-version",
        K8S_VERSION,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("values", CI_VALUES, ids=[v.stem for v in CI_VALUES])
def test_lint_is_clean(bare_cluster: TestCluster, values: Path) -> None:
    done = bare_cluster.helm("lint", "--strict", str(CHART), "-f", str(values))
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=[v.stem for v in CI_VALUES])
def test_every_rendered_object_is_accepted_by_the_api_server(
    bare_cluster: TestCluster, values: Path
) -> None:
    documents = render(bare_cluster, values, "rillet-system")
    names = {d["metadata"].get("namespace") for d in documents} - {None}
    for namespace in sorted(names):  # a dry run still needs the namespace to exist
        bare_cluster.kubectl("create", "namespace", namespace, check=False)
    for document in documents:  # one by one, so a failure names its object
        done = bare_cluster.kubectl(
            "apply",
            "--server-side",
            "--dry-run=server",
            "--force-conflicts",
            "-f",
            "-",
            input=json.dumps(document),
            check=False,
        )
        kind, name = document["kind"], document["metadata"]["name"]
        assert done.returncode == 0, f"{kind} {name}: {done.stderr}"
        assert len(name) <= 63


def test_adapter_rules_serve_the_metrics_the_hpas_scale_on(bare_cluster: TestCluster) -> None:
    documents = render(bare_cluster, CHART / "ci" / "autoscaling-values.yaml", "rillet-system")
    rules_map = next(d for d in documents if d["metadata"]["name"].endswith("-adapter-rules"))
    rules = yaml.safe_load(rules_map["data"]["config.yaml"])["rules"]
    assert {rule["name"]["as"] for rule in rules} == {ACTIVE_STREAMS, TTFT_P95}
    ttft_query = next(r["metricsQuery"] for r in rules if r["name"]["as"] == TTFT_P95)
    assert f"[{LATENCY_WINDOW}]" in ttft_query
    operator = next(d for d in documents if d["kind"] == "Deployment")
    container = operator["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RILLET_PROMETHEUS_URL"] == "http://prometheus-operated.monitoring.svc:9090"


def test_the_chatservice_pod_monitor_scrapes_the_pods_metrics_port(
    bare_cluster: TestCluster,
) -> None:
    """The chart's PodMonitor and the operator's pods agree: its selector picks the pods and
    it scrapes their `metrics` port (gunicorn's master), which the Service does not expose."""
    documents = render(bare_cluster, CHART / "ci" / "autoscaling-values.yaml", "rillet-system")
    monitor = next(
        d
        for d in documents
        if d["kind"] == "PodMonitor" and d["metadata"]["name"].endswith("-chatservices")
    )
    document = yaml.safe_load((EXAMPLES / "demo.yaml").read_text())
    metadata = {**document["metadata"], "namespace": "team-a", "uid": "u"}
    cs = ChatService.from_body({"metadata": metadata, "spec": document["spec"]})
    pod = builders.deployment(cs)["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    ports = {p["name"] for p in container["ports"]}
    scraped = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    assert scraped == {"metrics"} <= ports
    service_ports = {p["targetPort"] for p in builders.service(cs)["spec"]["ports"]}
    assert service_ports == {"http"}


def test_the_state_alerts_fire_on_the_state_errors_the_runtime_counts(
    bare_cluster: TestCluster,
) -> None:
    """Off by default (no PrometheusRule CRD needed); on, its alerts read the counter the
    runtime exports, by the reasons the runtime gives, any increase firing, grouped by the
    label the ChatService PodMonitor adds; Prometheus' parser takes every expression, and
    the annotations keep their templating for Prometheus, not Helm. (The API server checks
    the object against the real CRD in the dry run above.)"""
    defaults = render(bare_cluster, CHART / "ci" / "default-values.yaml", "rillet-system")
    assert not [d for d in defaults if d["kind"] == "PrometheusRule"]

    documents = render(bare_cluster, CHART / "ci" / "namespaces-values.yaml", "rillet-system")
    (rule,) = [d for d in documents if d["kind"] == "PrometheusRule"]
    assert rule["metadata"]["labels"]["release"] == "prometheus"  # for a ruleSelector
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    counter = STATE_ERRORS.describe()[0].name + "_total"
    reasons = {
        "RilletStateStoreFull": classify_error(OutOfMemoryError("OOM")).code,
        "RilletStateCorrupt": classify_error(CheckpointCorrupt("t", "", "c", "x", "y")).code,
    }
    assert reasons == {"RilletStateStoreFull": "state_full", "RilletStateCorrupt": "state_corrupt"}
    assert set(alerts) == set(reasons)
    for name, reason in reasons.items():
        alert = alerts[name]
        expr = " ".join(alert["expr"].split())
        assert f'increase({counter}{{reason="{reason}"}}[' in expr
        assert expr.startswith("sum by (namespace, chatservice)")
        assert expr.endswith("> 0")
        assert alert["labels"]["team"] == "chat"  # ruleLabels
        assert "{{ $labels.chatservice }}" in alert["annotations"]["summary"]
        assert "docs/state.md#" in alert["annotations"]["runbook_url"]
    assert alerts["RilletStateStoreFull"]["labels"]["severity"] == "critical"
    assert parse_errors([alert["expr"] for alert in alerts.values()]) == {}


def deployed_operator(cluster: TestCluster, namespace: str, release: str) -> dict[str, Any]:
    deployments = cluster.get_json(
        "-n", namespace, "deployments", "-l", f"app.kubernetes.io/instance={release}"
    )["items"]
    assert len(deployments) == 1
    container: dict[str, Any] = deployments[0]["spec"]["template"]["spec"]["containers"][0]
    return container


def operator_as_deployed(
    cluster: TestCluster, namespace: str, release: str, account: str
) -> OperatorProcess:
    """`rillet operator` with the Deployment's environment and the ServiceAccount's token."""
    container = deployed_operator(cluster, namespace, release)
    assert container["command"][:2] == ["rillet", "operator"]
    env = {e["name"]: e.get("value", "") for e in container["env"]}  # "" is omitted
    kubeconfig = cluster.service_account_kubeconfig(namespace, account)
    log = cluster.logs / f"operator-{release}.log"
    return OperatorProcess(cluster, log, kubeconfig=kubeconfig, env=env)


def pod_image(cluster: TestCluster, namespace: str, name: str) -> str:
    deployment = cluster.get_json("-n", namespace, "deployment", name)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    image: str = container["image"]
    return image


def can_i(cluster: TestCluster, kubeconfig: Path, *args: str) -> bool:
    done = cluster.run("kubectl", "auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
    return done.stdout.strip() == "yes"


def test_install_into_two_namespaces_upgrade_and_uninstall(bare_cluster: TestCluster) -> None:
    """The image from the user's own registry: the operator runs it, and so does every
    ChatService without spec.image, onto the upgraded image after a `helm upgrade`."""
    cluster = bare_cluster
    for namespace in ("team-a", "team-b", "team-c"):
        cluster.kubectl("create", "namespace", namespace, check=False)
    installed = cluster.helm(
        "install",
        "rillet",
        str(CHART),
        "-n",
        "rillet-system",
        "--create-namespace",
        "--set",
        "watch.scope=namespaces",
        "--set",
        "watch.namespaces={team-a,team-b}",
        "--set",
        f"image.repository={OWN_REGISTRY}",
        "--wait",
        "--timeout",
        "120s",
    )
    notes = installed.stdout.split("NOTES:", 1)[1]  # the next steps, for these namespaces
    assert "these namespaces: team-a,team-b" in notes
    assert "kubectl -n team-a apply -f docs/examples/demo.yaml" in notes
    # The chart installed the CRD; the operator's pod is Ready (KWOK), so is its rollout.
    cluster.kubectl("get", "crd", "chatservices.rillet.dev")
    cluster.kubectl("rollout", "status", "-n", "rillet-system", "deployment/rillet")

    operator = operator_as_deployed(cluster, "rillet-system", "rillet", "rillet")
    assert operator.env["RILLET_OPERATOR_NAMESPACES"] == "team-a,team-b"
    own_image = f"{OWN_REGISTRY}:{version()}"  # the tag: the chart's appVersion
    assert deployed_operator(cluster, "rillet-system", "rillet")["image"] == own_image
    assert operator.env["RILLET_OPERATOR_DEFAULT_IMAGE"] == own_image
    operator.start()
    try:
        for namespace in ("team-a", "team-c"):
            cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "demo.yaml"))
        wait_ready(cluster, "team-a", "demo")
        demo = cluster.get_json("-n", "team-a", "chat", "demo")
        assert "image" not in demo["spec"]  # nothing stored that would outlive an upgrade
        assert pod_image(cluster, "team-a", "demo") == demo["status"]["image"] == own_image
        # Outside its namespaces the operator neither acts nor may act.
        assert not cluster.get_json("-n", "team-c", "chat", "demo").get("status")
        kubeconfig = Path(operator.env["KUBECONFIG"])
        assert can_i(cluster, kubeconfig, "patch", "deployments", "-n", "team-a")
        assert not can_i(cluster, kubeconfig, "patch", "deployments", "-n", "team-c")
        assert not can_i(cluster, kubeconfig, "get", "secrets", "-n", "kube-system")
        # Secrets: by name only (get), never enumerated (list, watch), in its namespaces too.
        assert can_i(cluster, kubeconfig, "get", "secrets", "-n", "team-a")
        assert not can_i(cluster, kubeconfig, "list", "secrets", "-n", "team-a")
        assert not can_i(cluster, kubeconfig, "watch", "secrets", "-n", "team-a")
        assert can_i(cluster, kubeconfig, "patch", "networkpolicies", "-n", "team-a")
        assert not can_i(cluster, kubeconfig, "list", "nodes")
        assert not can_i(cluster, kubeconfig, "create", "clusterrolebindings")
        assert not can_i(cluster, kubeconfig, "delete", "deployments", "-n", "team-a")
        denied = cluster.run(
            "kubectl", "get", "secrets", "-n", "team-c", kubeconfig=kubeconfig, check=False
        )
        assert "Forbidden" in denied.stderr
    finally:
        operator.stop()
    assert not re.search(r"\b403\b|Forbidden", operator.log_tail(chars=10**7)), operator.log_tail()

    # helm upgrade: a third namespace, more memory and another image (as a new version's
    # appVersion would be); the rollout, the new Role and the ChatServices' pods follow.
    cluster.helm(
        "upgrade",
        "rillet",
        str(CHART),
        "-n",
        "rillet-system",
        "--reuse-values",
        "--set",
        "watch.namespaces={team-a,team-b,team-c}",
        "--set",
        "resources.limits.memory=512Mi",
        "--set",
        "image.tag=next",
        "--wait",
        "--timeout",
        "120s",
    )
    container = deployed_operator(cluster, "rillet-system", "rillet")
    assert container["resources"]["limits"]["memory"] == "512Mi"
    assert {"name": "RILLET_OPERATOR_NAMESPACES", "value": "team-a,team-b,team-c"} in container[
        "env"
    ]
    operator = operator_as_deployed(cluster, "rillet-system", "rillet", "rillet")
    upgraded_image = f"{OWN_REGISTRY}:next"
    assert container["image"] == operator.env["RILLET_OPERATOR_DEFAULT_IMAGE"] == upgraded_image
    operator.start()
    try:
        wait_ready(cluster, "team-c", "demo")
        assert pod_image(cluster, "team-c", "demo") == upgraded_image
        cluster.kubectl(
            "wait",
            "-n",
            "team-a",
            "chat/demo",
            f"--for=jsonpath={{.status.image}}={upgraded_image}",
            "--timeout=60s",
            timeout=90,
        )
        assert pod_image(cluster, "team-a", "demo") == upgraded_image
    finally:
        operator.stop()
    history_json = cluster.helm("history", "rillet", "-n", "rillet-system", "-o", "json").stdout
    history = json.loads(history_json)
    assert [h["status"] for h in history] == ["superseded", "deployed"]

    # helm uninstall: the operator and its RBAC go; the CRD and every ChatService stay.
    cluster.helm("uninstall", "rillet", "-n", "rillet-system", "--wait")
    leftovers = cluster.get_json(
        "-A",
        "deployments,serviceaccounts,roles,rolebindings",
        "-l",
        "app.kubernetes.io/instance=rillet",
    )
    assert not leftovers["items"]
    cluster.kubectl("get", "crd", "chatservices.rillet.dev")
    for namespace in ("team-a", "team-c"):
        assert condition(cluster.get_json("-n", namespace, "chat", "demo"), "Ready")


def test_cluster_wide_install_with_the_crd_managed_elsewhere(bare_cluster: TestCluster) -> None:
    """crds.install=false: the CRD is applied separately, as the docs say to. Every example
    is reconciled under the chart's ClusterRole, which cannot list or watch a Secret."""
    cluster = bare_cluster
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.helm(
        "install",
        "everywhere",
        str(CHART),
        "-n",
        "ops",
        "--create-namespace",
        "--set",
        "crds.install=false",
        "--wait",
        "--timeout",
        "120s",
    )
    operator = operator_as_deployed(cluster, "ops", "everywhere", "everywhere-rillet")
    assert operator.env["RILLET_OPERATOR_NAMESPACES"] == ""
    account = "system:serviceaccount:ops:everywhere-rillet"
    for verb in ("list", "watch"):  # as an admin asks about the account, anywhere
        asked = cluster.kubectl(
            "auth", "can-i", verb, "secrets", "--all-namespaces", "--as", account, check=False
        )
        assert asked.stdout.strip() == "no", asked.stdout + asked.stderr
    operator.start()
    try:
        reconciled = []
        for example in sorted(EXAMPLES.glob("*.yaml")):
            namespace = f"anywhere-{example.stem}"
            cluster.kubectl("create", "namespace", namespace)
            reconciled.append(apply_example(cluster, namespace, example))
        for namespace, name in reconciled:
            wait_ready(cluster, namespace, name)
            body = cluster.get_json("-n", namespace, "chat", name)
            assert condition(body, "Degraded")["status"] == "False", body["status"]
            assert cluster.get_json("-n", namespace, "networkpolicy", name)
        kubeconfig = Path(operator.env["KUBECONFIG"])
        assert not can_i(cluster, kubeconfig, "list", "secrets", "--all-namespaces")
        assert not can_i(cluster, kubeconfig, "create", "clusterrolebindings")
        assert not can_i(cluster, kubeconfig, "delete", "namespaces")
        assert not can_i(cluster, kubeconfig, "create", "pods", "-n", "anywhere-demo")
    finally:
        operator.stop()
    assert "Forbidden" not in operator.log_tail(chars=10**7), operator.log_tail()
    cluster.helm("uninstall", "everywhere", "-n", "ops", "--wait")
    assert cluster.kubectl("get", "clusterrole", "everywhere-rillet", check=False).returncode != 0
