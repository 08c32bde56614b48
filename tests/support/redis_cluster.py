"""A real 3-master Redis Cluster on loopback ports, and the Redis a test's state lives in:
one redis-server or that cluster, behind one interface so the same tests run on both."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aredis

from tests.support.processes import free_port

BUS_OFFSET = 10_000  # a node's cluster bus listens on its port + 10000
MASTERS = 3


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000) is free too, clear of `taken`."""
    while True:
        port = free_port()
        bus = port + BUS_OFFSET
        if bus <= 65_535 and not {port, bus} & taken and _bindable(bus):
            return port


def _pong(port: int) -> bool:
    with redis.Redis(port=port, socket_timeout=2) as node:
        return bool(node.ping())


def _cluster_info(port: int) -> dict[str, str]:
    with redis.Redis(port=port, socket_timeout=2, decode_responses=True) as node:
        raw = node.execute_command("CLUSTER", "INFO")
    if isinstance(raw, dict):  # redis-py parses it in some versions
        return {str(key): str(value) for key, value in raw.items()}
    return dict(line.split(":", 1) for line in str(raw).splitlines() if ":" in line)


class RedisCluster:
    """Three `redis-server --cluster-enabled yes` joined by `redis-cli --cluster create`
    (no replicas, no persistence); ready when every node says `cluster_state:ok` and knows
    the other two."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        taken: set[int] = set()
        self.ports: list[int] = []
        for _ in range(MASTERS):
            port = free_cluster_port(taken)
            taken |= {port, port + BUS_OFFSET}
            self.ports.append(port)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0"  # any node: clients learn the rest

    def start(self, timeout: float = 30) -> None:
        for port in self.ports:
            node_dir = self.workdir / f"node-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            args += ["--save", "", "--appendonly", "no", "--dir", str(node_dir)]
            with (node_dir / "redis.log").open("wb") as log:
                self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        for port in self.ports:
            self._wait(deadline, f"node {port} to answer", lambda p=port: _pong(p))
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *nodes,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        self._wait(deadline, "cluster_state:ok on every node", self._ready)

    def _ready(self) -> bool:
        infos = [_cluster_info(port) for port in self.ports]
        return all(
            info.get("cluster_state") == "ok" and info.get("cluster_known_nodes") == str(MASTERS)
            for info in infos
        )

    def _wait(self, deadline: float, what: str, check: Any) -> None:
        while time.monotonic() < deadline:
            if any(proc.poll() is not None for proc in self.procs):
                raise RuntimeError(f"a cluster node exited; logs in {self.workdir}")
            with contextlib.suppress(redis.RedisError, OSError):
                if check():
                    return
            time.sleep(0.1)
        raise TimeoutError(f"timed out waiting for {what}; logs in {self.workdir}")

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()
        self.procs = []


@dataclass(frozen=True)
class StateRedis:
    """Where a test keeps the runtime's state: `redis` (one server) or `cluster` (3 masters)."""

    url: str
    cluster: bool

    def client(self) -> Any:
        """A sync client: on a cluster, each command goes to the node of its key's slot."""
        return (
            redis.RedisCluster.from_url(self.url)
            if self.cluster
            else redis.Redis.from_url(self.url)
        )

    def keys(self, pattern: str) -> list[bytes]:
        """Every key matching `pattern`, on every node (a cluster's KEYS asks one node)."""
        with contextlib.closing(self.client()) as client:
            return sorted(client.scan_iter(match=pattern, count=1000))

    def async_client(self) -> Any:
        if self.cluster:
            return aredis.RedisCluster.from_url(self.url)
        return aredis.Redis.from_url(self.url)

    def flush(self) -> None:
        """Every key gone, on every node (FLUSHDB goes to each primary)."""
        with contextlib.closing(self.client()) as client:
            client.flushdb()

    def settings(self) -> dict[str, str]:
        """`rillet_server` settings for a runtime keeping its state here."""
        return {
            "state__checkpointer": "redis",
            "state__redis_url": self.url,
            "state__redis_cluster": str(self.cluster).lower(),
        }


def state_redis(request: pytest.FixtureRequest, kind: str) -> StateRedis:
    """The session's redis-server (`redis`) or Redis Cluster (`cluster`), started on first use."""
    if kind == "cluster":
        return StateRedis(request.getfixturevalue("redis_cluster").url, cluster=True)
    return StateRedis(request.getfixturevalue("redis_server").url, cluster=False)
