"""Rillet's built-in RAG graph for LangGraph's own server (`langgraph dev`), configured from
the same RILLET_ environment as `rillet serve`, so both serve the same graph with the same
model and retriever. The server brings its own (in-memory) checkpointer."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from rillet_runtime.app import model_http_client
from rillet_runtime.graph import graph_deps
from rillet_runtime.graph.rag import build_rag_graph
from rillet_runtime.retrieval import build_retriever
from rillet_runtime.settings import Settings

_settings = Settings()
# Built on a thread of its own: the module may be imported inside a running event loop.
with ThreadPoolExecutor(1) as _thread:
    _retriever = _thread.submit(asyncio.run, build_retriever(_settings)).result()
_deps = graph_deps(_settings, model_http_client(_settings), _retriever)
graph = build_rag_graph(_deps, None)
