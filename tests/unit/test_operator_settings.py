"""The operator's settings: the variable names the chart and the tests set, flags over them."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from rillet_operator.autoscaling import ADAPT_SECONDS
from rillet_operator.settings import OperatorSettings
from rillet_runtime.version import default_image


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RILLET_OPERATOR_") or name == "RILLET_PROMETHEUS_URL":
            monkeypatch.delenv(name)


def test_defaults_watch_the_whole_cluster_without_prometheus() -> None:
    settings = OperatorSettings()
    assert settings.namespaces == []
    assert settings.prometheus_url is None
    assert (settings.resync_seconds, settings.observe_seconds) == (300, 30)
    assert settings.adapt_seconds == ADAPT_SECONDS
    assert settings.default_image == default_image()  # this version's


def test_the_chart_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RILLET_OPERATOR_NAMESPACES", "team-a, team-b,")
    monkeypatch.setenv("RILLET_PROMETHEUS_URL", "http://prometheus:9090")
    monkeypatch.setenv("RILLET_OPERATOR_OBSERVE_SECONDS", "1")
    monkeypatch.setenv("RILLET_OPERATOR_ADAPT_SECONDS", "2")
    monkeypatch.setenv("RILLET_OPERATOR_DEFAULT_IMAGE", "registry.example/rillet:0.1.0")
    settings = OperatorSettings()
    assert settings.namespaces == ["team-a", "team-b"]
    assert settings.prometheus_url == "http://prometheus:9090"
    assert (settings.observe_seconds, settings.adapt_seconds) == (1, 2)
    assert settings.default_image == "registry.example/rillet:0.1.0"


def test_an_empty_namespace_list_is_the_whole_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RILLET_OPERATOR_NAMESPACES", "")  # what the chart sets cluster-wide
    assert OperatorSettings().namespaces == []


def test_flags_override_the_environment_and_none_leaves_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RILLET_OPERATOR_NAMESPACES", "from-env")
    monkeypatch.setenv("RILLET_PROMETHEUS_URL", "http://env:9090")
    monkeypatch.setenv("RILLET_OPERATOR_DEFAULT_IMAGE", "env.example/rillet:1")
    settings = OperatorSettings.with_flags(
        namespaces=["from-flag"],
        prometheus_url=None,
        metrics_port=8080,
        default_image="flag.example/rillet:1",
    )
    assert settings.namespaces == ["from-flag"]
    assert settings.prometheus_url == "http://env:9090"
    assert settings.metrics_port == 8080
    assert settings.default_image == "flag.example/rillet:1"


def test_a_bad_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RILLET_OPERATOR_OBSERVE_SECONDS", "0")
    with pytest.raises(ValidationError, match="observe_seconds"):
        OperatorSettings()
