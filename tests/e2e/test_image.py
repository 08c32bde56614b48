"""The container image's contract, without a container engine: the wheel installed into a
fresh virtual environment the way the Dockerfile does (pip wheel, then pip install with
constraints.txt), owned by root and run as the image's non-root user 10001 with only a
scratch directory writable, like a pod with a read-only root filesystem. Then the exact
commands the operator's Deployment (`rillet serve`, preStop `rillet drain`) and the chart's
Deployment (`rillet operator ...`) run.

Run as root (as CI does), the user switch makes the install read-only for the app; as
another user the app runs as that user and the read-only check is weaker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from httpx_sse import connect_sse

from rillet_operator import builders
from rillet_operator.meta import ChatService
from testcluster import TestCluster
from testcluster.operator import OperatorProcess
from tests.e2e.test_operator import EXAMPLES, manifest, wait_for, wait_ready
from tests.support.processes import free_port, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]
IMAGE_UID = 10001
AS_IMAGE_USER = (
    ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups", "--"]
    if os.geteuid() == 0
    else []
)


class Image:
    """An installed image root: /opt/rillet (read-only to the app) and /tmp (writable)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.venv = root / "opt" / "rillet"
        self.index = self.venv / "index"  # the Dockerfile's `rillet ingest` writes it
        self.tmp = root / "tmp"

    def env(self, **extra: str) -> dict[str, str]:
        """The image's ENV lines, nothing of the test process's environment."""
        return {
            "PATH": f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "HOME": "/nonexistent",
            "TMPDIR": str(self.tmp),
            **extra,
        }

    def command(self, *args: str) -> list[str]:
        return [*AS_IMAGE_USER, str(self.venv / "bin" / args[0]), *args[1:]]


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    root = Path(tempfile.mkdtemp(prefix="rillet-image-"))
    root.chmod(0o755)
    wheels = root / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)], check=True)
    image = Image(root)
    # The image's Python is a plain CPython 3.11; Debian's stands in for python:3.11-slim.
    python = shutil.which("python3.11", path="/usr/bin:/usr/local/bin") or sys.executable
    subprocess.run([python, "-m", "venv", "--without-pip", str(image.venv)], check=True)
    subprocess.run(
        [
            *pip,
            "--python",
            str(image.venv / "bin" / "python"),
            "install",
            "--constraint",
            str(ROOT / "constraints.txt"),
            *(f"{wheel}[chroma]" for wheel in wheels.glob("*.whl")),  # as the Dockerfile
        ],
        check=True,
    )
    bundled_docs = next(image.venv.glob("lib/python*/site-packages/rillet_runtime/_corpus"))
    subprocess.run(
        [
            str(image.venv / "bin" / "rillet"),
            "ingest",
            str(bundled_docs),
            "--index",
            str(image.index),
        ],
        env=image.env(),
        check=True,
    )
    image.tmp.mkdir()
    if AS_IMAGE_USER:
        os.chown(image.tmp, IMAGE_UID, IMAGE_UID)
    yield image
    shutil.rmtree(root, ignore_errors=True)


