"""`rillet bench` as a user runs it, against a real `rillet serve` (Rillet's API and the
OpenAI-compatible one) and `rillet fake-llm` (OpenAI's wire protocol)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FakeLLM, Process, fake_llm_process, rillet_server


@pytest.fixture(scope="module")
def fake(module_tmp: Path) -> Iterator[FakeLLM]:
    flags = ["--ttft-ms", "50", "--token-delay-ms", "5", "--answer-tokens", "20"]
    with fake_llm_process(module_tmp, *flags) as server:
        yield server


@pytest.fixture(scope="module")
def server(module_tmp: Path, fake: FakeLLM) -> Iterator[Process]:
    with rillet_server(
        module_tmp,
        workers=1,
        model__provider="openai",
        model__name="fake",
        model__base_url=f"{fake.url}/v1",
    ) as process:
        yield process


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rillet_runtime", "bench", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("api", ["rillet", "openai"])
def test_bench_reports_every_stream(server: Process, tmp_path: Path, api: str) -> None:
    out, plot = tmp_path / "result.json", tmp_path / "result.png"
    done = bench(
        server.url,
        "--api",
        api,
        "--model",
        "fake",
        "-c",
        "20",
        "-n",
        "60",
        "--out",
        str(out),
        "--plot",
        str(plot),
    )
    assert done.returncode == 0, done.stderr
    assert "60/60 streams ok" in done.stdout
    result = json.loads(out.read_text())
    assert (result["streams"], result["ok"], result["errors"]) == (60, 60, {})
    assert result["ttft_ms"]["p50"] >= 50  # never faster than the model's own first token
    assert result["tokens"] >= 60
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_bench_drives_the_fake_model_directly(fake: FakeLLM, tmp_path: Path) -> None:
    out = tmp_path / "direct.json"
    done = bench(
        fake.url, "--api", "openai", "--model", "fake", "-c", "200", "-n", "400", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["ok"] == 400
    assert result["tokens"] == 400 * 20


def test_errors_are_counted_not_hidden(server: Process) -> None:
    done = bench(server.url, "--api", "langgraph", "-n", "3")  # no such route on Rillet
    assert done.returncode == 0
    assert "0/3 streams ok" in done.stdout
    assert "http_404 3" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ftp://example"], "not an http(s) URL"),
        (["http://127.0.0.1:1", "--api", "grpc"], "one of rillet, openai, langgraph"),
        (["http://127.0.0.1:1", "--prompts", "/nonexistent/prompts.txt"], "--prompts"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(args: list[str], message: str) -> None:
    done = bench(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
