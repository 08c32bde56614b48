"""Graphs the tests use: user graphs served with `rillet serve`
(`RILLET_GRAPH=tests.support.graphs:...`; the server needs the repository root on its
PYTHONPATH), and a compiled one for driving a checkpointer directly."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import interrupt

from rillet_runtime.graph import GraphDeps


def echo_graph(saver: Any) -> Any:
    """Each turn: the question in, its echo out; three checkpoints (input, two steps)."""

    def reply(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(content=f"echo: {state['messages'][-1].content}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=saver)


def drafted_then_reviewed(deps: GraphDeps) -> StateGraph[Any]:
    """A subgraph (`writer`) streams the model's draft; then `review` asks a human with
    `interrupt()` and records the answer it was resumed with."""

    async def draft(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
        get_stream_writer()({"stage": "drafting"})
        return {"messages": [await deps.model.ainvoke(state["messages"], config)]}

    writer = StateGraph(MessagesState)
    writer.add_node("draft", draft)
    writer.add_edge(START, "draft")

    def review(state: MessagesState) -> dict[str, Any]:
        verdict = interrupt({"question": "publish this draft?"})
        return {"messages": [AIMessage(content=f"reviewed: {verdict}")]}

    graph = StateGraph(MessagesState)
    graph.add_node("writer", writer.compile())
    graph.add_node("review", review)
    graph.add_edge(START, "writer")
    graph.add_edge("writer", "review")
    return graph
