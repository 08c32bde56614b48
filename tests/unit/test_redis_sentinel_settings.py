"""Redis behind Sentinel in the settings: the runtime's checks and messages, the retries a
failover gets, and the operator's `spec.redis.external.sentinel` as the pod sees it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from redis.asyncio.connection import SSLConnection

from rillet_operator import builders
from rillet_operator.meta import ChatService
from rillet_operator.runtime_settings import runtime_settings, secret_env, settings_file
from rillet_operator.spec import ChatServiceSpec
from rillet_runtime.settings import Settings, StateSettings, sentinel_address
from rillet_runtime.state import sentinel_set
from rillet_runtime.state.checkpoint import RedisCheckpointSaver, SentinelSet
from rillet_runtime.state.checkpoint.sentinel import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_CAP_SECONDS,
    MIN_RETRIES,
    failover_retries,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "external-sentinel.yaml"
SENTINEL = {"master_name": "mymaster", "addresses": ["s0:26379", "s1"]}


def state(**settings: Any) -> StateSettings:
    return StateSettings(checkpointer="redis", **settings)


def test_the_sentinels_stand_in_for_the_urls_host() -> None:
    settings = state(redis_url="rediss://:pw@ignored:6380/2", redis_sentinel=SENTINEL)
    assert settings.redis_sentinel is not None
    assert settings.redis_sentinel.sentinels == [("s0", 26379), ("s1", 26379)]
    found = sentinel_set(settings.redis_sentinel)
    assert found is not None
    assert (found.master_name, found.addresses) == ("mymaster", (("s0", 26379), ("s1", 26379)))


def test_without_a_url_the_master_has_no_password_and_database_0() -> None:
    assert state(redis_sentinel=SENTINEL).redis_connection_url == "redis://"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "state.redis_url (or state.redis_sentinel) is required"),
        (
            {"redis_url": "redis://h", "redis_cluster": True, "redis_sentinel": SENTINEL},
            "state.redis_sentinel and state.redis_cluster exclude each other",
        ),
        (
            {"redis_url": "unix:///run/redis.sock", "redis_sentinel": SENTINEL},
            "redis:// or rediss:// with state.redis_sentinel, not unix://",
        ),
        ({"redis_sentinel": {"master_name": "m", "addresses": []}}, "at least 1 item"),
        ({"redis_sentinel": {"master_name": "", "addresses": ["s"]}}, "at least 1 character"),
        (
            {"redis_sentinel": {"master_name": "m", "addresses": ["s:0"]}},
            "'s:0' is not host:port",
        ),
    ],
)
def test_bad_sentinel_settings_say_what_is_wrong(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        state(**settings)


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        ("sentinel-0.data.svc:26380", ("sentinel-0.data.svc", 26380)),
        ("10.0.0.7", ("10.0.0.7", 26379)),
        ("[fd00::7]:5000", ("fd00::7", 5000)),
        ("[fd00::7]", ("fd00::7", 26379)),
    ],
)
def test_sentinel_addresses(address: str, parsed: tuple[str, int]) -> None:
    assert sentinel_address(address) == parsed


@pytest.mark.parametrize("address", ["fd00::7", "h:", "h:65536", "[fd00::7]x", "h:p", ""])
def test_malformed_sentinel_addresses(address: str) -> None:
    with pytest.raises(ValueError, match="is not host:port"):
        sentinel_address(address)


def test_the_sentinels_password_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file (a ConfigMap) names the sentinels; the password (a Secret) joins it from
    the environment, in the same section."""
    (tmp_path / "settings.yaml").write_text(
        yaml.safe_dump({"state": {"checkpointer": "redis", "redis_sentinel": SENTINEL}})
    )
    monkeypatch.setenv("RILLET_SETTINGS_FILE", str(tmp_path / "settings.yaml"))
    monkeypatch.setenv("RILLET_STATE__REDIS_SENTINEL__PASSWORD", "sentinel-pw")
    sentinel = Settings().state.redis_sentinel
    assert sentinel is not None
    assert sentinel.password is not None
    assert sentinel.password.get_secret_value() == "sentinel-pw"
    assert sentinel.master_name == "mymaster"


