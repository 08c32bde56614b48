"""Which graph a pod serves: the built-in RAG graph, or the user's `module:attribute`.

The attribute may be a compiled graph, an uncompiled StateGraph, or a factory taking
`GraphDeps` (so a user graph can use the configured model and retriever). Rillet's
checkpointer is attached unless the graph brings its own.
"""

from __future__ import annotations

import importlib
from typing import Any

import httpx
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel

from rillet_runtime.graph.rag import GraphDeps, build_rag_graph
from rillet_runtime.llm import build_chat_model
from rillet_runtime.retrieval import Retriever
from rillet_runtime.settings import Settings
from rillet_runtime.state import ResponseCache

__all__ = ["GraphDeps", "GraphLoadError", "graph_deps", "load_graph"]


class GraphLoadError(ValueError):
    pass


def graph_deps(
    settings: Settings,
    http: httpx.AsyncClient,
    retriever: Retriever,
    response_cache: ResponseCache | None = None,
) -> GraphDeps:
    """What a graph gets from the settings: the configured model, the retriever, k."""
    return GraphDeps(
        model=build_chat_model(settings.model, http),
        model_name=settings.model.name,
        retriever=retriever,
        response_cache=response_cache,
        k=settings.retrieval.k,
        score_threshold=settings.retrieval.score_threshold,
        history_window=settings.state.history_window,
    )


def _import_attribute(reference: str) -> Any:
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise GraphLoadError(f"RILLET_GRAPH={reference!r}: expected 'module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise GraphLoadError(
            f"RILLET_GRAPH={reference!r}: cannot import {module_name}: {exc}"
        ) from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise GraphLoadError(
            f"RILLET_GRAPH={reference!r}: {module_name} has no {attribute!r}"
        ) from None


def load_graph(
    reference: str | None, deps: GraphDeps, checkpointer: BaseCheckpointSaver[Any]
) -> Pregel[Any, Any, Any, Any]:
    if reference is None:
        return build_rag_graph(deps, checkpointer)
    target = _import_attribute(reference)
    if isinstance(target, StateGraph):
        return target.compile(checkpointer=checkpointer)
    if isinstance(target, Pregel):
        return target if target.checkpointer else target.copy({"checkpointer": checkpointer})
    if callable(target):
        built = target(deps)
        if isinstance(built, StateGraph):
            return built.compile(checkpointer=checkpointer)
        if isinstance(built, Pregel):
            return built if built.checkpointer else built.copy({"checkpointer": checkpointer})
    raise GraphLoadError(
        f"RILLET_GRAPH={reference!r}: expected a compiled graph, a StateGraph or a factory "
        f"returning one, got {type(target).__name__}"
    )
