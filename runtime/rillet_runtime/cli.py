"""`rillet`: one CLI for serving, draining and the local fake LLM."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from rillet_runtime.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


def load_settings() -> Settings:
    """Settings or a readable exit: the field named, no traceback."""
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"]) or "settings"
            typer.echo(f"invalid setting {field}: {error['msg']}", err=True)
        raise typer.Exit(2) from None
    except FileNotFoundError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def prepare_metrics_dir(configured: Path | None) -> Path:
    """A clean multiprocess dir: stale files from an earlier run would skew the sums."""
    path = configured or Path(tempfile.gettempdir()) / f"rillet-metrics-{os.getpid()}"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (server.host)")] = None,
    port: Annotated[int | None, typer.Option(help="bind port (server.port)")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (server.workers)")] = None,
) -> None:
    """Run the chat API under gunicorn with uvicorn workers."""
    for name, value in (("HOST", host), ("PORT", port), ("WORKERS", workers)):
        if value is not None:
            os.environ[f"RILLET_SERVER__{name}"] = str(value)
    settings = load_settings()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prepare_metrics_dir(settings.server.metrics_dir))
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:rillet_runtime.serving.gunicorn_conf",
        "rillet_runtime.asgi:app",
    ]
    # exec: gunicorn becomes this process, so it gets the pod's signals directly.
    os.execv(sys.executable, argv)


@app.command()
def drain(
    wait: Annotated[float, typer.Option(help="seconds to wait after marking (preStop)")] = 0.0,
) -> None:
    """Mark the pod as draining (readiness fails, new streams get 503); for a preStop hook."""
    settings = load_settings()
    drain_file = settings.server.drain_file
    if drain_file is None:
        typer.echo("server.drain_file is not set (RILLET_SERVER__DRAIN_FILE)", err=True)
        raise typer.Exit(2)
    drain_file.parent.mkdir(parents=True, exist_ok=True)
    drain_file.touch()
    time.sleep(wait)


@app.command("fake-llm")
def fake_llm(
    host: str = "127.0.0.1",
    port: int = 8400,
    ttft_ms: Annotated[float, typer.Option(help="delay before the first token")] = 200,
    token_delay_ms: Annotated[float, typer.Option(help="delay between tokens")] = 20,
    answer_tokens: Annotated[int, typer.Option(help="tokens per answer")] = 64,
    error_rate: Annotated[float, typer.Option(help="share of requests answered with 500")] = 0.0,
) -> None:
    """A local server speaking OpenAI's and Anthropic's streaming APIs, for tests and benchmarks."""
    from rillet_runtime.fakellm import FakeLLMConfig, serve_fake_llm

    config = FakeLLMConfig(
        ttft_ms=ttft_ms,
        token_delay_ms=token_delay_ms,
        answer_tokens=answer_tokens,
        error_rate=error_rate,
    )
    serve_fake_llm(config, host=host, port=port)


@app.command()
def operator(
    namespace: Annotated[
        list[str] | None,
        typer.Option(help="watch this namespace (repeat for several); none: the whole cluster"),
    ] = None,
    liveness: Annotated[
        str | None, typer.Option(help="serve a liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve Prometheus metrics on this port (/metrics)")
    ] = None,
) -> None:
    """Run the ChatService operator (kopf) with the current kubeconfig or in-cluster account."""
    import kopf
    import prometheus_client

    import rillet_operator.handlers  # noqa: F401  (registers the handlers)

    namespaces = namespace or [
        n for n in os.environ.get("RILLET_OPERATOR_NAMESPACES", "").split(",") if n
    ]
    if metrics_port:
        prometheus_client.start_http_server(metrics_port)
    # kopf names itself after the user otherwise, which fails for a uid without a passwd
    # entry (any runAsUser the image does not know); in a pod the hostname is the pod name.
    os.environ.setdefault("POD_ID", socket.gethostname())
    kopf.run(
        standalone=True,  # no cluster-wide peering objects; run one replica (leader election
        clusterwide=not namespaces,  # belongs to the chart's Deployment strategy)
        namespaces=namespaces,
        liveness_endpoint=liveness,
        memo=kopf.Memo(namespaces=namespaces),
    )


@app.command()
def render(
    file: Annotated[Path, typer.Option("--file", "-f", help="a ChatService manifest (YAML)")],
) -> None:
    """Print the manifests the operator would apply for a ChatService, without a cluster."""
    import yaml
    from pydantic import ValidationError as SpecError

    from rillet_operator.render import render_manifests

    try:
        documents = list(yaml.safe_load_all(file.read_text(encoding="utf-8")))
        typer.echo(render_manifests(documents), nl=False)
    except (OSError, yaml.YAMLError, ValueError, SpecError) as exc:
        typer.echo(f"rillet render: {exc}", err=True)
        raise typer.Exit(2) from None


def main() -> None:
    app()
