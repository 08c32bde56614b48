"""Settings: env over file over defaults, errors that name the setting, derived values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from rillet_runtime.cli import app
from rillet_runtime.serving.gunicorn_conf import gunicorn_options
from rillet_runtime.settings import Settings


def test_env_overrides_the_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(
        "server:\n  workers: 4\n  port: 9000\nstreaming:\n  coalesce_max_chars: 64\n"
    )
    monkeypatch.setenv("RILLET_SETTINGS_FILE", str(settings_file))
    monkeypatch.setenv("RILLET_SERVER__PORT", "9100")
    settings = Settings()
    assert settings.server.workers == 4  # from the file
    assert settings.server.port == 9100  # env wins
    assert settings.streaming.coalesce_max_chars == 64
    assert settings.model.provider == "extractive"  # default


def test_a_missing_settings_file_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RILLET_SETTINGS_FILE", "/nonexistent/settings.yaml")
    with pytest.raises(FileNotFoundError, match="RILLET_SETTINGS_FILE"):
        Settings()


def test_unknown_and_invalid_settings_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RILLET_SERVER__WORKERS", "0")
    with pytest.raises(ValidationError, match=r"server\.workers"):
        Settings()


def test_anthropic_needs_an_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("RILLET_MODEL__PROVIDER", "anthropic")
    with pytest.raises(ValidationError, match="api_key is required"):
        Settings()


def test_the_cli_reports_a_bad_setting_without_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RILLET_STREAMING__COALESCE_MAX_MS", "-1")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "invalid setting streaming.coalesce_max_ms" in result.output
    assert "Traceback" not in result.output


def test_api_keys_never_appear_in_settings_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RILLET_MODEL__PROVIDER", "openai")
    monkeypatch.setenv("RILLET_MODEL__API_KEY", "sk-very-secret")
    settings = Settings()
    assert "sk-very-secret" not in repr(settings)
    assert "sk-very-secret" not in settings.model_dump_json()


def test_gunicorn_outwaits_the_longest_stream() -> None:
    settings = Settings.model_validate(
        {"server": {"workers": 3, "max_stream_seconds": 120, "drain_seconds": 5}}
    )
    options = gunicorn_options(settings)
    assert options["workers"] == 3
    assert options["graceful_timeout"] == 130
    assert options["worker_class"] == "rillet_runtime.serving.worker.RilletWorker"
    assert options["max_requests_jitter"] > 0
