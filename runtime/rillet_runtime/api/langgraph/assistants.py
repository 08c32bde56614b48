"""Assistants: the graph a pod serves is one assistant (`graph_id` from settings, its
`assistant_id` the uuid5 LangGraph's server gives a graph's own assistant). Making other
assistants is refused clearly. `GET /info` lives here too (LangGraph's `GET /ok` probe is
with the others, in api/ops.py): LangGraph's shape, plus the revision and what the settings
turn on, so "which build, configured how?" has one authenticated answer."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

from rillet_runtime.api.deps import RuntimeDep, get_principal
from rillet_runtime.api.errors import ERROR_RESPONSES, ApiError
from rillet_runtime.api.langgraph.models import AssistantSearch
from rillet_runtime.api.langgraph.shapes import assistant_id, assistant_json, contains
from rillet_runtime.app_state import Runtime
from rillet_runtime.settings import Settings
from rillet_runtime.version import revision, version

router = APIRouter(tags=["langgraph: assistants"], responses=ERROR_RESPONSES)
authenticated = [Depends(get_principal)]

_STARTED_AT = datetime.now(UTC).isoformat()

AssistantPath = Annotated[str, Path(max_length=128)]


def graph_id_for(runtime: Runtime, assistant: str) -> str:
    """The graph an assistant names (its graph id or its uuid), or 404."""
    graph_id = runtime.settings.graph_id
    if assistant not in (graph_id, assistant_id(graph_id)):
        raise ApiError(
            404,
            "assistant_not_found",
            f"assistant {assistant!r} is not served here; this pod serves graph {graph_id!r} "
            f"(assistant {assistant_id(graph_id)})",
            param="assistant_id",
        )
    return graph_id


def _assistant(runtime: Runtime) -> dict[str, Any]:
    graph_id = runtime.settings.graph_id
    name = runtime.graph.name if runtime.graph.name not in ("LangGraph", "") else graph_id
    return assistant_json(graph_id, name, _STARTED_AT)


def enabled_features(settings: Settings) -> dict[str, str | bool | None]:
    """What the settings turn on, by kind and never by address or secret."""
    state = settings.state
    if state.checkpointer == "memory":
        store = "memory"
    elif state.redis_sentinel is not None:
        store = "redis-sentinel"
    else:
        store = "redis-cluster" if state.redis_cluster else "redis"
    fallback = settings.model.fallback
    return {
        "graph": "custom" if settings.graph else "built-in",
        "model": settings.model.provider,
        "fallback_model": fallback.provider if fallback else None,
        "retrieval": settings.retrieval.provider,
        "hybrid_search": settings.retrieval.hybrid_search,
        "embeddings": settings.embeddings.provider,
        "state": store,
        "auth": settings.auth.mode,
        "response_cache": state.response_cache,
        "resumable_streams": settings.streaming.resumable,
        "docs": settings.server.docs,
    }


@router.get("/info", dependencies=authenticated)
async def info(runtime: RuntimeDep) -> dict[str, Any]:
    return {
        "version": version(),
        "revision": revision(),
        "server": "rillet",
        "flags": {"assistants": True, "crons": False, "langsmith": False},
        "features": enabled_features(runtime.settings),
    }


@router.post("/assistants/search", dependencies=authenticated)
async def search_assistants(
    body: AssistantSearch, runtime: RuntimeDep, response: Response
) -> list[dict[str, Any]]:
    assistant = _assistant(runtime)
    matches = (
        (body.graph_id is None or body.graph_id == assistant["graph_id"])
        and (body.name is None or body.name.lower() in assistant["name"].lower())
        and (body.metadata is None or contains(assistant["metadata"], body.metadata))
    )
    found = [assistant] if matches else []
    page = found[body.offset : body.offset + body.limit]
    response.headers["X-Pagination-Total"] = str(len(found))
    if body.select:
        return [{key: a[key] for key in body.select if key in a} for a in page]
    return page


@router.post("/assistants", dependencies=authenticated, include_in_schema=False)
async def create_assistant() -> None:
    """Not an operation of this API (so not in its schema): here to say why."""
    raise ApiError(
        405,
        "not_supported",
        "creating assistants is not served: this pod serves its graph's own assistant; "
        "pass per-run settings in `config` or `context`",
    )


@router.get("/assistants/{assistant}", dependencies=authenticated)
async def get_assistant(assistant: AssistantPath, runtime: RuntimeDep) -> dict[str, Any]:
    graph_id_for(runtime, assistant)
    return _assistant(runtime)


@functools.lru_cache(maxsize=16)
def _drawn(graph: Any, xray: int | bool) -> dict[str, Any]:
    """The graph as LangGraph's server draws it (langchain_core's `Graph.to_json()`); it
    never changes while the worker lives."""
    drawn = graph.get_graph(xray=xray).to_json()
    for node in drawn["nodes"]:
        if isinstance(node.get("data"), dict):
            node["data"].pop("id", None)
    return dict(drawn)


@router.get("/assistants/{assistant}/graph", dependencies=authenticated)
async def get_graph(
    assistant: AssistantPath,
    runtime: RuntimeDep,
    xray: Annotated[int | bool, Query(description="draw subgraphs (true or a depth)")] = False,
) -> dict[str, Any]:
    graph_id_for(runtime, assistant)
    return _drawn(runtime.graph, xray if isinstance(xray, bool) else min(xray, 8))


def _schema(get: Any) -> dict[str, Any] | None:
    try:
        schema: dict[str, Any] = get()
    except Exception:  # a graph whose types have no JSON schema
        return None
    return schema


@router.get("/assistants/{assistant}/schemas", dependencies=authenticated)
async def get_schemas(assistant: AssistantPath, runtime: RuntimeDep) -> dict[str, Any]:
    graph_id = graph_id_for(runtime, assistant)
    graph = runtime.graph
    return {
        "graph_id": graph_id,
        "input_schema": _schema(graph.get_input_jsonschema),
        "output_schema": _schema(graph.get_output_jsonschema),
        "state_schema": _schema(graph.get_output_jsonschema),
        "config_schema": _schema(graph.get_config_jsonschema),
        "context_schema": _schema(graph.get_context_jsonschema),
    }
