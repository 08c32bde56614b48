"""A real Redis Sentinel set on loopback ports: a master, its replica and three sentinels
watching it (quorum 2), each with a password, quick to call the master down."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import redis

from tests.support.processes import RedisServer, free_port, wait_for

MASTER_NAME = "state"
PASSWORD = "master-secret"  # the master's and the replica's `requirepass`
SENTINEL_PASSWORD = "sentinel-secret"  # the sentinels' own
DOWN_AFTER_MS = 1000  # no answer for this long: the master is down
FAILOVER_TIMEOUT_MS = 3000  # how soon a failed failover is tried again


class RedisSentinelSet:
    """`redis-server sentinel.conf --sentinel` x3 watching a master and its `--replicaof`
    replica; ready when every sentinel sees the replica and the two other sentinels."""

    def __init__(self, workdir: Path) -> None:
        auth = ("--requirepass", PASSWORD, "--masterauth", PASSWORD)
        self.master = RedisServer(workdir / "master", *auth)
        self.replica = RedisServer(
            workdir / "replica", *auth, "--replicaof", "127.0.0.1", str(self.master.port)
        )
        self.workdir = workdir
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    @property
    def url(self) -> str:
        """The master's password and database; no host: the sentinels name it."""
        return f"redis://:{PASSWORD}@/0"

    def settings(self, failover_seconds: float) -> dict[str, str]:
        """`rillet_server` settings for a runtime whose state lives behind these sentinels."""
        addresses = ",".join(f'"{address}"' for address in self.addresses)
        return {
            "state__checkpointer": "redis",
            "state__redis_url": self.url,
            "state__redis_sentinel__master_name": MASTER_NAME,
            "state__redis_sentinel__addresses": f"[{addresses}]",
            "state__redis_sentinel__password": SENTINEL_PASSWORD,
            "state__redis_sentinel__failover_seconds": str(failover_seconds),
        }

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        for port in self.sentinel_ports:
            folder = self.workdir / f"sentinel-{port}"
            folder.mkdir(parents=True, exist_ok=True)
            config = folder / "sentinel.conf"  # the sentinel rewrites it as it learns
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\nrequirepass {SENTINEL_PASSWORD}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel auth-pass {MASTER_NAME} {PASSWORD}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            )
            with (folder / "sentinel.log").open("wb") as log:
                self.sentinels.append(
                    subprocess.Popen(
                        ["redis-server", str(config), "--sentinel"],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        wait_for("the sentinels to see the replica and each other", self._watching, timeout=60)

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=SENTINEL_PASSWORD, socket_timeout=2)

    def _master_state(self, port: int) -> dict[str, object]:
        with self._sentinel(port) as sentinel:
            state: dict[str, object] = sentinel.sentinel_master(MASTER_NAME)
            return state

    def _watching(self) -> bool:
        with contextlib.suppress(redis.RedisError):
            states = [self._master_state(port) for port in self.sentinel_ports]
            return all(
                state["num-slaves"] == 1 and state["num-other-sentinels"] == 2 for state in states
            )
        return False

    def master_port(self) -> int:
        """Where the sentinels say the master is (all of them, or it is not settled)."""
        ports = set()
        for port in self.sentinel_ports:
            with self._sentinel(port) as sentinel:
                _, master_port = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
                ports.add(int(master_port))
        return ports.pop() if len(ports) == 1 else 0

    def replicate(self) -> None:
        """Every write so far on the replica too (replication is asynchronous)."""
        with redis.Redis(port=self.master.port, password=PASSWORD, socket_timeout=5) as master:
            acknowledged = master.execute_command("WAIT", 1, 5000)
        assert acknowledged == 1, "the replica did not acknowledge the writes"

    def kill_master(self) -> None:
        """SIGKILL: no goodbye to its clients or the sentinels."""
        self.master.kill()

    def wait_for_failover(self) -> None:
        """Until every sentinel names the replica, and the replica says it is the master."""
        wait_for("the sentinels to promote the replica", self.promoted, timeout=60)

    def promoted(self) -> bool:
        with contextlib.suppress(redis.RedisError):
            if self.master_port() != self.replica.port:
                return False
            with redis.Redis(port=self.replica.port, password=PASSWORD) as promoted:
                return bool(promoted.role()[0] == b"master")
        return False

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.kill()
            sentinel.wait()
        self.sentinels = []
        self.master.kill()
        self.replica.kill()
