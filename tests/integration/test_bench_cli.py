"""`rillet bench` as a user runs it, against a real `rillet serve` (Rillet's API and the
OpenAI-compatible one) and `rillet fake-llm` (OpenAI's wire protocol)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from bench.floor import serve_command
from tests.support.processes import free_port, wait_until_ready
from tests.support.servers import FakeLLM, Process, fake_llm_process, rillet_server


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
        **fake.openai_settings(),
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


def test_calibrate_stops_at_the_ceiling_when_every_step_meets_the_targets(
    server: Process, tmp_path: Path
) -> None:
    out = tmp_path / "calibration.json"
    args = ["--calibrate", "-c", "2", "--max-concurrency", "8", "--step-seconds", "1"]
    done = bench(server.url, *args, "--ttft-p95-ms", "60000", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "streamsPerPod: 8" in done.stdout
    assert '"streamsPerPod":8' in done.stdout  # the kubectl patch to paste
    result = json.loads(out.read_text())
    assert [s["concurrency"] for s in result["steps"]] == [2, 4, 8]
    assert result["streams_per_pod"] == 8


def test_calibrate_fails_when_no_concurrency_meets_the_targets(
    server: Process, tmp_path: Path
) -> None:
    """The fake model takes 50 ms to its first token: a 10 ms TTFT target is out of reach."""
    out = tmp_path / "calibration.json"
    args = ["--calibrate", "-c", "4", "--step-seconds", "1", "--ttft-p95-ms", "10"]
    done = bench(server.url, *args, "--out", str(out))
    assert done.returncode == 1
    assert "no concurrency met the targets" in done.stderr
    result = json.loads(out.read_text())
    assert [s["concurrency"] for s in result["steps"]] == [4, 2, 1]
    assert result["streams_per_pod"] is None


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


def test_the_benchmark_floor_relays_the_models_tokens(fake: FakeLLM, tmp_path: Path) -> None:
    """The floor the streaming benchmark compares against, under gunicorn as there."""
    port = free_port()
    command = serve_command(port)
    env = {**os.environ, "RILLET_FLOOR_MODEL_URL": f"{fake.url}/v1"}
    log = tmp_path / "floor.log"
    with log.open("wb") as out:
        floor = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/readyz", floor, log)
        result_file = tmp_path / "floor.json"
        done = bench(f"http://127.0.0.1:{port}", "-c", "10", "-n", "20", "--out", str(result_file))
        assert done.returncode == 0, done.stderr
        result = json.loads(result_file.read_text())
        assert (result["ok"], result["tokens"]) == (20, 20 * 20)
    finally:
        floor.terminate()
        floor.wait(timeout=30)


async def test_the_graph_for_langgraphs_server_streams_from_the_model(
    fake: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The module `langgraph dev` serves in the benchmark: Rillet's graph, from RILLET_ env."""
    monkeypatch.setenv("RILLET_MODEL__PROVIDER", "openai")
    monkeypatch.setenv("RILLET_MODEL__NAME", "fake")
    monkeypatch.setenv("RILLET_MODEL__BASE_URL", f"{fake.url}/v1")
    module = importlib.import_module("bench.langgraph_app")
    chunks = [
        chunk
        async for chunk, _ in module.graph.astream(
            {"messages": [HumanMessage(content="How do I install Rillet?")]},
            stream_mode="messages",
        )
        if chunk.content
    ]
    assert len(chunks) == 20
