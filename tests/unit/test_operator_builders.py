"""The operator's pure parts: builders against golden files, settings translation, status
computation, and the CRD against the spec model.

Golden files live in tests/golden/; after an intended change, rewrite them with
`RILLET_UPDATE_GOLDEN=1 make test-unit` and review the diff.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from rillet_operator import builders
from rillet_operator.builders import children
from rillet_operator.crd import (
    CHART_CRD_PATH,
    CRD_PATH,
    REFERENCE_PATH,
    render_chart_crd,
    render_crd,
    render_reference,
    to_yaml,
)
from rillet_operator.meta import ChatService
from rillet_operator.render import render_manifests
from rillet_operator.runtime_settings import (
    runtime_settings,
    secret_env,
    settings_file,
    termination_grace_seconds,
)
from rillet_operator.spec import ChatServiceSpec
from rillet_operator.status import Observed, compute_status
from rillet_runtime.settings import Settings
from rillet_runtime.version import default_image

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.yaml"))
GOLDEN = ROOT / "tests" / "golden"
UPDATE = os.environ.get("RILLET_UPDATE_GOLDEN") == "1"


def chat_service(example: Path) -> ChatService:
    document = yaml.safe_load(example.read_text())
    meta = document["metadata"]
    body = {
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace", "default"),
            "uid": "uid-1",
        },
        "spec": document["spec"],
    }
    return ChatService.from_body(body)


def check_golden(name: str, content: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(content)
    assert path.exists(), f"{path} is missing: run with RILLET_UPDATE_GOLDEN=1"
    assert content == path.read_text(), f"{name} drifted from its golden file"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_children_match_their_golden_files(example: Path) -> None:
    cs = chat_service(example)
    manifests = children(cs, redis_password="pw")
    check_golden(f"{example.stem}.yaml", "".join(f"---\n{to_yaml(m)}" for m in manifests))


@pytest.mark.parametrize(
    ("path", "render"),
    [
        (CRD_PATH, render_crd),
        (CHART_CRD_PATH, render_chart_crd),
        (REFERENCE_PATH, render_reference),
    ],
    ids=["crd", "chart-crd", "reference"],
)
def test_generated_files_match_the_spec_model(path: Path, render: Callable[[], str]) -> None:
    if UPDATE:
        path.write_text(render())
    assert path.read_text() == render(), f"run `make manifests` and commit {path.name}"


def test_the_examples_are_valid_specs_and_cover_every_child() -> None:
    kinds = {m["kind"] for example in EXAMPLES for m in children(chat_service(example), "pw")}
    assert kinds == {
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Secret",
        "StatefulSet",
        "NetworkPolicy",
    }


def test_rendered_settings_are_valid_runtime_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap's file plus the env the Deployment sets load as the runtime's Settings."""
    for example in EXAMPLES:
        cs = chat_service(example)
        config = builders.config_map(cs)["data"]["settings.yaml"]
        (tmp_path / "settings.yaml").write_text(config)
        monkeypatch.setenv("RILLET_SETTINGS_FILE", str(tmp_path / "settings.yaml"))
        for env in secret_env(cs.name, cs.spec):  # what the kubelet would inject
            monkeypatch.setenv(env["name"], env.get("value", f"secret-{env['name'].lower()}"))
        settings = Settings()
        assert settings.server.workers == cs.spec.server.workers_per_pod
        container = builders.deployment(cs)["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"http": settings.server.port, "metrics": settings.server.metrics_port}
        assert not settings.server.docs
        assert settings.state.checkpointer == ("redis" if cs.spec.redis else "memory")
        if cs.spec.model.fallback and cs.spec.model.fallback.api_key_secret_ref:
            assert settings.model.fallback is not None
            assert settings.model.fallback.api_key is not None
        for env in secret_env(cs.name, cs.spec):
            monkeypatch.delenv(env["name"])


def test_no_secret_reaches_the_config_map() -> None:
    cs = chat_service(ROOT / "docs" / "examples" / "openai-managed-redis.yaml")
    config = builders.config_map(cs)["data"]["settings.yaml"]
    for secret_word in ("api_key:", "redis_url:", "pw"):  # `api_keys:` is the keys' folder
        assert secret_word not in config
    assert {e["name"] for e in secret_env(cs.name, cs.spec)} >= {
        "RILLET_MODEL__API_KEY",
        "RILLET_STATE__REDIS_URL",
    }


def test_the_operators_environment_never_reaches_a_pods_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator process may carry RILLET_* variables of its own; the runtime's sources
    would read them (and fail on a settings file that only a pod has)."""
    cs = chat_service(EXAMPLES[0])
    rendered = builders.children(cs, redis_password="pw")
    monkeypatch.setenv("RILLET_SETTINGS_FILE", str(tmp_path / "only-in-a-pod.yaml"))
    monkeypatch.setenv("RILLET_SERVER", "not json")
    monkeypatch.setenv("RILLET_MODEL__API_KEY", "sk-operator")
    assert builders.children(cs, redis_password="pw") == rendered


def test_a_settings_change_changes_the_pod_template_hash() -> None:
    cs = chat_service(EXAMPLES[0])
    changed = ChatService(
        cs.name,
        cs.namespace,
        cs.uid,
        cs.spec.model_copy(
            update={"streaming": cs.spec.streaming.model_copy(update={"coalesce_max_chars": 99})}
        ),
    )
    assert builders.settings_hash(cs) != builders.settings_hash(changed)
    scaled = ChatService(
        cs.name,
        cs.namespace,
        cs.uid,
        cs.spec.model_copy(
            update={"autoscaling": cs.spec.autoscaling.model_copy(update={"max_replicas": 9})}
        ),
    )
    assert builders.settings_hash(cs) == builders.settings_hash(scaled)  # no needless rollout


def pod_image(manifests: list[dict[str, Any]]) -> str:
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    image: str = container["image"]
    return image


def test_pods_run_the_operators_image_unless_the_spec_pins_one() -> None:
    """No spec.image: the operator's default_image (the chart's image), this version's
    when none is given (`rillet render`, the golden files); a spec.image wins."""
    cs = chat_service(EXAMPLES[0])
    assert cs.spec.image is None
    assert pod_image(children(cs, "pw")) == default_image()
    operators = replace(cs, default_image="registry.example/rillet:0.1.0")
    assert pod_image(children(operators, "pw")) == "registry.example/rillet:0.1.0"
    pinned = replace(
        operators, spec=cs.spec.model_copy(update={"image": "registry.example/my-chat:1.0.0"})
    )
    assert pod_image(children(pinned, "pw")) == "registry.example/my-chat:1.0.0"
    for chat in (operators, pinned):  # as the live Deployment says, once there is one
        observed = Observed(1, builders.deployment(chat), None)
        assert compute_status(chat, observed, {}, "t")["image"] == pod_image(children(chat, "pw"))
    assert compute_status(pinned, Observed(1, None, None), {}, "t")["image"] is None


def test_render_takes_the_operators_default_image() -> None:
    document = yaml.safe_load(EXAMPLES[0].read_text())
    pinned = {**document, "spec": {**document["spec"], "image": "registry.example/mine:1"}}
    for documents, given, expected in (
        ([document], None, default_image()),
        ([document], "registry.example/rillet:0.1.0", "registry.example/rillet:0.1.0"),
        ([pinned], "registry.example/rillet:0.1.0", "registry.example/mine:1"),
    ):
        rendered = render_manifests(documents, default_image=given)
        assert pod_image([m for m in yaml.safe_load_all(rendered) if m]) == expected


def test_grace_period_outlasts_the_longest_stream() -> None:
    cs = chat_service(EXAMPLES[0])
    server = runtime_settings(cs.spec).server
    gunicorn_grace = server.max_stream_seconds + server.drain_seconds + 5
    assert termination_grace_seconds(server) > gunicorn_grace + server.drain_seconds
    pod = builders.deployment(cs)["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == termination_grace_seconds(server)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"server": {"workersPerPod": 0}}, "server.workersPerPod"),
        ({"model": {"provider": "gemini"}}, "model.provider"),
        ({"redis": {"external": {"url": "redis://:pw@host:6379"}}}, "redis.external.url"),
        ({"typo": 1}, "typo"),
    ],
)
def test_bad_specs_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ChatServiceSpec.model_validate(spec)
    assert field in {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}


def deployment(generation: int = 1, **status: Any) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "spec": {"replicas": 2}, "status": status}


AVAILABLE = {"type": "Available", "status": "True"}


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_status_follows_the_rollout() -> None:
    cs = chat_service(ROOT / "docs" / "examples" / "openai-managed-redis.yaml")
    redis_ready = {"status": {"readyReplicas": 1}}
    rolling = Observed(
        3,
        deployment(
            observedGeneration=1,
            replicas=3,
            updatedReplicas=1,
            availableReplicas=2,
            conditions=[AVAILABLE],
        ),
        redis_ready,
    )
    status = compute_status(cs, rolling, {}, "t1")
    assert condition(status, "Ready")["status"] == "False"
    assert condition(status, "Ready")["reason"] == "RollingOut"
    assert condition(status, "Progressing")["status"] == "True"
    assert status["observedGeneration"] == 3

    done = Observed(
        3,
        deployment(
            observedGeneration=1,
            replicas=2,
            updatedReplicas=2,
            availableReplicas=2,
            readyReplicas=2,
            conditions=[AVAILABLE],
        ),
        redis_ready,
    )
    later = compute_status(cs, done, status, "t2")
    assert condition(later, "Ready")["status"] == "True"
    assert condition(later, "Ready")["lastTransitionTime"] == "t2"
    assert condition(later, "Degraded")["lastTransitionTime"] == "t1"  # unchanged status
    assert later["readyReplicas"] == 2
    assert later["endpoint"] == "http://support-chat.default.svc:80"

    no_redis = compute_status(cs, Observed(3, done.deployment, {"status": {}}), later, "t3")
    assert condition(no_redis, "Ready")["reason"] == "RedisNotReady"
    assert condition(no_redis, "RedisReady")["status"] == "False"


def test_a_stuck_rollout_is_degraded() -> None:
    cs = chat_service(EXAMPLES[0])
    stuck = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": "image pull failed",
    }
    observed = Observed(
        1,
        deployment(
            observedGeneration=1,
            replicas=2,
            updatedReplicas=2,
            availableReplicas=0,
            conditions=[stuck],
        ),
        None,
    )
    status = compute_status(cs, observed, {}, "t")
    assert condition(status, "Degraded")["reason"] == "ProgressDeadlineExceeded"
    assert condition(status, "Ready")["reason"] == "DeploymentUnavailable"


def test_the_graphs_id_for_langgraphs_clients_reaches_the_pod_when_set() -> None:
    assert "graph_id" not in settings_file(runtime_settings(ChatServiceSpec()))
    spec = ChatServiceSpec.model_validate({"graph": {"id": "support"}})
    assert Settings.model_validate(settings_file(runtime_settings(spec))).graph_id == "support"
