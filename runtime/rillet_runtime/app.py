"""`create_app(settings)`: the FastAPI app and the lifespan that owns every pool and client."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import redis
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sse_starlette.sse import AppStatus
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware

from rillet_runtime.admission import Admission
from rillet_runtime.api import chat, docs, langgraph, openai_compat, ops, runs
from rillet_runtime.api.errors import (
    BodyLimitMiddleware,
    checkpoint_pruned_handler,
    http_exception_handler,
    redis_reply_handler,
    state_corrupt_handler,
    state_unavailable_handler,
    thread_too_large_handler,
    unhandled_exception_handler,
    validation_exception_handler,
)
from rillet_runtime.app_state import LifespanState, Runtime
from rillet_runtime.auth import open_authenticator
from rillet_runtime.events import CheckpointCorrupt, CheckpointPruned, ThreadTooLarge
from rillet_runtime.graph import graph_deps, load_graph
from rillet_runtime.metrics import STREAM_CAPACITY
from rillet_runtime.retrieval import open_retriever
from rillet_runtime.settings import Settings
from rillet_runtime.state import open_state
from rillet_runtime.version import version

log = logging.getLogger(__name__)
CORS_METHODS = ["GET", "POST", "PATCH", "DELETE"]  # every method the APIs route


def model_http_client(settings: Settings) -> httpx.AsyncClient:
    """The pool the graph's model calls (and JWKS fetches) share: a connection for every
    stream the worker admits, where httpx's default of 100 would queue the rest; the
    streaming benchmark gives LangGraph's server the same."""
    limits = httpx.Limits(
        max_connections=settings.server.max_streams_per_worker + 20,
        max_keepalive_connections=100,
    )
    return httpx.AsyncClient(limits=limits, timeout=settings.model.timeout_seconds)


def create_app(settings: Settings) -> FastAPI:
    lag_ms = settings.server.max_event_loop_lag_ms
    admission = Admission(
        settings.server.max_streams_per_worker,
        settings.server.drain_file,
        max_loop_lag=lag_ms / 1000 if lag_ms else None,
    )
    # sse-starlette would cancel every open stream on SIGTERM; we drain them instead.
    AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[LifespanState]:
        async with (
            model_http_client(settings) as http,
            open_authenticator(settings.auth, http) as authenticator,
            open_state(settings) as state,
            open_retriever(settings, state.embedding_cache) as retriever,
            admission.watching(),
        ):
            deps = graph_deps(settings, http, retriever, state.response_cache)
            runtime = Runtime(
                settings=settings,
                admission=admission,
                authenticator=authenticator,
                graph=load_graph(settings.graph, deps, state.checkpointer),
                checkpointer=state.checkpointer,
                limiter=state.limiter,
                runs=state.runs,
                run_log=state.run_log,
                threads=state.threads,
                response_cache=state.response_cache,
            )
            # Everything built so far (imported libraries, models, the corpus) lives as
            # long as the worker: out of the collector's sight, a full collection no
            # longer walks it. Measured: 250 ms whole-worker pauses mid-stream before.
            gc.collect()
            gc.freeze()
            STREAM_CAPACITY.set(settings.server.max_streams_per_worker)
            yield {"runtime": runtime}

    # FastAPI's own /docs and /openapi.json take no dependencies: api/docs.py serves them,
    # behind a principal, when server.docs is on.
    app = FastAPI(
        title="Rillet runtime",
        version=version(),
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.admission = admission
    app.add_exception_handler(RequestValidationError, validation_exception_handler)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)  # type: ignore[arg-type]
    app.add_exception_handler(CheckpointCorrupt, state_corrupt_handler)  # type: ignore[arg-type]
    app.add_exception_handler(CheckpointPruned, checkpoint_pruned_handler)  # type: ignore[arg-type]
    app.add_exception_handler(ThreadTooLarge, thread_too_large_handler)  # type: ignore[arg-type]
    app.add_exception_handler(redis.ResponseError, redis_reply_handler)  # type: ignore[arg-type]
    # ClusterError covers CLUSTERDOWN and MASTERDOWN (also reply errors) and redirects that
    # ran out of attempts: a cluster failing over.
    for unreachable in (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterError):
        app.add_exception_handler(unreachable, state_unavailable_handler)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unhandled_exception_handler)
    app.add_middleware(GZipMiddleware, minimum_size=1024)  # never touches text/event-stream
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.server.max_body_bytes)
    cors = settings.server.cors
    if cors.allow_origins:
        # Outermost (added last), so refusals (401, 413, 429) carry the headers a page needs
        # to read them; a preflight is answered here, before routing and authentication.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors.allow_origins,
            allow_methods=CORS_METHODS,
            allow_headers=cors.allow_headers,
            expose_headers=cors.expose_headers,
            allow_credentials=cors.allow_credentials,
            max_age=cors.max_age_seconds,
        )
    app.include_router(chat.router)
    app.include_router(runs.router)
    app.include_router(openai_compat.router)
    app.include_router(langgraph.router)
    app.include_router(ops.router)
    if settings.server.docs:
        app.include_router(docs.router)
    return app
