"""The container image itself, built from the project's Dockerfile by `release/image.sh`
(what `make image` runs) and run: buildah builds it on a Debian bookworm base made from
Debian's packages (no registry of images is reached here) and runs its commands in a
container of it with chroot isolation, as the image's user 10001, on the host's network,
so the loopback ports the commands listen on are the test's. The settings and API keys
are mounted where the operator's Deployment mounts them. Then the exact commands the
operator's Deployment (`rillet serve`, preStop `rillet drain`) and the chart's Deployment
(`rillet operator ...`) run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from httpx_sse import connect_sse

from rillet_operator import builders
from rillet_operator.meta import ChatService
from rillet_runtime.version import version
from testcluster import TestCluster
from testcluster.operator import OperatorProcess
from tests.e2e.kube import EXAMPLES, manifest, wait_for, wait_ready
from tests.support.processes import free_port, stop_process_group, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]
IMAGE_USER = "10001:10001"
VERSION = version()
CACHE = Path(  # as testcluster/build.sh
    os.environ.get("RILLET_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rillet"
)
# The first test also waits for the build: minutes cold (the Debian base, the wheels).
pytestmark = pytest.mark.timeout(1200)


class Image:
    """A built image and one working container of it, in buildah's store under the cache."""

    def __init__(self, tags: list[str], sbom: Path, store: Path) -> None:
        self.tag, self.revision_tag = tags
        self.sbom = sbom
        self.buildah = [
            "buildah",
            "--root",
            str(store / "storage"),
            "--runroot",
            str(store / "run"),
            "--storage-driver",
            "vfs",
        ]
        self.container = self.output("from", "--quiet", "--pull=never", self.tag).strip()

    def output(self, *args: str) -> str:
        return subprocess.run(
            [*self.buildah, *args], capture_output=True, text=True, check=True
        ).stdout

    def command(
        self,
        *args: str,
        user: str = IMAGE_USER,
        env: dict[str, str] | None = None,
        mounts: dict[Path, str] | None = None,
    ) -> list[str]:
        """`args` run in the container: the image's environment plus `env`, host paths
        bound read-only where `mounts` says."""
        return [
            *self.buildah,
            "run",
            "--isolation",
            "chroot",
            "--user",
            user,
            *(f"--env={name}={value}" for name, value in (env or {}).items()),
            *(f"--volume={host}:{path}:ro" for host, path in (mounts or {}).items()),
            self.container,
            "--",
            *args,
        ]

    def run(self, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args, **options), capture_output=True, text=True)

    def python(self, code: str) -> str:
        """What `code` prints, run by the image's Python as its user."""
        done = self.run("python3", "-c", code)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def inspect(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.output("inspect", "--type", "image", self.tag))
        return found

    def close(self) -> None:
        subprocess.run([*self.buildah, "rm", self.container], capture_output=True)


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    if not (shutil.which("buildah") and shutil.which("mmdebstrap")):
        pytest.fail("the image test needs buildah and mmdebstrap: `make image-tools` installs them")
    store = CACHE / "containers"
    out = Path(tempfile.mkdtemp(prefix="rillet-image-"))
    built = subprocess.run(
        ["bash", str(ROOT / "release" / "image.sh")],
        env={
            **os.environ,
            "ENGINE": "buildah",
            "BASE": "debian",
            "BUILDAH_ROOT": str(store),
            "IMAGE": f"localhost/rillet:{VERSION}",
            "OUT": str(out),
        },
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    *tags, sbom = built.stdout.split()
    made = Image(tags, Path(sbom), store)
    yield made
    made.close()
    shutil.rmtree(out, ignore_errors=True)


def pins() -> dict[str, str]:
    """constraints.txt as {normalized name: version}."""
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pairs = (line.split("==") for line in lines if "==" in line and not line.startswith("#"))
    return {normalized(name): version.strip() for name, version in pairs}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_installed_package_is_pinned_and_in_the_sbom(image: Image) -> None:
    listed = image.python(
        "import importlib.metadata as m, json;"
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    installed = {normalized(name): v for name, v in json.loads(listed).items()}
    assert installed.pop("rillet") == VERSION
    unpinned = {name: v for name, v in installed.items() if pins().get(name) != v}
    assert not unpinned, f"not as in constraints.txt (run `make constraints`): {unpinned}"

    sbom = json.loads(image.sbom.read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    assert (sbom["metadata"]["component"]["name"], sbom["metadata"]["component"]["version"]) == (
        "rillet",
        VERSION,
    )
    components = {normalized(c["name"]): c["version"] for c in sbom["components"]}
    assert components == installed
    assert all(c["purl"].startswith("pkg:pypi/") for c in sbom["components"])


def test_the_installed_package_is_the_product_and_nothing_else(image: Image) -> None:
    """No benchmark harness, test helper or tooling ships: the installed modules are exactly
    the two packages' sources (plus the docs corpus the built-in index is made from)."""
    listed = image.python(
        "import importlib.metadata as m;"
        "print('\\n'.join(str(f) for f in m.files('rillet') if f.suffix == '.py'))"
    )
    sources = {
        str(path.relative_to(root))
        for root in (ROOT / "runtime", ROOT / "operator")
        for path in root.glob("rillet_*/**/*.py")
    }
    assert set(listed.split()) == sources


def test_the_image_is_the_app_alone_as_a_non_root_user(image: Image) -> None:
    """No pip, no compiler, no package caches or shell history; labelled with the one
    version and the revision it was built from."""
    assert image.run("id", "-u").stdout.strip() == "10001"
    leftovers = image.run(
        "sh",
        "-c",
        "command -v pip pip3 gcc cc g++ make apt-get;"
        " python3 -m pip --version 2>/dev/null;"
        " ls -A /root/.cache /root/.bash_history /root/.python_history /wheels /src"
        " /var/cache/apt/archives/*.deb /var/lib/apt/lists/*_Packages 2>/dev/null;"
        " find /opt/rillet -name '*.pyc' -newer /opt/rillet/sbom.cdx.json | head -1",
        user="0:0",
    )
    # apt-get is Debian's own and stays with its base; nothing else may answer.
    assert leftovers.stdout.split() in ([], ["/usr/bin/apt-get"]), leftovers.stdout

    config = image.inspect()["OCIv1"]["config"]
    assert config["User"] == IMAGE_USER
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    revision = labels["org.opencontainers.image.revision"]
    assert image.revision_tag.endswith(f":{revision}")
    assert f"RILLET_REVISION={revision}" in config["Env"]
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith("https://")

    version = image.run("rillet", "--version")
    assert version.returncode == 0, version.stderr
    assert f"rillet {VERSION} (revision {revision})" in version.stdout
    help_text = image.run("rillet", "operator", "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "--prometheus-url" in help_text.stdout

    (listed,) = json.loads(image.output("images", "--json", image.tag))
    layers = len(image.inspect()["OCIv1"]["rootfs"]["diff_ids"])
    print(f"\nimage {image.tag}: {listed['size']} unpacked, {layers} layers")


def test_the_rillet_command_works_in_the_image(image: Image) -> None:
    """The built-in index (the Dockerfile's `rillet ingest`) answers; `render` reads a
    manifest from a mounted folder."""
    query = image.run("rillet", "query", "How do I install Rillet?", "--index", "/opt/rillet/index")
    assert query.returncode == 0, query.stderr
    assert query.stdout.startswith("1. ")
    render = image.run(
        "rillet", "render", "-f", "/examples/demo.yaml", mounts={EXAMPLES: "/examples"}
    )
    assert render.returncode == 0, render.stderr
    assert "kind: Deployment" in render.stdout


def test_the_runtime_serves_from_the_rendered_settings_and_drains(
    image: Image, tmp_path: Path
) -> None:
    document = yaml.safe_load((EXAMPLES / "demo.yaml").read_text())
    cs = ChatService.from_body(
        {
            "metadata": {**document["metadata"], "namespace": "default", "uid": "u"},
            "spec": document["spec"],
        }
    )
    deployment = builders.deployment(cs)["spec"]["template"]["spec"]
    container = deployment["containers"][0]
    mount_path = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    # The ConfigMap and the first-key Secret, mounted read-only as in the pod: the Secret's
    # files root-owned, read by the pod's group.
    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "settings.yaml").write_text(builders.config_map(cs)["data"]["settings.yaml"])
    api_keys = tmp_path / "api-keys"
    api_keys.mkdir()
    key = "the-first-key"
    for principal, value in builders.first_key_secret(cs, key)["stringData"].items():
        (api_keys / principal).write_text(value)
        (api_keys / principal).chmod(0o440)
        os.chown(api_keys / principal, 0, 10001)
    port, metrics_port = free_port(), free_port()
    env = {
        **{e["name"]: e["value"] for e in container["env"] if "value" in e},
        "RILLET_SERVER__HOST": "127.0.0.1",  # the host's network: loopback, free ports
        "RILLET_SERVER__PORT": str(port),
        "RILLET_SERVER__METRICS_PORT": str(metrics_port),
    }
    # Debian's /var/run is a link to /run, which buildah does not follow in a bind's target
    # (a kubelet does): the keys are bound where the link leads.
    keys_path = re.sub(r"^/var/run/", "/run/", mount_path["api-keys"])
    mounts = {settings: mount_path["settings"], api_keys: keys_path}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            image.command(*container["command"], env=env, mounts=mounts),
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
            connect_sse(client, "POST", f"{url}/v1/chat/stream", json=question) as events,
        ):
            received = [(e.event, json.loads(e.data)) for e in events.iter_sse()]
        sources = next(data for name, data in received if name == "sources")["sources"]
        assert sources, "the built-in index is missing from the image"
        assert received[-1][0] == "done"
        # Metrics from gunicorn's master on the port the pod names `metrics`; none on the API's.
        assert {p["name"] for p in container["ports"]} == {"http", "metrics"}
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert 'rillet_requests_total{endpoint="chat_stream",outcome="completed"} 1.0' in metrics
        assert httpx.get(f"{url}/metrics", timeout=5).status_code == 404

        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[:2] == ["rillet", "drain"]
        drained = image.run(*pre_stop[:2], "--wait", "0", env=env, mounts=mounts)
        assert drained.returncode == 0, drained.stderr
        # Each worker looks at the drain file at most once a second.
        wait_for(
            "readiness to turn false in every worker",
            lambda: all(httpx.get(f"{url}/readyz", timeout=5).status_code == 503 for _ in range(4)),
            timeout=10,
        )
    finally:
        stop_process_group(server)  # buildah's session: gunicorn in the container too
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def test_the_operator_runs_the_charts_command(
    image: Image, cluster: TestCluster, operator_process: OperatorProcess, tmp_path: Path
) -> None:
    operator_process.stop()  # the image's operator alone manages the test's namespace
    rendered = cluster.helm(
        "template",
        "rillet",
        str(ROOT / "charts" / "rillet"),
        "--kube-version",
        "v1.37.2",
        "--show-only",
        "templates/deployment.yaml",
    ).stdout
    command = yaml.safe_load(rendered)["spec"]["template"]["spec"]["containers"][0]["command"]
    health_port, metrics_port = free_port(), free_port()
    command = [
        arg.replace(":8081/", f":{health_port}/").replace("=8080", f"={metrics_port}")
        for arg in command
    ]
    kubeconfig = tmp_path / "kube"  # in a pod: the ServiceAccount's token
    kubeconfig.mkdir()
    shutil.copy(cluster.kubeconfig, kubeconfig / "config")
    os.chmod(kubeconfig / "config", 0o644)
    env = {"KUBECONFIG": "/kube/config", "RILLET_OPERATOR_NAMESPACES": "image-test"}
    cluster.kubectl("create", "namespace", "image-test")
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            image.command(*command, env=env, mounts={kubeconfig: "/kube"}),
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
        assert f"rillet {VERSION} (revision " in log.read_text(), log.read_text()[-3000:]
    finally:
        stop_process_group(proc)
        cluster.kubectl("delete", "namespace", "image-test", "--wait=false")