def test_every_installed_dependency_is_pinned(image: Image) -> None:
    frozen = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(image.venv / "bin" / "python"),
            "freeze",
            "--exclude",
            "rillet",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pinned = {
        line.strip()
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    unpinned = sorted(set(frozen) - pinned)
    assert not unpinned, f"not in constraints.txt (run `make constraints`): {unpinned}"


def test_the_wheel_is_the_product_and_nothing_else(image: Image) -> None:
    """No benchmark harness, test helper or tooling ships: the wheel's modules are exactly
    the two packages' sources (plus the docs corpus the built-in index is made from)."""
    wheel = next((image.root / "wheels").glob("*.whl"))
    modules = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    sources = {
        str(path.relative_to(root))
        for root in (ROOT / "runtime", ROOT / "operator")
        for path in root.glob("rillet_*/**/*.py")
    }
    assert modules == sources
    assert not [m for m in modules if "/bench/" in m or "/tests/" in m]


def test_the_installed_rillet_command_works_outside_the_checkout(image: Image) -> None:
    """`pip install` of the wheel gives a working `rillet` (ingest ran in the fixture)."""
    outputs = {}
    for args in (
        ["--help"],
        ["query", "How do I install Rillet?", "--index", str(image.index)],
        ["render", "-f", str(EXAMPLES / "demo.yaml")],
    ):
        result = subprocess.run(
            image.command("rillet", *args), env=image.env(), cwd="/", capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        outputs[args[0]] = result.stdout
    assert "ingest" in outputs["--help"]
    assert outputs["query"].startswith("1. ")
    assert "kind: Deployment" in outputs["render"]


def test_the_runtime_serves_from_the_rendered_settings_and_drains(image: Image) -> None:
    document = yaml.safe_load((EXAMPLES / "demo.yaml").read_text())
    cs = ChatService.from_body(
        {
            "metadata": {**document["metadata"], "namespace": "default", "uid": "u"},
            "spec": document["spec"],
        }
    )
    settings = image.tmp / "settings.yaml"  # in a pod, the ConfigMap's read-only mount
    settings.write_text(builders.config_map(cs)["data"]["settings.yaml"])
    # In a pod, the operator's first-key Secret mounted whole: root-owned files the pod's
    # group reads.
    api_keys = image.tmp / "api-keys"
    api_keys.mkdir()
    key = "the-first-key"
    for principal, value in builders.first_key_secret(cs, key)["stringData"].items():
        (api_keys / principal).write_text(value)
        (api_keys / principal).chmod(0o440)
        if AS_IMAGE_USER:
            os.chown(api_keys / principal, 0, IMAGE_UID)
    port, metrics_port = free_port(), free_port()
    env = image.env(
        RILLET_SETTINGS_FILE=str(settings),
        RILLET_SERVER__PORT=str(port),  # 8080 in the pod; a free port here
        RILLET_SERVER__METRICS_PORT=str(metrics_port),  # the container's `metrics` port
        RILLET_SERVER__METRICS_DIR=str(image.tmp / "rillet-metrics"),
        RILLET_SERVER__DRAIN_FILE=str(image.tmp / "draining"),
        RILLET_RETRIEVAL__EMBEDDED__PATH=str(image.index),  # /opt/rillet/index in the image
        RILLET_AUTH__API_KEYS__PATH=str(api_keys),  # the Secret's mount point in the pod
    )
    container = builders.deployment(cs)["spec"]["template"]["spec"]["containers"][0]
    log = image.tmp / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            image.command(*container["command"]),
            env=env,
            cwd="/",
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/readyz", server, log)
        question = {"message": "How do I install Rillet?"}
        assert httpx.post(f"{url}/v1/chat", json=question, timeout=30).status_code == 401
        with (
            httpx.Client(timeout=30, headers={"authorization": f"Bearer {key}"}) as client,
            connect_sse(
                client,
                "POST",
                f"{url}/v1/chat/stream",
                json={"message": "How do I install Rillet?"},
            ) as events,
        ):
            received = [(e.event, json.loads(e.data)) for e in events.iter_sse()]
        sources = next(data for name, data in received if name == "sources")["sources"]
        assert sources, "the bundled docs corpus is missing from the wheel"
        assert received[-1][0] == "done"
        # Metrics from gunicorn's master on the port the pod names `metrics`; none on the API's.
        ports = {p["name"] for p in container["ports"]}
        assert ports == {"http", "metrics"}
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert 'rillet_requests_total{endpoint="chat_stream",outcome="completed"} 1.0' in metrics
        assert httpx.get(f"{url}/metrics", timeout=5).status_code == 404

        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[:2] == ["rillet", "drain"]
        subprocess.run(
            image.command("rillet", "drain", "--wait", "0"), env=env, cwd="/", check=True
        )
        # Each worker looks at the drain file at most once a second.
        wait_for(
            "readiness to turn false in every worker",
            lambda: all(httpx.get(f"{url}/readyz", timeout=5).status_code == 503 for _ in range(4)),
            timeout=10,
        )
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def test_the_operator_runs_the_charts_command(
    image: Image, cluster: TestCluster, operator_process: OperatorProcess
) -> None:
    operator_process.stop()  # the image's operator alone manages the test's namespace
    rendered = subprocess.run(
        [
            cluster.bin_dir / "helm",
            "template",
            "rillet",
            ROOT / "charts" / "rillet",
            "--kube-version",
            "v1.37.2",
            "--show-only",
            "templates/deployment.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    command = yaml.safe_load(rendered)["spec"]["template"]["spec"]["containers"][0]["command"]
    health_port, metrics_port = free_port(), free_port()
    command = [
        arg.replace(":8081/", f":{health_port}/").replace("=8080", f"={metrics_port}")
        for arg in command
    ]
    kubeconfig = image.tmp / "kubeconfig"  # in a pod: the ServiceAccount's token
    shutil.copy(cluster.kubeconfig, kubeconfig)
    os.chmod(kubeconfig, 0o644)
    env = image.env(KUBECONFIG=str(kubeconfig), RILLET_OPERATOR_NAMESPACES="image-test")
    cluster.kubectl("create", "namespace", "image-test")
    log = image.tmp / "operator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            image.command(*command),
            env=env,
            cwd="/",
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_ready(f"http://127.0.0.1:{health_port}/healthz", proc, log)
        cluster.kubectl(
            "apply", "-n", "image-test", "-f", "-", input=manifest("from-image", replicas=1)
        )
        wait_ready(cluster, "image-test", "from-image")
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert "rillet_operator_reconciles_total" in metrics
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        cluster.kubectl("delete", "namespace", "image-test", "--wait=false")
