"""Scripted chat models for unit tests of the streaming core: real LangChain models whose
timing and failures the test controls (the integration tests use real SDKs instead)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from pydantic import ConfigDict


class StatusError(Exception):
    """Shaped like the SDKs' APIStatusError: what classify_error looks at."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"status {status_code}")
        self.status_code = status_code


class ScriptedModel(BaseChatModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    tokens: list[str]
    delay: float = 0.0
    fail_with: Exception | None = None
    produced: int = 0
    calls: int = 0
    cancelled: bool = False

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise NotImplementedError

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        self.calls += 1
        if self.fail_with is not None:
            raise self.fail_with
        try:
            for token in self.tokens:
                if self.delay:
                    await asyncio.sleep(self.delay)
                self.produced += 1
                yield ChatGenerationChunk(message=AIMessageChunk(content=token))
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled = True
            raise


def one_node_graph(model: BaseChatModel) -> CompiledStateGraph[Any, Any, Any, Any]:
    async def generate(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("generate", generate)
    builder.add_edge(START, "generate")
    builder.add_edge("generate", END)
    return builder.compile()
