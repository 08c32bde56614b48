"""The contract between the operator and the runtime: the real `rillet serve` boots from
what the operator renders (the ConfigMap's settings file and the Deployment's container
env, Secret references resolved and `$(VAR)` expanded as the kubelet does) and serves.

Only what a pod's surroundings supply is swapped: the listen port and scratch paths, the
image's built-in index (built here by `rillet ingest docs`, as the Dockerfile does), the
API keys Secret's mount (a folder of the operator's first-key Secret, as the kubelet writes
it), and name resolution (the managed Redis Service name reaches a local redis-server that
includes the config file from the generated Secret; OpenAI's API is a local server speaking
its wire protocol, `rillet fake-llm`, driven by the real `openai` SDK inside the runtime)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from httpx_sse import connect_sse

from rillet_operator import builders
from rillet_operator.meta import ChatService
from tests.fakes.pinecone import fake_pinecone
from tests.support.processes import RedisServer, free_port
from tests.support.servers import fake_llm_process, rillet_process

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLES = DOCS / "examples"
API_KEY = "first-key-from-the-operator"


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


def mount_secret(folder: Path, secret: dict[str, Any]) -> Path:
    """A Secret volume as the kubelet writes it: one file per key."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, value in secret["stringData"].items():
        (folder / key).write_text(value)
    return folder


def boot(
    cs: ChatService, tmp_path: Path, env: dict[str, str], settings: dict[str, Any] | None = None
) -> Any:
    """`rillet serve` on the rendered settings (or `settings`, an edited copy of them)."""
    api_keys = mount_secret(tmp_path / "api-keys", builders.first_key_secret(cs, API_KEY))
    settings_file = tmp_path / "settings.yaml"
    rendered = builders.config_map(cs)["data"]["settings.yaml"]
    settings_file.write_text(yaml.safe_dump(settings) if settings else rendered)
    built_in_index = tmp_path / "index"  # /opt/rillet/index in the image
    ingest = [sys.executable, "-m", "rillet_runtime", "ingest", str(DOCS), "--index"]
    subprocess.run([*ingest, str(built_in_index)], check=True, capture_output=True)
    port = free_port()
    env = {
        **env,
        "RILLET_RETRIEVAL__EMBEDDED__PATH": str(built_in_index),
        "RILLET_SETTINGS_FILE": str(settings_file),  # the ConfigMap's mount point, here
        "RILLET_SERVER__PORT": str(port),
        "RILLET_SERVER__METRICS_DIR": str(tmp_path / "metrics"),
        "RILLET_SERVER__METRICS_PORT": str(free_port()),  # the rendered file's, in a pod
        "RILLET_SERVER__DRAIN_FILE": str(tmp_path / "draining"),
        "RILLET_AUTH__API_KEYS__PATH": str(api_keys),  # the Secret's mount point, here
    }
    return rillet_process(["serve"], env, tmp_path / "rillet.log", "/readyz", port)


def stream(url: str, message: str = "hello") -> list[tuple[str, dict[str, Any]]]:
    with (
        httpx.Client(timeout=30, headers={"authorization": f"Bearer {API_KEY}"}) as client,
        connect_sse(client, "POST", f"{url}/v1/chat/stream", json={"message": message}) as events,
    ):
        return [(sse.event, json.loads(sse.data)) for sse in events.iter_sse()]


def test_the_demo_example_boots_and_answers(tmp_path: Path) -> None:
    cs = load("demo.yaml")
    env = pod_env(cs, {})
    assert set(env) == {"RILLET_SETTINGS_FILE"}
    with boot(cs, tmp_path, {}) as server:
        events = stream(server.url)
        refused = httpx.post(f"{server.url}/v1/chat", json={"message": "hello"}, timeout=30)
    assert events[-1][0] == "done"
    assert any(name == "token" for name, _ in events)
    assert refused.status_code == 401  # the operator's default: API keys


def test_the_managed_redis_example_boots_with_its_secrets_and_saves_state(
    tmp_path: Path,
) -> None:
    cs = load("openai-managed-redis.yaml")
    password = "generated-password"
    assert builders.redis_secret(cs, password)["stringData"]["password"] == password
    secrets = {("openai", "api-key"): "sk-test", ("support-chat-redis", "password"): password}
    env = pod_env(cs, secrets)
    assert env["RILLET_MODEL__API_KEY"] == "sk-test"

    # redis-server as the StatefulSet starts it: the password from the Secret's config file.
    redis_secret = mount_secret(tmp_path / "redis-auth", builders.redis_secret(cs, password))
    redis_server = RedisServer(tmp_path / "redis", "--include", str(redis_secret / "auth.conf"))
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
        with pytest.raises(redis.AuthenticationError):  # the included file set the password
            redis.Redis(port=redis_server.port).ping()
        assert "sk-test" not in builders.config_map(cs)["data"]["settings.yaml"]
    finally:
        redis_server.kill()


def test_the_pinecone_example_answers_from_its_index_with_keys_from_secrets(
    tmp_path: Path,
) -> None:
    """Pinecone is a paid service: the real `pinecone` SDK inside the runtime talks to
    tests/fakes/pinecone.py (its data-plane REST API); OpenAI's embeddings and chat API to
    `rillet fake-llm`. The index is filled by `rillet ingest` with the same settings."""
    cs = load("openai-pinecone.yaml")
    secrets = {("openai", "api-key"): "sk-test", ("pinecone", "api-key"): "pc-secret"}
    secrets["kb-chat-redis", "password"] = "unused"
    env = pod_env(cs, secrets)
    assert env["RILLET_RETRIEVAL__PINECONE__API_KEY"] == "pc-secret"
    assert env["RILLET_EMBEDDINGS__API_KEY"] == "sk-test"
    del env["RILLET_STATE__REDIS_URL"], env["REDIS_PASSWORD"]  # state: not what this tests
    settings = yaml.safe_load(builders.config_map(cs)["data"]["settings.yaml"])
    settings["state"] = {"checkpointer": "memory"}
    assert "pc-secret" not in json.dumps(settings)

    with (
        fake_pinecone(384, api_key="pc-secret") as (host, index),
        fake_llm_process(tmp_path) as llm,
    ):
        swapped = {  # name resolution: the index host and OpenAI's API, here
            "RILLET_RETRIEVAL__PINECONE__HOST": host,
            "RILLET_EMBEDDINGS__BASE_URL": f"{llm.url}/v1",
            "RILLET_MODEL__BASE_URL": f"{llm.url}/v1",
        }
        settings_file = tmp_path / "ingest-settings.yaml"
        settings_file.write_text(yaml.safe_dump(settings))
        ingest_env = {
            **os.environ,
            **env,
            **swapped,
            "RILLET_SETTINGS_FILE": str(settings_file),
        }
        done = subprocess.run(
            [sys.executable, "-m", "rillet_runtime", "ingest", str(DOCS)],
            env=ingest_env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert len(index.namespaces["docs"]) > 50
        with boot(cs, tmp_path, {**env, **swapped}, settings) as server:
            events = stream(server.url, "How do I install Rillet on a cluster?")
    sources = next(data for name, data in events if name == "sources")["sources"]
    assert sources
    assert all(s["id"] in index.namespaces["docs"] for s in sources)
    assert any(s["source"] == "install.md" for s in sources)
    assert events[-1][0] == "done", events
