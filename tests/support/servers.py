"""Server processes on free loopback ports: `rillet serve`, `rillet fake-llm` or any command,
each in its own session, ready before use and stopped, with its children, after."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from rillet_runtime.serving.worker import BLOCKBUSTER_ENV
from tests.support.processes import free_port, start_in_own_session, wait_until_ready

BLOCKED = "BlockingError"  # what blockbuster raises, found in a log even when it was caught


@dataclass
class Process:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@contextlib.contextmanager
def served(
    command: list[str],
    env: dict[str, str],
    log: Path,
    ready_path: str,
    port: int,
    cwd: Path | None = None,
) -> Iterator[Process]:
    """A server process in its own session, ready once `ready_path` answers; stopped after,
    with whatever it started (the whole process group). A `rillet serve` among them runs
    its workers under blockbuster: a blocking call on their event loop fails the test."""
    proc = start_in_own_session(command, {BLOCKBUSTER_ENV: "1", **env}, log, cwd)
    process = Process(f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_until_ready(process.url + ready_path, proc, log)
        yield process
    finally:
        process.stop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    blocked = [line for line in log.read_text(errors="replace").splitlines() if BLOCKED in line]
    assert not blocked, f"a blocking call on the event loop (see {log}): {blocked[:3]}"


def rillet_process(
    args: list[str], env: dict[str, str], log: Path, ready_path: str, port: int
) -> contextlib.AbstractContextManager[Process]:
    return served([sys.executable, "-m", "rillet_runtime", *args], env, log, ready_path, port)


@dataclass
class FakeLLM:
    """`rillet fake-llm` in its own process."""

    url: str

    def openai_settings(self) -> dict[str, str]:
        """`rillet_server` settings for a runtime that streams from this fake model."""
        return {
            "model__provider": "openai",
            "model__name": "fake",
            "model__base_url": f"{self.url}/v1",
        }

    def stats(self) -> dict[str, object]:
        response = httpx.get(f"{self.url}/_fake/stats", timeout=5)
        response.raise_for_status()
        result: dict[str, object] = response.json()
        return result


@contextlib.contextmanager
def fake_llm_process(tmp_path: Path, *flags: str) -> Iterator[FakeLLM]:
    port = free_port()
    args = ["fake-llm", "--port", str(port), *flags]
    with rillet_process(args, {}, tmp_path / f"fake-llm-{port}.log", "/_fake/stats", port) as p:
        yield FakeLLM(p.url)


@dataclass
class RilletServer(Process):
    """`rillet serve`: the API at `url`, Prometheus metrics (the master's port) at
    `metrics_url`."""

    metrics_url: str

    def metrics(self) -> str:
        response = httpx.get(self.metrics_url, timeout=10)
        response.raise_for_status()
        return response.text


@contextlib.contextmanager
def rillet_server(tmp_path: Path, workers: int = 2, **settings: str) -> Iterator[RilletServer]:
    """`rillet serve` (gunicorn + uvicorn workers); settings as RILLET_ env vars."""
    port, metrics_port = free_port(), free_port()
    env = {
        "RILLET_SERVER__PORT": str(port),
        "RILLET_SERVER__WORKERS": str(workers),
        "RILLET_SERVER__DRAIN_SECONDS": "1",
        "RILLET_SERVER__METRICS_DIR": str(tmp_path / f"metrics-{port}"),
        "RILLET_SERVER__METRICS_PORT": str(metrics_port),
        **{f"RILLET_{name.upper()}": value for name, value in settings.items()},
    }
    with rillet_process(["serve"], env, tmp_path / f"rillet-{port}.log", "/readyz", port) as p:
        yield RilletServer(p.url, p.proc, p.log, f"http://127.0.0.1:{metrics_port}/metrics")
