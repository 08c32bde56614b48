"""Rillet's built-in RAG graph for LangGraph's own server (`langgraph dev`), configured from
the same RILLET_ environment as `rillet serve`, so both serve the same graph with the same
model and retriever. The server brings its own (in-memory) checkpointer."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx

from rillet_runtime.graph.rag import GraphDeps, build_rag_graph
from rillet_runtime.llm import build_chat_model
from rillet_runtime.retrieval import build_retriever
from rillet_runtime.settings import Settings

_settings = Settings()
# Built on a thread of its own: the module may be imported inside a running event loop.
with ThreadPoolExecutor(1) as _thread:
    _retriever = _thread.submit(asyncio.run, build_retriever(_settings)).result()
_deps = GraphDeps(
    model=build_chat_model(_settings.model, httpx.AsyncClient(timeout=300)),
    model_name=_settings.model.name,
    retriever=_retriever,
    response_cache=None,
    k=_settings.retrieval.k,
    score_threshold=_settings.retrieval.score_threshold,
    history_window=_settings.state.history_window,
)
graph = build_rag_graph(_deps, None)