def test_a_failover_gets_retries_that_sleep_at_least_its_length() -> None:
    for seconds in (0.1, 1, 5, 10, 30):
        retries = failover_retries(seconds)
        steps = [
            min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**n) for n in range(1, retries + 1)
        ]
        assert sum(step / 2 for step in steps) >= seconds  # equal jitter: at least half
        assert sum(step / 2 for step in steps[:-1]) < seconds or retries == MIN_RETRIES
    assert failover_retries(0.01) == MIN_RETRIES


def chat_service(spec: dict[str, Any]) -> ChatService:
    body = {"metadata": {"name": "ha", "namespace": "chat", "uid": "u"}, "spec": spec}
    return ChatService.from_body(body)


def test_the_operator_gives_the_pods_the_sentinels_and_keeps_their_password_out() -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    cs = chat_service(document["spec"])
    config = builders.config_map(cs)["data"]["settings.yaml"]
    sentinel = yaml.safe_load(config)["state"]["redis_sentinel"]
    assert sentinel["master_name"] == "mymaster"
    assert len(sentinel["addresses"]) == 3
    assert "password" not in sentinel
    env = {e["name"]: e for e in secret_env(cs.name, cs.spec)}
    assert env["RILLET_STATE__REDIS_SENTINEL__PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "redis-sentinel",
        "key": "password",
    }
    assert "RILLET_STATE__REDIS_URL" in env


def test_a_sentinel_set_without_a_url_needs_no_url_variable() -> None:
    spec = {"redis": {"external": {"sentinel": {"masterName": "m", "addresses": ["s:26379"]}}}}
    cs = chat_service(spec)
    settings = runtime_settings(cs.spec)
    assert settings.state.redis_url is None
    assert settings.state.redis_connection_url == "redis://"
    assert "redis_url" not in settings_file(settings)["state"]
    assert not [e for e in secret_env(cs.name, cs.spec) if e["name"].startswith("RILLET_STATE")]


@pytest.mark.parametrize(
    ("sentinel", "field"),
    [
        ({"masterName": "m", "addresses": []}, "redis.external.sentinel.addresses"),
        ({"masterName": "m", "addresses": ["a b"]}, "redis.external.sentinel.addresses.0"),
        ({"addresses": ["s"]}, "redis.external.sentinel.masterName"),
        ({"masterName": "m", "addresses": ["s"], "failoverSeconds": 0}, "failoverSeconds"),
    ],
)
def test_bad_sentinel_specs_name_the_field(sentinel: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ChatServiceSpec.model_validate({"redis": {"external": {"sentinel": sentinel}}})
    fields = {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}
    assert any(name.endswith(field) for name in fields), fields


def test_sentinel_and_cluster_are_refused_together_before_any_pod() -> None:
    """The CEL rule refuses it at `kubectl apply`; without the API server (`rillet render`)
    the runtime's own check does, when the pod's settings are built."""
    sentinel = {"masterName": "m", "addresses": ["s"]}
    spec = ChatServiceSpec.model_validate(
        {"redis": {"external": {"url": "redis://h", "cluster": True, "sentinel": sentinel}}}
    )
    with pytest.raises(ValidationError, match="exclude each other"):
        runtime_settings(spec)


@pytest.mark.parametrize(
    "url", ["rediss://:pw@ignored:7000/2?ssl_cert_reqs=none", "redis://:pw@/2"]
)
async def test_the_urls_password_database_and_tls_reach_the_master_not_its_host(url: str) -> None:
    """Built, not connected: the master's connections take the URL's password, database and
    TLS; the sentinels' take their own password, and TLS with the URL's options."""
    sentinels = SentinelSet("m", (("s0", 26379),), password="sentinel-pw")
    saver = RedisCheckpointSaver.from_url(url, sentinel=sentinels)
    tls = url.startswith("rediss")
    try:
        pool = saver.client.connection_pool
        master = pool.connection_kwargs
        assert (master["password"], master["db"]) == ("pw", 2)
        assert "host" not in master
        assert issubclass(pool.connection_class, SSLConnection) is tls
        sentinel = pool.sentinel_manager.sentinels[0].connection_pool
        assert sentinel.connection_kwargs["password"] == "sentinel-pw"
        assert issubclass(sentinel.connection_class, SSLConnection) is tls
        if tls:
            assert sentinel.connection_kwargs["ssl_cert_reqs"] == "none"
        sync_pool = saver._sync().connection_pool
        assert (sync_pool.connection_kwargs["password"], sync_pool.connection_kwargs["db"]) == (
            "pw",
            2,
        )
    finally:
        await saver.aclose()
