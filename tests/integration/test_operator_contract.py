"""The contract between the operator and the runtime: the real `rillet serve` boots from
what the operator renders (the ConfigMap's settings file and the Deployment's container
env, Secret references resolved and `$(VAR)` expanded as the kubelet does) and serves.

Only what a pod's surroundings supply is swapped: the listen port and scratch paths, and
name resolution (the managed Redis Service name reaches a local redis-server started with
the generated password; OpenAI's API is a local server speaking its wire protocol,
`rillet fake-llm`, driven by the real `openai` SDK inside the runtime)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml
from httpx_sse import connect_sse

from rillet_operator import builders
from rillet_operator.meta import ChatService
from rillet_runtime.bench.local import RedisServer, free_port
from tests.conftest import fake_llm_process, rillet_process

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def load(example: str) -> ChatService:
    document = yaml.safe_load((EXAMPLES / example).read_text())
    meta = {"namespace": "default", **document["metadata"], "uid": "uid"}
    return ChatService.from_body({"metadata": meta, "spec": document["spec"]})


def pod_env(cs: ChatService, secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The container's environment as the kubelet builds it from the Deployment."""
    container = builders.deployment(cs)["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for var in container["env"]:
        if "value" in var:
            value = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            value = secrets[ref["name"], ref["key"]]
        env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), value)
    return env


def boot(cs: ChatService, tmp_path: Path, env: dict[str, str]) -> Any:
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(builders.config_map(cs)["data"]["settings.yaml"])
    port = free_port()
    env = {
        **env,
        "RILLET_SETTINGS_FILE": str(settings_file),  # the ConfigMap's mount point, here
        "RILLET_SERVER__PORT": str(port),
        "RILLET_SERVER__METRICS_DIR": str(tmp_path / "metrics"),
        "RILLET_SERVER__DRAIN_FILE": str(tmp_path / "draining"),
    }
    return rillet_process(["serve"], env, tmp_path / "rillet.log", "/readyz", port)


def stream(url: str) -> list[tuple[str, dict[str, Any]]]:
    with (
        httpx.Client(timeout=30) as client,
        connect_sse(client, "POST", f"{url}/v1/chat/stream", json={"message": "hello"}) as events,
    ):
        return [(sse.event, json.loads(sse.data)) for sse in events.iter_sse()]


def test_the_demo_example_boots_and_answers(tmp_path: Path) -> None:
    cs = load("demo.yaml")
    env = pod_env(cs, {})
    assert set(env) == {"RILLET_SETTINGS_FILE"}
    with boot(cs, tmp_path, {}) as server:
        events = stream(server.url)
    assert events[-1][0] == "done"
    assert any(name == "token" for name, _ in events)


def test_the_managed_redis_example_boots_with_its_secrets_and_saves_state(
    tmp_path: Path,
) -> None:
    cs = load("openai-managed-redis.yaml")
    password = "generated-password"
    assert builders.redis_secret(cs, password)["stringData"]["password"] == password
    secrets = {("openai", "api-key"): "sk-test", ("support-chat-redis", "password"): password}
    env = pod_env(cs, secrets)
    assert env["RILLET_MODEL__API_KEY"] == "sk-test"

    redis_server = RedisServer(tmp_path / "redis", "--requirepass", password)
    redis_server.start()
    try:
        service = "support-chat-redis:6379"
        assert service in env["RILLET_STATE__REDIS_URL"]
        env["RILLET_STATE__REDIS_URL"] = env["RILLET_STATE__REDIS_URL"].replace(
            service, f"127.0.0.1:{redis_server.port}"
        )
        with fake_llm_process(tmp_path) as llm:
            env["RILLET_MODEL__BASE_URL"] = f"{llm.url}/v1"
            with boot(cs, tmp_path, env) as server:
                events = stream(server.url)
        assert events[-1][0] == "done", events
        assert events[-1][1]["state_saved"] is True
        client = redis.Redis(port=redis_server.port, password=password)
        assert client.dbsize() > 0
        assert "sk-test" not in builders.config_map(cs)["data"]["settings.yaml"]
    finally:
        redis_server.kill()
