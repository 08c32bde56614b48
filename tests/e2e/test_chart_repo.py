"""The chart as a user gets it from a chart repository: the repository `make chart` writes
(charts/repository.py), served over HTTP on loopback, added with `helm repo add`, installed,
upgraded to a second packaged version and rolled back, with a helm whose repositories and
caches live in the test's own folder (never the user's)."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.version import Version

from charts.repository import CHART, build_repository
from testcluster import TestCluster

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
NAMESPACE = "chart-repo"
# The cluster's CRD is already installed (not by helm, so helm may not own it), and only
# namespaced objects, so nothing this release makes outlives its namespace.
VALUES = {"crds": {"install": False}, "watch": {"scope": "release"}}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """An empty repository folder and the loopback URL it is served at."""
    folder = tmp_path / "repository"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def own_helm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """helm's repositories, index cache and plugins under the test's folder."""
    for kind in ("CONFIG", "CACHE", "DATA"):
        monkeypatch.setenv(f"HELM_{kind}_HOME", str(tmp_path / "helm" / kind.lower()))


def next_patch(version: str) -> str:
    parsed = Version(version)
    return f"{parsed.major}.{parsed.minor}.{parsed.micro + 1}"


def chart_with_more_memory(tmp_path: Path) -> Path:
    """The chart with another default, which the rendered Deployment shows."""
    chart = tmp_path / "next" / CHART.name
    shutil.copytree(CHART, chart)
    values = yaml.safe_load((chart / "values.yaml").read_text())
    values["resources"]["limits"]["memory"] = "384Mi"
    (chart / "values.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    return chart


def release(cluster: TestCluster) -> dict[str, Any]:
    listed = json.loads(cluster.helm("list", "-n", NAMESPACE, "-o", "json").stdout)
    (found,) = [r for r in listed if r["name"] == "rillet"]
    return dict(found)


def operator_deployment(cluster: TestCluster) -> tuple[dict[str, str], dict[str, Any]]:
    """The Deployment's labels and its container."""
    deployment = cluster.get_json("-n", NAMESPACE, "deployment", "rillet")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return deployment["metadata"]["labels"], container


def assert_runs(cluster: TestCluster, version: str, revision: int, memory: str) -> None:
    found = release(cluster)
    assert found["revision"] == str(revision)
    assert found["chart"] == f"rillet-{version}"
    assert found["app_version"] == version
    assert found["status"] == "deployed"
    labels, container = operator_deployment(cluster)
    assert labels["helm.sh/chart"] == f"rillet-{version}"
    assert labels["app.kubernetes.io/version"] == version
    assert container["image"].endswith(f":{version}")  # the image tag defaults to appVersion
    assert container["resources"]["limits"]["memory"] == memory
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RILLET_OPERATOR_NAMESPACES"] == NAMESPACE  # the user's watch.scope, kept


def test_install_upgrade_and_rollback_from_a_chart_repository(
    cluster: TestCluster, served: tuple[Path, str], own_helm_home: None, tmp_path: Path
) -> None:
    folder, url = served
    helm = cluster.bin_dir / "helm"
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(VALUES))
    wait = ("--wait", "--timeout", "120s")

    # As `make chart` writes it: the project's version, URLs relative to the index.
    build_repository(folder, VERSION, helm)
    index = yaml.safe_load((folder / "index.yaml").read_text())
    assert index["entries"]["rillet"][0]["urls"] == [f"rillet-{VERSION}.tgz"]
    cluster.helm("repo", "add", "rillet", url)
    cluster.helm("repo", "update")
    found = json.loads(cluster.helm("search", "repo", "rillet/rillet", "-o", "json").stdout)
    assert [(c["version"], c["app_version"]) for c in found] == [(VERSION, VERSION)]
    readme = cluster.helm("show", "readme", "rillet/rillet").stdout
    assert readme.strip() == (CHART / "README.md").read_text().strip()

    try:
        installed = cluster.helm(
            "install",
            "rillet",
            "rillet/rillet",
            "-n",
            NAMESPACE,
            "--create-namespace",
            "-f",
            str(values),
            *wait,
        )
        assert f"installed in namespace {NAMESPACE}" in installed.stdout
        assert_runs(cluster, VERSION, revision=1, memory="256Mi")

        # A second version in the same repository, its URLs absolute (CHART_REPO_URL).
        upgrade = next_patch(VERSION)
        build_repository(folder, upgrade, helm, chart=chart_with_more_memory(tmp_path), url=url)
        entries = yaml.safe_load((folder / "index.yaml").read_text())["entries"]["rillet"]
        assert {e["version"]: e["urls"] for e in entries} == {
            VERSION: [f"{url}/rillet-{VERSION}.tgz"],
            upgrade: [f"{url}/rillet-{upgrade}.tgz"],
        }
        cluster.helm("repo", "update")
        # The user's values and the new version's defaults (--reuse-values would keep the
        # old version's defaults: 256Mi here).
        cluster.helm(
            "upgrade",
            "rillet",
            "rillet/rillet",
            "-n",
            NAMESPACE,
            "--reset-then-reuse-values",
            *wait,
        )
        assert_runs(cluster, upgrade, revision=2, memory="384Mi")

        cluster.helm("rollback", "rillet", "1", "-n", NAMESPACE, *wait)
        assert_runs(cluster, VERSION, revision=3, memory="256Mi")
        history = json.loads(
            cluster.helm("history", "rillet", "-n", NAMESPACE, "-o", "json").stdout
        )
        assert [(h["chart"], h["status"]) for h in history] == [
            (f"rillet-{VERSION}", "superseded"),
            (f"rillet-{upgrade}", "superseded"),
            (f"rillet-{VERSION}", "deployed"),
        ]
    finally:
        cluster.helm("uninstall", "rillet", "-n", NAMESPACE, "--wait", check=False)
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
