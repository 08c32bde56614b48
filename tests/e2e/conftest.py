"""One real control plane and one real operator process for the e2e session."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from testcluster import TestCluster
from testcluster.metrics_adapter import MetricsAdapter
from testcluster.operator import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
_namespaces = itertools.count()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    with TestCluster(tmp_path_factory.mktemp("cluster"), crds=(ROOT / "crds",)) as started:
        yield started


@pytest.fixture(scope="session")
def metrics(cluster: TestCluster) -> Iterator[MetricsAdapter]:
    """Custom metrics for the HPA controller and a Prometheus API for the operator, with
    values tests set (see testcluster/metrics_adapter.py)."""
    adapter = MetricsAdapter(cluster).start()
    adapter.register()
    yield adapter
    adapter.stop()


@pytest.fixture(scope="session")
def operator_process(cluster: TestCluster, metrics: MetricsAdapter) -> Iterator[OperatorProcess]:
    env = {
        "RILLET_PROMETHEUS_URL": metrics.prometheus_url,
        "RILLET_OPERATOR_OBSERVE_SECONDS": "1",
        "RILLET_OPERATOR_ADAPT_SECONDS": "2",
    }
    process = OperatorProcess(cluster, cluster.logs / "operator.log", env=env)
    yield process
    process.stop()


@pytest.fixture
def operator(operator_process: OperatorProcess) -> OperatorProcess:
    """The operator, running (started again if an earlier test stopped it)."""
    if operator_process.proc is None or operator_process.proc.poll() is not None:
        operator_process.start()
    return operator_process


@pytest.fixture
def namespace(cluster: TestCluster, operator: OperatorProcess) -> Iterator[str]:
    """A namespace of the test's own, with the operator running."""
    name = f"e2e-{next(_namespaces)}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")
