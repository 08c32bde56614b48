"""The built-in RAG chat graph: prepare -> (cached answer | generate).

`prepare` starts the response-cache lookup and the retrieval (query embedding, then
search) together, because a cache miss is the common case and waiting for it before
retrieving would add a round trip to every answer; a hit cancels the retrieval.
Small talk skips retrieval. State holds a window of messages and source ids, never
document bodies: `generate` fetches passage text by id.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
)
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from typing_extensions import TypedDict

from rillet_runtime.prompt import render_system_prompt
from rillet_runtime.retrieval import Hit, Retriever
from rillet_runtime.state import ResponseCache, response_cache_key

_SMALL_TALK = re.compile(
    r"^(hi|hello|hey|yo|hiya|howdy|thanks|thank you|thx|ok|okay|cool|great|nice|bye|goodbye|"
    r"good (morning|afternoon|evening|night)|how are you)[\s!.?,]*(there|rillet)?[\s!.?]*$",
    re.I,
)


class SourceRef(TypedDict):
    id: str
    title: str
    score: float
    source: str


class ChatState(MessagesState):
    sources: list[SourceRef]
    cached: bool


@dataclass(frozen=True)
class GraphDeps:
    model: BaseChatModel
    model_name: str
    retriever: Retriever
    response_cache: ResponseCache | None
    k: int
    score_threshold: float
    history_window: int


def is_small_talk(text: str) -> bool:
    return len(text) <= 40 and _SMALL_TALK.match(text.strip()) is not None


def last_question(state: ChatState) -> str:
    return next((m.text for m in reversed(state["messages"]) if isinstance(m, HumanMessage)), "")


def cache_scope(config: RunnableConfig) -> str:
    """The principal (else the thread): one caller's answers are never served to another."""
    configurable = config.get("configurable", {})
    return str(configurable.get("principal") or configurable.get("thread_id", ""))


def prompt_text(messages: list[AnyMessage]) -> str:
    """The whole conversation the model answers, as the cache's key: the same question
    after a different history is a different prompt."""
    return "\n".join(f"{m.type}: {m.text}" for m in messages)


def _source_ref(hit: Hit) -> SourceRef:
    return SourceRef(id=hit.id, title=hit.title, score=hit.score, source=hit.source)


def build_rag_graph(
    deps: GraphDeps, checkpointer: BaseCheckpointSaver[Any] | None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    async def retrieve(question: str) -> list[SourceRef]:
        query = await deps.retriever.prepare_query(question)
        hits = await deps.retriever.search(query, deps.k, deps.score_threshold)
        return [_source_ref(h) for h in hits]

    async def prepare(state: ChatState, config: RunnableConfig) -> dict[str, Any]:
        question = last_question(state)
        retrieval = None if is_small_talk(question) else asyncio.ensure_future(retrieve(question))
        cached: str | None = None
        try:
            if deps.response_cache is not None:
                prompt = prompt_text(state["messages"][-deps.history_window :])
                key = response_cache_key(cache_scope(config), deps.model_name, prompt)
                cached = await deps.response_cache.get(key)
            if cached is not None:
                return {"cached": True, "sources": [], "messages": [AIMessage(content=cached)]}
            sources = await retrieval if retrieval is not None else []
            return {"cached": False, "sources": sources}
        finally:
            if retrieval is not None and not retrieval.done():
                retrieval.cancel()

    async def generate(state: ChatState, config: RunnableConfig) -> dict[str, Any]:
        passages = await deps.retriever.get_passages([s["id"] for s in state["sources"]])
        history = state["messages"][-deps.history_window :]
        prompt = [SystemMessage(content=render_system_prompt(passages)), *history]
        answer = await deps.model.ainvoke(prompt, config)
        if deps.response_cache is not None and state["sources"] and answer.text:
            key = response_cache_key(cache_scope(config), deps.model_name, prompt_text(history))
            thread = config.get("configurable", {}).get("thread_id")
            await deps.response_cache.set(key, answer.text, str(thread) if thread else None)
        overflow = len(state["messages"]) + 1 - deps.history_window
        removals = [RemoveMessage(id=m.id) for m in state["messages"][: max(overflow, 0)] if m.id]
        return {"messages": [*removals, answer]}

    def after_prepare(state: ChatState) -> str:
        return END if state.get("cached") else "generate"

    builder = StateGraph(ChatState)
    builder.add_node("prepare", prepare)
    builder.add_node("generate", generate)
    builder.add_edge(START, "prepare")
    builder.add_conditional_edges("prepare", after_prepare)
    builder.add_edge("generate", END)
    return builder.compile(checkpointer=checkpointer, name="rillet-rag")
