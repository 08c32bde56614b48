"""A real Toxiproxy server (built by testcluster/servers.sh) and a small client for its
HTTP API: proxies between the runtime and Redis or the model server, and the toxics
(latency, bandwidth, reset_peer, timeout, limit_data) that inject the faults."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from tests.support.processes import (
    free_port,
    start_in_own_session,
    stop_process_group,
    wait_until_ready,
)

REPO = Path(__file__).resolve().parents[2]


def toxiproxy_binary() -> Path:
    """Builds it on first use (about 30 s cold), then reuses the cache."""
    bin_dir = subprocess.run(
        ["bash", str(REPO / "testcluster" / "servers.sh")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[-1]
    return Path(bin_dir) / "toxiproxy-server"


@dataclass
class Proxy:
    """One listening port in front of one upstream; toxics go on its traffic."""

    api: httpx.Client
    name: str
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add(
        self,
        kind: str,
        stream: Literal["downstream", "upstream"] = "downstream",
        name: str | None = None,
        **attributes: Any,
    ) -> str:
        """A toxic (`latency`, `bandwidth`, `reset_peer`, `timeout`, `limit_data`, ...)."""
        toxic_name = name or f"{kind}_{stream}"
        body = {"name": toxic_name, "type": kind, "stream": stream, "attributes": attributes}
        self.api.post(f"/proxies/{self.name}/toxics", json=body).raise_for_status()
        return toxic_name

    def remove(self, toxic_name: str) -> None:
        self.api.delete(f"/proxies/{self.name}/toxics/{toxic_name}").raise_for_status()

    def set_enabled(self, enabled: bool) -> None:
        """Disabled: every connection is closed and new ones are refused."""
        self.api.post(f"/proxies/{self.name}", json={"enabled": enabled}).raise_for_status()

    @contextlib.contextmanager
    def toxic(self, kind: str, **kwargs: Any) -> Iterator[str]:
        toxic_name = self.add(kind, **kwargs)
        try:
            yield toxic_name
        finally:
            self.remove(toxic_name)

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        self.set_enabled(False)
        try:
            yield
        finally:
            self.set_enabled(True)


class Toxiproxy:
    """A toxiproxy-server on a free port; `proxy()` puts a port in front of an upstream."""

    def __init__(self, api: httpx.Client) -> None:
        self.api = api

    def proxy(self, name: str, upstream: str) -> Proxy:
        port = free_port()
        body = {"name": name, "listen": f"127.0.0.1:{port}", "upstream": upstream}
        self.api.post("/proxies", json=body).raise_for_status()
        return Proxy(self.api, name, port)

    def reset(self) -> None:
        """Every proxy enabled, every toxic removed."""
        self.api.post("/reset").raise_for_status()


@contextlib.contextmanager
def toxiproxy_server(workdir: Path) -> Iterator[Toxiproxy]:
    port = free_port()
    log = workdir / "toxiproxy.log"
    command = [str(toxiproxy_binary()), "-host", "127.0.0.1", "-port", str(port)]
    proc = start_in_own_session(command, {}, log)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/version", proc, log, timeout=30)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as api:
            yield Toxiproxy(api)
    finally:
        stop_process_group(proc)
