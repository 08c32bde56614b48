"""`rillet operator` as a real process against a TestCluster, as a person would run it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from testcluster.cluster import TestCluster
from tests.support.processes import free_port, stop_process_group, wait_until_ready


class OperatorProcess:
    def __init__(
        self,
        cluster: TestCluster,
        log: Path,
        kubeconfig: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """`kubeconfig`: whose credentials it runs with (default: the cluster's admin)."""
        self.cluster = cluster
        self.log = log
        self.env = {**cluster.env, **(env or {})}
        if kubeconfig:
            self.env["KUBECONFIG"] = str(kubeconfig)
        self.proc: subprocess.Popen[bytes] | None = None
        self.health_url = ""
        self.metrics_url = ""

    def start(self, timeout: float = 60) -> None:
        self.health_url = f"http://127.0.0.1:{free_port()}/healthz"
        metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        command = [sys.executable, "-m", "rillet_runtime", "operator"]
        command += ["--liveness", self.health_url, "--metrics-port", str(metrics_port)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until_ready(self.health_url, self.proc, self.log, timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, sig, timeout)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""
