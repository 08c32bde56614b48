"""Shared fixtures; the helpers they and the tests use live in tests/support."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import RedisServer
from tests.support.redis_cluster import RedisCluster, StateRedis, state_redis
from tests.support.toxiproxy import Toxiproxy, toxiproxy_server


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(name="state_redis", scope="module", params=["redis", "cluster"])
def state_redis_fixture(request: pytest.FixtureRequest) -> StateRedis:
    """The same tests on one redis-server, then on a 3-master Redis Cluster."""
    return state_redis(request, request.param)


@pytest.fixture(scope="module")
def toxiproxy(module_tmp: Path) -> Iterator[Toxiproxy]:
    """A real toxiproxy-server for the module's fault tests."""
    with toxiproxy_server(module_tmp) as server:
        yield server
