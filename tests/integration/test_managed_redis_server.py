"""The managed Redis's command line and probes, as the operator writes them, on a real
redis-server: with persistence what the AOF holds survives a SIGKILL; without it nothing
reaches the disk; the probes keep a Redis that is reading its AOF back alive but
out of the Service."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rillet_operator import builders
from rillet_operator.meta import ChatService
from tests.support.processes import RedisServer, wait_for

PASSWORD = 'pass "word'  # quoted in auth.conf as the Secret carries it


def chat_service(**managed: Any) -> ChatService:
    body = {
        "metadata": {"name": "chat", "namespace": "team", "uid": "uid-1"},
        "spec": {"redis": {"managed": managed}},
    }
    return ChatService.from_body(body)


def as_in_the_pod(cs: ChatService, tmp_path: Path) -> list[str]:
    """The container's args, with the Secret's auth.conf and the data volume at local paths."""
    auth = tmp_path / "auth.conf"
    auth.write_text(builders.redis_secret(cs, PASSWORD)["stringData"][builders.REDIS_AUTH_FILE])
    (container,) = builders.redis_stateful_set(cs)["spec"]["template"]["spec"]["containers"]
    args: list[str] = list(container["args"])
    for flag, value in (("--include", auth), ("--dir", tmp_path / "data")):
        args[args.index(flag) + 1] = str(value)
    return args


@pytest.fixture
def servers() -> Iterator[list[RedisServer]]:
    started: list[RedisServer] = []
    yield started
    for server in started:
        server.kill()


def start(servers: list[RedisServer], tmp_path: Path, args: list[str]) -> RedisServer:
    server = RedisServer(tmp_path / "data", *args)
    server.start()
    servers.append(server)
    return server


def client(server: RedisServer) -> redis.Redis:
    """No retries: redis-py would otherwise wait out a LOADING reply (BusyLoadingError)."""
    return redis.Redis(
        port=server.port, password=PASSWORD, decode_responses=True, retry=Retry(NoBackoff(), 0)
    )


def write_threads(db: redis.Redis, count: int) -> None:
    pipe = db.pipeline(transaction=False)
    for n in range(count):
        pipe.set(f"thread:{{t{n}}}:checkpoint", f"turn {n}", ex=3600)  # TTLs, as Rillet's keys
    pipe.execute()


def aof_written(db: redis.Redis) -> bool:
    """Redis's own account: nothing left in its AOF buffer and no fsync pending. With
    everysec that is within about a second of the reply, and up to two while the disk is
    slow to fsync (Redis then holds writes back rather than queue fsyncs)."""
    info = db.info("persistence")
    return bool(info["aof_buffer_length"] == 0 and info["aof_pending_bio_fsync"] == 0)


def rewrite_aof(db: redis.Redis) -> None:
    """Compact the AOF into its RDB base, as Redis does by itself as the AOF grows."""
    db.bgrewriteaof()

    def done() -> bool:
        info = db.info("persistence")
        idle = not (info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"])
        return idle and info["aof_last_bgrewrite_status"] == "ok"

    wait_for("the AOF rewrite", done, timeout=30)


def test_with_persistence_what_the_aof_holds_survives_a_sigkill(
    tmp_path: Path, servers: list[RedisServer]
) -> None:
    server = start(servers, tmp_path, as_in_the_pod(chat_service(), tmp_path))
    db = client(server)
    config = db.config_get("*")
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["save"] == "3600 1 300 100 60 10000"
    assert config["maxmemory-policy"] == "noeviction"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=server.port).ping()  # the password from auth.conf is required

    write_threads(db, 500)
    wait_for("the writes in the AOF", lambda: aof_written(db), timeout=10)
    server.restart()  # SIGKILL: no shutdown save, only what the AOF already holds
    db = client(server)
    wait_for("the AOF read back", lambda: _answers(db))
    assert db.dbsize() == 500
    assert db.get("thread:{t499}:checkpoint") == "turn 499"
    assert 0 < db.ttl("thread:{t0}:checkpoint") <= 3600


def test_without_persistence_nothing_reaches_the_disk(
    tmp_path: Path, servers: list[RedisServer]
) -> None:
    cs = chat_service(persistence={"enabled": False})
    server = start(servers, tmp_path, as_in_the_pod(cs, tmp_path))
    db = client(server)
    assert db.config_get("appendonly")["appendonly"] == "no"
    assert db.config_get("save")["save"] == ""
    write_threads(db, 50)
    server.restart()
    assert client(server).dbsize() == 0
    assert not list((tmp_path / "data").iterdir())


def _answers(db: redis.Redis) -> bool:
    try:
        return bool(db.ping())
    except redis.BusyLoadingError:
        return False


def _loading(db: redis.Redis) -> bool:
    try:
        db.ping()
    except redis.BusyLoadingError:
        return True
    return False


def test_a_redis_reading_its_aof_back_is_alive_and_not_ready(
    tmp_path: Path, servers: list[RedisServer]
) -> None:
    """A large AOF takes a while to load: the liveness probe must not kill Redis half way
    (it would start over, forever), the readiness probe keeps it out of the Service."""
    cs = chat_service()
    server = start(servers, tmp_path, as_in_the_pod(cs, tmp_path))
    write_threads(client(server), 3000)
    rewrite_aof(client(server))
    (container,) = builders.redis_stateful_set(cs)["spec"]["template"]["spec"]["containers"]
    # The probes run `redis-cli ping` as written; this redis-cli reaches the test's port.
    shim = tmp_path / "bin"
    shim.mkdir()
    real = subprocess.run(["which", "redis-cli"], capture_output=True, text=True, check=True)
    (shim / "redis-cli").write_text(
        f'#!/bin/sh\nexec {real.stdout.strip()} -p {server.port} "$@"\n'
    )
    (shim / "redis-cli").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
        "REDISCLI_AUTH": PASSWORD,
    }

    def passes(probe: str) -> bool:
        command = container[probe]["exec"]["command"]
        return subprocess.run(command, env=env, capture_output=True, timeout=10).returncode == 0

    assert passes("readinessProbe")
    assert passes("livenessProbe")

    # Restarted with each key's load slowed down (a Redis test setting): seconds of LOADING.
    server.extra = (*server.extra, "--key-load-delay", "1000")
    server.extra += ("--loading-process-events-interval-bytes", "1024")
    server.restart()
    db = client(server)
    assert _loading(db), "the restarted Redis was not loading"
    assert passes("livenessProbe")
    assert not passes("readinessProbe")
    wait_for("the AOF read back", lambda: _answers(db), timeout=60)
    assert db.dbsize() == 3000
    assert passes("readinessProbe")

    server.kill()
    assert not passes("livenessProbe")
    assert not passes("readinessProbe")
