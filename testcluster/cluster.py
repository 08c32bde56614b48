"""A real Kubernetes control plane on loopback ports: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and KWOK with fake nodes, from the binaries
`build.sh` caches. What envtest gives Go operators, plus the controllers that turn a
Deployment into Ready pods and collect garbage."""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.processes import free_port, stop_process_group

HERE = Path(__file__).resolve().parent
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_CIDR = "10.0.0.0/24"


def build() -> Path:
    """The cached bin directory (builds on first use: about 7 minutes on 2 cores)."""
    done = subprocess.run(
        ["bash", str(HERE / "build.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(done.stdout.strip().splitlines()[-1])


# --- PKI ---------------------------------------------------------------------------


def _write_key(path: Path, key: Any) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _certificate(
    subject: x509.Name,
    key: Any,
    issuer: tuple[x509.Name, Any] | None,
    *,
    ca: bool = False,
    server_names: tuple[str, ...] = (),
    client: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), True
        )
    if server_names:
        sans: list[x509.GeneralName] = []
        for name in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server_names else []
    usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def make_pki(directory: Path) -> None:
    """A CA, the API server's serving certificate, an admin client certificate
    (group system:masters) and the service-account signing key pair."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("rillet-test-ca")
    ca_cert = _certificate(ca_name, ca_key, None, ca=True)
    issuer = (ca_name, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_names = (
        *("127.0.0.1", "localhost", "10.0.0.1", "kubernetes", "kubernetes.default"),
        *("kubernetes.default.svc", "kubernetes.default.svc.cluster.local"),
    )
    server_cert = _certificate(
        _name("kube-apiserver"), server_key, issuer, server_names=server_names
    )
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin_cert = _certificate(_name("admin", "system:masters"), admin_key, issuer, client=True)
    for stem, cert, key in (
        ("ca", ca_cert, ca_key),
        ("apiserver", server_cert, server_key),
        ("admin", admin_cert, admin_key),
    ):
        (directory / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(directory / f"{stem}.key", key)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(directory / "sa.key", sa_key)
    (directory / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def admin_kubeconfig(server: str, pki: Path) -> dict[str, Any]:
    """Self-contained (certificates inline), so it can be copied anywhere."""

    def inline(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "rillet-test",
                "cluster": {"server": server, "certificate-authority-data": inline("ca.crt")},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate-data": inline("admin.crt"),
                    "client-key-data": inline("admin.key"),
                },
            }
        ],
        "contexts": [
            {"name": "rillet-test", "context": {"cluster": "rillet-test", "user": "admin"}}
        ],
        "current-context": "rillet-test",
    }


def fake_node(name: str) -> dict[str, Any]:
    """A node that KWOK keeps Ready and whose pods it marks Running and Ready; big enough
    that scheduling never limits a test or a benchmark."""
    capacity = {"cpu": "256", "memory": "1Ti", "pods": "500", "ephemeral-storage": "1Ti"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/zone": f"zone-{name[-1]}",
            },
        },
        "spec": {},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


# The default StorageClass: a claim that names no class (a StatefulSet's volumeClaimTemplate,
# say) is bound at once to a new hostPath volume, so its pod can be scheduled.
STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {
        "name": "standard",
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
    },
    "provisioner": "kubernetes.io/host-path",
    "reclaimPolicy": "Delete",
    "volumeBindingMode": "Immediate",
    # A claim's request may grow (the volume itself does not: hostPath cannot resize).
    "allowVolumeExpansion": True,
}


# --- processes ------------------------------------------------------------------------


@dataclass
class Component:
    name: str
    args: list[str]
    health_url: str | None
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class TestCluster:
    """Start with `start()` (or as a context manager); `kubectl(...)` runs the real kubectl."""

    __test__ = False  # not a pytest test class

    workdir: Path
    bin_dir: Path = field(default_factory=build)
    nodes: int = 3
    crds: tuple[Path, ...] = ()  # installed before the controllers start (see _install_crds)
    components: list[Component] = field(default_factory=list)
    server: str = ""  # the API server's URL, once started

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a process that should talk to this cluster."""
        path = f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": path}

    def start(self) -> TestCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        make_pki(self.pki)
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        self.server = f"https://127.0.0.1:{api_port}"
        self.kubeconfig.write_text(json.dumps(admin_kubeconfig(self.server, self.pki), indent=2))
        kc, pki = str(self.kubeconfig), self.pki
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        try:
            self._run(
                Component(
                    "etcd",
                    [
                        "--name=default",
                        f"--data-dir={self.workdir / 'etcd'}",
                        f"--listen-client-urls={etcd_url}",
                        f"--advertise-client-urls={etcd_url}",
                        f"--listen-peer-urls={peer_url}",
                        f"--initial-advertise-peer-urls={peer_url}",
                        f"--initial-cluster=default={peer_url}",
                        "--unsafe-no-fsync=true",
                        "--log-level=warn",
                    ],
                    f"{etcd_url}/health",
                )
            )
            self._run(
                Component(
                    "kube-apiserver",
                    [
                        f"--etcd-servers={etcd_url}",
                        "--bind-address=127.0.0.1",
                        "--advertise-address=127.0.0.1",
                        f"--secure-port={api_port}",
                        f"--cert-dir={pki}",
                        f"--tls-cert-file={pki / 'apiserver.crt'}",
                        f"--tls-private-key-file={pki / 'apiserver.key'}",
                        f"--client-ca-file={pki / 'ca.crt'}",
                        "--authorization-mode=RBAC",
                        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                        f"--service-account-key-file={pki / 'sa.pub'}",
                        f"--service-account-signing-key-file={pki / 'sa.key'}",
                        f"--service-cluster-ip-range={SERVICE_CIDR}",
                        "--allow-privileged=true",
                        "--disable-admission-plugins=ServiceAccount",
                        # The `kubernetes` Service's endpoints may not be loopback.
                        "--endpoint-reconciler-type=none",
                    ],
                    f"{self.server}/readyz",
                )
            )
            self._install_crds()
            common = [
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
            ]
            self._run(
                Component(
                    "kube-controller-manager",
                    [
                        *common,
                        f"--secure-port={free_port()}",
                        f"--root-ca-file={pki / 'ca.crt'}",
                        f"--service-account-private-key-file={pki / 'sa.key'}",
                        "--controllers=*",
                        "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
                        # Fake nodes' pods are never evicted for a missed heartbeat.
                        "--node-monitor-grace-period=1h",
                        # The HPA controller checks every 3 s instead of 15 s: tests wait less.
                        "--horizontal-pod-autoscaler-sync-period=3s",
                        # Claims get volumes as in a cluster with a default StorageClass
                        # (STORAGE_CLASS): directories under /tmp, made by the real PV
                        # controller's in-tree hostPath provisioner.
                        "--enable-hostpath-provisioner=true",
                    ],
                    None,
                )
            )
            self._run(Component("kube-scheduler", [*common, f"--secure-port={free_port()}"], None))
            self._run(
                Component(
                    "kwok",
                    [
                        f"--kubeconfig={kc}",
                        f"--config={self.bin_dir.parent / 'kwok-stages.yaml'}",
                        "--manage-all-nodes=false",
                        f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
                        "--cidr=10.0.1.0/24",
                        "--node-ip=127.0.0.1",
                    ],
                    None,
                )
            )
            nodes = [fake_node(f"kwok-node-{i}") for i in range(self.nodes)]
            node_list = {"apiVersion": "v1", "kind": "List", "items": nodes}
            self.kubectl("apply", "-f", "-", input=json.dumps(node_list))
            self.kubectl("apply", "-f", "-", input=json.dumps(STORAGE_CLASS))
            self.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=120s")
            self._wait_for_default_service_account()
        except BaseException:
            self.stop()
            raise
        return self

    def _install_crds(self) -> None:
        """As in a real cluster, the CRDs exist before the controller-manager starts: its
        garbage collector only learns of resource kinds added later at its next discovery
        sync (every 30 s), so owners of those kinds would be collected late."""
        for path in self.crds:
            self.kubectl("apply", "--server-side", "-f", str(path))
        if self.crds:
            self.wait_crds_established()

    def wait_crds_established(self, timeout: float = 60) -> None:
        """Every CRD Established. Polled: `kubectl wait --for=condition=...` fails at once,
        rather than waiting, on a CRD whose status the API server has not written yet."""
        deadline = time.monotonic() + timeout
        while True:
            crds = self.get_json("crd")["items"]
            established = [
                any(
                    c["type"] == "Established" and c["status"] == "True"
                    for c in crd.get("status", {}).get("conditions") or []
                )
                for crd in crds
            ]
            if all(established):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"CRDs not Established after {timeout} s")
            time.sleep(0.5)

    def _run(self, component: Component) -> None:
        binary = self.bin_dir / component.name
        with (self.logs / f"{component.name}.log").open("wb") as log:
            component.proc = subprocess.Popen(
                [str(binary), *component.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.components.append(component)
        if component.health_url:
            self._wait_healthy(component)

    def _wait_healthy(self, component: Component, timeout: float = 120) -> None:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        context.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        deadline = time.monotonic() + timeout
        assert component.proc is not None
        assert component.health_url is not None
        while time.monotonic() < deadline:
            if component.proc.poll() is not None:
                raise RuntimeError(f"{component.name} exited:\n{self.log_tail(component.name)}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(component.health_url, timeout=2, context=context),
            ):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{component.name} not healthy:\n{self.log_tail(component.name)}")

    def _wait_for_default_service_account(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.kubectl("get", "serviceaccount", "default", check=False)
            if done.returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError("the controller-manager created no default ServiceAccount")

    def log_tail(self, component: str, chars: int = 4000) -> str:
        path = self.logs / f"{component}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def run(
        self,
        tool: str,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 180,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """One of the built tools (kubectl, helm), as admin or with another kubeconfig."""
        env = {**self.env, **({"KUBECONFIG": str(kubeconfig)} if kubeconfig else {})}
        done = subprocess.run(
            [str(self.bin_dir / tool), *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, input=input, check=check, timeout=timeout)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, check=check, timeout=300)

    def service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        """A kubeconfig holding a token of the ServiceAccount: what its pod would get."""
        token = self.kubectl(
            "create", "token", name, "-n", namespace, "--duration=2h"
        ).stdout.strip()
        config = admin_kubeconfig(self.server, self.pki)
        config["users"][0]["user"] = {"token": token}
        path = self.workdir / f"kubeconfig-{namespace}-{name}"
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def stop(self) -> None:
        for component in reversed(self.components):
            if component.proc is not None:
                stop_process_group(component.proc, timeout=15)
        self.components.clear()

    def __enter__(self) -> TestCluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
