"""Which graph a pod serves: the built-in RAG graph, or the user's `module:attribute`.

The attribute may be a compiled graph, an uncompiled StateGraph, or a factory taking
`GraphDeps` (so a user graph can use the configured model and retriever). Rillet's
checkpointer is attached unless the graph brings its own.
"""

from __future__ import annotations

import importlib
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel

from rillet_runtime.graph.rag import GraphDeps, build_rag_graph

__all__ = ["GraphDeps", "GraphLoadError", "load_graph"]


class GraphLoadError(ValueError):
    pass


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
