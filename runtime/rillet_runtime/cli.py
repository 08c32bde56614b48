"""`rillet`: serve the chat API, ingest and query documents, run the operator, render a
ChatService's manifests, load-test an endpoint, and a local fake model server."""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from rillet_runtime.settings import Settings
from rillet_runtime.version import describe

if TYPE_CHECKING:  # imported where used: `rillet serve` should not load the bench
    from rillet_runtime import loadgen

T = TypeVar("T")

INDEX_PATH_ENV = "RILLET_RETRIEVAL__EMBEDDED__PATH"

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


def print_version(requested: bool) -> None:
    if requested:
        typer.echo(describe())
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Options before any command."""


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


def run_checked(work: Coroutine[Any, Any, T]) -> T:
    """Run retrieval work; a bad setting becomes one readable line and exit 2."""
    from rillet_runtime.retrieval import RetrievalConfigError

    try:
        return asyncio.run(work)
    except RetrievalConfigError as exc:
        typer.echo(f"invalid setting {exc}", err=True)
        raise typer.Exit(2) from None


async def check_retrieval(settings: Settings) -> Path | None:
    """Open the configured retrieval once (building the default index if need be)."""
    from rillet_runtime.retrieval import build_retriever

    retriever = await build_retriever(settings)
    await retriever.close()
    return getattr(retriever.index, "path", None)


def open_to_the_network(settings: Settings) -> str | None:
    """Why serving would expose unauthenticated access beyond this machine, if it would."""
    auth, host = settings.auth, settings.server.host
    if auth.mode != "none" or auth.allow_unauthenticated:
        return None
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    return (
        f"invalid setting auth.mode: 'none' on {host} lets anyone reach every thread; "
        "set auth.mode (api_keys, jwt or trusted_header), or auth.allow_unauthenticated: true"
    )


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
    if refusal := open_to_the_network(settings):
        typer.echo(refusal, err=True)
        raise typer.Exit(2)
    # Fail here, naming the setting, rather than in every worker; and build the default
    # index once before the workers start.
    index_path = run_checked(check_retrieval(settings))
    if index_path is not None:
        os.environ[INDEX_PATH_ENV] = str(index_path)
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


@app.command()
def ingest(
    paths: Annotated[
        list[Path], typer.Argument(help="markdown, text and HTML files or folders", exists=True)
    ],
    index: Annotated[
        Path | None,
        typer.Option(help="embedded index folder (retrieval.embedded.path)", envvar=INDEX_PATH_ENV),
    ] = None,
    prune: Annotated[
        bool, typer.Option(help="delete chunks that no file produces any more")
    ] = True,
) -> None:
    """Chunk, embed and write documents into the configured index; unchanged ones are skipped."""
    from rich.progress import Progress

    from rillet_runtime.retrieval import embedder_dimensions, ingest_into, make_embedder
    from rillet_runtime.retrieval.embeddings import close_embedder
    from rillet_runtime.retrieval.ingest import IngestReport
    from rillet_runtime.state import open_state

    if index is not None:
        os.environ[INDEX_PATH_ENV] = str(index)
    settings = load_settings()
    retrieval = settings.retrieval
    if retrieval.provider == "embedded" and retrieval.embedded.path is None:
        typer.echo("rillet ingest: give --index DIR (or retrieval.embedded.path)", err=True)
        raise typer.Exit(2)

    async def run(progress: Progress) -> IngestReport:
        task = progress.add_task("embedding", total=None)
        # With Redis configured, chunks are embedded through its cache.
        async with open_state(settings) as state:
            embedder = make_embedder(settings, state.embedding_cache)
            try:
                return await ingest_into(
                    settings,
                    embedder,
                    await embedder_dimensions(embedder),
                    retrieval.embedded.path or Path(),
                    paths,
                    prune=prune,
                    on_plan=lambda total: progress.update(task, total=total),
                    on_progress=lambda done: progress.advance(task, done),
                )
            finally:
                await close_embedder(embedder)

    with Progress(transient=True) as progress:
        report = run_checked(run(progress))
    where = retrieval.embedded.path if retrieval.provider == "embedded" else retrieval.provider
    typer.echo(
        f"{report.files} files, {report.chunks} chunks: {report.added} added, "
        f"{report.removed} removed, {report.unchanged} unchanged ({where})"
    )


@app.command()
def query(
    text: Annotated[str, typer.Argument(help="the question")],
    k: Annotated[int | None, typer.Option("--k", "-k", help="hits (retrieval.k)")] = None,
    where: Annotated[
        list[str] | None, typer.Option(help="metadata filter FIELD=VALUE (repeat to AND)")
    ] = None,
    index: Annotated[
        Path | None,
        typer.Option(help="embedded index folder (retrieval.embedded.path)", envvar=INDEX_PATH_ENV),
    ] = None,
) -> None:
    """Print what retrieval finds for a question, with scores: for debugging an index."""
    if index is not None:
        os.environ[INDEX_PATH_ENV] = str(index)
    settings = load_settings()
    filters = dict(item.split("=", 1) for item in where or [] if "=" in item)
    if len(filters) != len(where or []):
        typer.echo("--where takes FIELD=VALUE", err=True)
        raise typer.Exit(2)

    async def search() -> None:
        from rillet_runtime.retrieval import build_retriever

        retriever = await build_retriever(settings)
        try:
            prepared = await retriever.prepare_query(text)
            hits = await retriever.search(
                prepared,
                k or settings.retrieval.k,
                settings.retrieval.score_threshold,
                where=filters or None,
            )
            passages = {p.id: p for p in await retriever.get_passages([h.id for h in hits])}
        finally:
            await retriever.close()
        if not hits:
            typer.echo("no hits")
        for rank, hit in enumerate(hits, start=1):
            snippet = " ".join(passages[hit.id].text.split())[:160] if hit.id in passages else ""
            typer.echo(f"{rank}. {hit.score:.4f}  {hit.title}  ({hit.source}, {hit.id})")
            typer.echo(f"   {snippet}")

    try:
        run_checked(search())
    except ValueError as exc:  # a filter field the index cannot take
        typer.echo(f"rillet query: {exc}", err=True)
        raise typer.Exit(2) from None


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
        typer.Option(
            help="watch this namespace (repeat for several; RILLET_OPERATOR_NAMESPACES=a,b); "
            "none: the whole cluster"
        ),
    ] = None,
    liveness: Annotated[
        str | None, typer.Option(help="serve a liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve Prometheus metrics on this port (/metrics)")
    ] = None,
    prometheus_url: Annotated[
        str | None,
        typer.Option(
            help="Prometheus that scrapes ChatService pods: observed latency in status, "
            "and the server KEDA triggers query (RILLET_PROMETHEUS_URL)",
        ),
    ] = None,
    default_image: Annotated[
        str | None,
        typer.Option(
            help="the image of ChatService pods whose spec names none "
            "(RILLET_OPERATOR_DEFAULT_IMAGE); default: this version's",
        ),
    ] = None,
) -> None:
    """Run the ChatService operator (kopf) with the current kubeconfig or in-cluster account.
    Settings: rillet_operator.settings (RILLET_OPERATOR_* variables); flags override them."""
    import kopf
    import prometheus_client

    import rillet_operator.handlers  # noqa: F401  (registers the handlers)
    from rillet_operator.settings import OperatorSettings

    try:
        settings = OperatorSettings.with_flags(
            namespaces=namespace,
            liveness=liveness,
            metrics_port=metrics_port,
            prometheus_url=prometheus_url,
            default_image=default_image,
        )
    except ValidationError as exc:
        typer.echo(f"rillet operator: {exc}", err=True)
        raise typer.Exit(2) from None
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port)
    # kopf's format (time, logger, level); its own chatter stays at warnings, ours at info.
    kopf.configure(quiet=True)
    logging.getLogger("rillet_operator").setLevel(logging.INFO)
    # kopf names itself after the user otherwise, which fails for a uid without a passwd
    # entry (any runAsUser the image does not know); in a pod the hostname is the pod name.
    os.environ.setdefault("POD_ID", socket.gethostname())
    kopf.run(
        standalone=True,  # no cluster-wide peering objects; run one replica (leader election
        clusterwide=not settings.namespaces,  # belongs to the chart's Deployment strategy)
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness,
        memo=kopf.Memo(settings=settings),
    )


@app.command()
def render(
    file: Annotated[Path, typer.Option("--file", "-f", help="a ChatService manifest (YAML)")],
    prometheus_url: Annotated[
        str | None,
        typer.Option(envvar="RILLET_PROMETHEUS_URL", help="as given to the operator (KEDA)"),
    ] = None,
    default_image: Annotated[
        str | None,
        typer.Option(help="as given to the operator; default: this version's image"),
    ] = None,
) -> None:
    """Print the manifests the operator would apply for a ChatService, without a cluster."""
    import yaml
    from pydantic import ValidationError as SpecError

    from rillet_operator.render import render_manifests

    try:
        documents = list(yaml.safe_load_all(file.read_text(encoding="utf-8")))
        typer.echo(render_manifests(documents, prometheus_url, default_image), nl=False)
    except (OSError, yaml.YAMLError, ValueError, SpecError) as exc:
        typer.echo(f"rillet render: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def bench(
    url: Annotated[str, typer.Argument(help="base URL, e.g. http://demo.chat.svc")],
    api: Annotated[str, typer.Option(help="rillet, openai or langgraph")] = "rillet",
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1)] = 10,
    ramp: Annotated[float, typer.Option(help="seconds over which clients start", min=0)] = 0,
    duration: Annotated[
        float | None, typer.Option(help="seconds to run after the ramp", min=0.1)
    ] = None,
    requests: Annotated[
        int | None, typer.Option("--requests", "-n", help="streams in all", min=1)
    ] = None,
    prompts: Annotated[Path | None, typer.Option(help="a file of prompts, one per line")] = None,
    model: Annotated[
        str, typer.Option(help="model (openai) or assistant id (langgraph)")
    ] = "default",
    timeout: Annotated[float, typer.Option(help="seconds one stream may take")] = 300,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="RILLET_API_KEY", help="sent as `Authorization: Bearer`"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="write the results as JSON here")] = None,
    plot: Annotated[Path | None, typer.Option(help="write a PNG plot here")] = None,
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate",
            help="find the highest concurrency that meets the targets (point URL at one pod): "
            "the ChatService's autoscaling.streamsPerPod",
        ),
    ] = False,
    ttft_p95_ms: Annotated[float, typer.Option(help="--calibrate: TTFT target", min=1)] = 1000,
    itl_p95_ms: Annotated[float, typer.Option(help="--calibrate: inter-token target", min=1)] = 100,
    max_concurrency: Annotated[int, typer.Option(help="--calibrate: stop here", min=1)] = 1024,
    step_seconds: Annotated[
        float, typer.Option(help="--calibrate: seconds of load per step", min=1)
    ] = 20,
) -> None:
    """Load a running endpoint with concurrent SSE streams; report TTFT, inter-token
    latency, tokens/s and errors. With --calibrate, step the concurrency up to the highest
    that meets the latency targets."""
    import asyncio
    import json

    from rillet_runtime import calibrate as calibration
    from rillet_runtime import loadgen

    if api not in loadgen.APIS:
        raise typer.BadParameter(f"one of {', '.join(loadgen.APIS)}", param_hint="--api")
    if plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise typer.BadParameter(
            "needs matplotlib: pip install 'rillet[plot]'", param_hint="--plot"
        )
    try:
        plan = loadgen.LoadPlan(
            concurrency,
            ramp,
            duration if duration is not None else (None if requests else 10.0),
            requests,
            timeout,
        )
        loadgen.Endpoint.parse(url)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    lines = ["How do I install Rillet?"]
    if prompts is not None:
        try:
            text = prompts.read_text(encoding="utf-8")
            lines = [line.strip() for line in text.splitlines() if line.strip()]
        except OSError as exc:
            raise typer.BadParameter(str(exc), param_hint="--prompts") from None
        if not lines:
            raise typer.BadParameter("the file has no prompts", param_hint="--prompts")

    if calibrate:
        targets = calibration.Targets(ttft_p95_ms, itl_p95_ms)

        async def run_step(streams: int) -> list[loadgen.StreamResult]:
            step = loadgen.LoadPlan(streams, 1.0, step_seconds, None, timeout)
            return (await _bench(url, loadgen.APIS[api], step, lines, model, api_key))[0]

        def on_step(step: calibration.Step) -> None:
            typer.echo(calibration.describe(step, targets))

        steps = asyncio.run(
            calibration.calibrate(run_step, targets, concurrency, max_concurrency, on_step)
        )
        found = calibration.report(steps, targets)
        if out is not None:
            out.write_text(json.dumps({"url": url, "api": api, **found}, indent=2))
        if found["streams_per_pod"] is None:
            typer.echo("no concurrency met the targets (not even 1 stream)", err=True)
            raise typer.Exit(1)
        typer.echo(
            f"streamsPerPod: {found['streams_per_pod']}\n"
            "kubectl patch chat NAME --type merge -p "
            f'\'{{"spec":{{"autoscaling":{{"streamsPerPod":{found["streams_per_pod"]}}}}}}}\''
        )
        return

    results = asyncio.run(_bench(url, loadgen.APIS[api], plan, lines, model, api_key))
    summary = loadgen.summarize(*results)
    typer.echo(loadgen.table(summary))
    if out is not None:
        record = {"url": url, "api": api, "plan": vars(plan), **summary}
        out.write_text(json.dumps(record, indent=2))
    if plot is not None:
        loadgen.plot(results[0], str(plot))


async def _bench(
    url: str,
    api: loadgen.Api,
    plan: loadgen.LoadPlan,
    prompts: list[str],
    model: str,
    api_key: str | None,
) -> tuple[list[loadgen.StreamResult], float]:
    """The load, with a live status line on a terminal."""
    import asyncio

    from rich.console import Console
    from rich.live import Live

    from rillet_runtime import loadgen

    progress = loadgen.Progress()
    started = time.perf_counter()
    task = asyncio.create_task(loadgen.run_load(url, api, plan, prompts, model, progress, api_key))
    console = Console(stderr=True)
    with Live(console=console, transient=True, auto_refresh=False) as live:
        while not task.done():
            live.update(
                f"{progress.open} open · {progress.finished} done · {progress.errors} errors · "
                f"{progress.tokens:,} tokens · {time.perf_counter() - started:.0f} s",
                refresh=True,
            )
            await asyncio.wait([task], timeout=0.5)
    return task.result(), time.perf_counter() - started


def main() -> None:
    app()
