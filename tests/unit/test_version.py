"""One version: pyproject.toml's. The package metadata, `rillet --version`, the chart, the
images the CRD, the chart and the docs name, and the changelog all agree with it; `/info`
says what the settings turn on."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from rillet_operator.settings import OperatorSettings
from rillet_runtime.api.langgraph.assistants import enabled_features
from rillet_runtime.cli import app
from rillet_runtime.settings import Settings
from rillet_runtime.version import (
    IMAGE_REPOSITORY,
    REVISION_ENV,
    default_image,
    describe,
    version,
)

ROOT = Path(__file__).resolve().parents[2]
PROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
    "version"
]
# A reference to Rillet's image with a version tag (placeholders such as `<version>` aside).
IMAGE_REFERENCE = re.compile(re.escape(IMAGE_REPOSITORY) + r":(\d+\.\d+\.\d+[\w.+-]*)")


def _yaml(path: str) -> Any:
    return yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))


def test_the_installed_package_has_the_pyproject_version() -> None:
    assert version() == PROJECT_VERSION, "the installed metadata is stale: run `make venv`"


def test_rillet_version_prints_the_version_and_the_revision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(REVISION_ENV, "0123456789ab")
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"rillet {PROJECT_VERSION} (revision 0123456789ab)\n"


def test_an_image_built_without_a_revision_says_so() -> None:
    assert describe({}) == f"rillet {PROJECT_VERSION} (revision unknown)"
    assert describe({REVISION_ENV: ""}) == f"rillet {PROJECT_VERSION} (revision unknown)"


def test_the_chart_version_and_app_version_are_the_project_version() -> None:
    chart = _yaml("charts/rillet/Chart.yaml")
    assert (chart["version"], chart["appVersion"]) == (PROJECT_VERSION, PROJECT_VERSION)


def test_the_chart_runs_the_image_of_its_app_version() -> None:
    image = _yaml("charts/rillet/values.yaml")["image"]
    assert image["repository"] == IMAGE_REPOSITORY
    assert image["tag"] == ""  # the chart's appVersion
    helper = (ROOT / "charts/rillet/templates/_helpers.tpl").read_text(encoding="utf-8")
    assert "(default .Chart.AppVersion .Values.image.tag)" in helper


def test_chat_service_pods_default_to_the_operators_image() -> None:
    """This version's image unless the chart gives the operator its own; the CRD names
    none, since the API server would store a schema default in every ChatService and pin
    it to that version through the operator's upgrades."""
    assert default_image() == f"{IMAGE_REPOSITORY}:{PROJECT_VERSION}"
    field = OperatorSettings.model_fields["default_image"]
    assert field.get_default(call_default_factory=True) == default_image()
    deployment = (ROOT / "charts/rillet/templates/deployment.yaml").read_text(encoding="utf-8")
    assert re.search(
        r"- name: RILLET_OPERATOR_DEFAULT_IMAGE\n"
        r'\s+value: {{ include "rillet.image" \. \| quote }}',
        deployment,
    ), "the chart gives the operator its own image as the ChatServices' default"
    for crd in ("crds/chatservices.rillet.dev.yaml", "charts/rillet/templates/crd.yaml"):
        assert IMAGE_REFERENCE.findall((ROOT / crd).read_text(encoding="utf-8")) == [], crd
    (served,) = _yaml("crds/chatservices.rillet.dev.yaml")["spec"]["versions"]
    spec = served["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert "default" not in spec["properties"]["image"]
    assert "image" not in spec["default"]  # the chart's copy is drift-tested against it


def test_every_image_the_docs_and_the_chart_name_is_this_version() -> None:
    files = [ROOT / "README.md", ROOT / "Dockerfile", *(ROOT / "docs").rglob("*.md")]
    files += [p for p in (ROOT / "charts").rglob("*") if p.is_file()]
    tags = {
        (str(path.relative_to(ROOT)), tag)
        for path in files
        for tag in IMAGE_REFERENCE.findall(path.read_text(encoding="utf-8", errors="replace"))
    }
    assert tags, "no versioned image reference found: the pattern is out of date"
    assert {(path, tag) for path, tag in tags if tag != PROJECT_VERSION} == set()


def test_the_changelog_has_unreleased_on_top_and_a_dated_section_per_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings[0] == "Unreleased"
    released = [re.fullmatch(r"(\d+\.\d+\.\d+\S*) - (\d{4}-\d{2}-\d{2})", h) for h in headings[1:]]
    assert all(released), headings
    versions = [m[1] for m in released if m]
    assert PROJECT_VERSION in versions
    dates = [m[2] for m in released if m]
    assert dates == sorted(dates, reverse=True), "newest release first"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({}, "memory"),
        ({"checkpointer": "redis", "redis_url": "redis://127.0.0.1:6379"}, "redis"),
        (
            {"checkpointer": "redis", "redis_url": "redis://127.0.0.1:7000", "redis_cluster": True},
            "redis-cluster",
        ),
        (
            {
                "checkpointer": "redis",
                "redis_sentinel": {"master_name": "main", "addresses": ["sentinel-0"]},
            },
            "redis-sentinel",
        ),
    ],
)
def test_info_names_the_state_backend(state: dict[str, Any], expected: str) -> None:
    assert enabled_features(Settings(state=state))["state"] == expected


def test_info_names_what_is_on_by_kind_never_by_address() -> None:
    settings = Settings(
        graph="tests.support.graphs:echo_graph",
        model={
            "provider": "openai",
            "name": "gpt",
            "base_url": "http://model.internal/v1",
            "api_key": "sk-secret",
            "fallback": {"provider": "anthropic", "name": "claude", "api_key": "sk-other"},
        },
        retrieval={
            "provider": "qdrant",
            "qdrant": {"url": "http://qdrant:6333", "collection": "c"},
        },
        auth={"mode": "trusted_header"},
        state={"response_cache": True},
        streaming={"resumable": False},
        server={"docs": True},
    )
    features = enabled_features(settings)
    assert features == {
        "graph": "custom",
        "model": "openai",
        "fallback_model": "anthropic",
        "retrieval": "qdrant",
        "hybrid_search": False,
        "embeddings": "offline",
        "state": "memory",
        "auth": "trusted_header",
        "response_cache": True,
        "resumable_streams": False,
        "docs": True,
    }
    shown = str(features)
    assert not [s for s in ("sk-", "model.internal", "qdrant:6333", "echo_graph") if s in shown]
