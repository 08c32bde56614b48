"""A circuit breaker per provider and an optional fallback, around any chat models.

Retries with backoff stay in the provider SDKs (openai, anthropic), which retry only
before the first byte of a response: retrying after tokens have streamed would repeat
them. The fallback takes over only when the primary failed before its first token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from purgatory import AsyncCircuitBreakerFactory
from pydantic import ConfigDict, Field

from rillet_runtime.llm.errors import ProviderUnavailableError, is_provider_health_failure

_TOOLS_KWARG = "_rillet_tools"


def _not_a_health_failure(exc: BaseException) -> bool:
    return not is_provider_health_failure(exc)


class ResilientChatModel(BaseChatModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    primary: BaseChatModel
    fallback: BaseChatModel | None = None
    failure_threshold: int = 5
    reset_seconds: float = 30
    breakers: AsyncCircuitBreakerFactory = Field(default=None, exclude=True)  # type: ignore[assignment]

    def model_post_init(self, context: Any, /) -> None:
        if self.breakers is None:
            self.breakers = AsyncCircuitBreakerFactory(
                default_threshold=self.failure_threshold,
                default_ttl=self.reset_seconds,
                exclude=[
                    asyncio.CancelledError,
                    GeneratorExit,
                    (Exception, _not_a_health_failure),
                ],
            )

    @property
    def _llm_type(self) -> str:
        return "rillet-resilient"

    def _candidates(self) -> list[tuple[str, BaseChatModel]]:
        models = [("primary", self.primary)]
        if self.fallback is not None:
            models.append(("fallback", self.fallback))
        return models

    @staticmethod
    def _call_kwargs(model: BaseChatModel, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Tools are converted per candidate: OpenAI and Anthropic want different shapes."""
        tools = kwargs.pop(_TOOLS_KWARG, None)
        if tools is None:
            return kwargs
        tool_list, tool_kwargs = tools
        bound = model.bind_tools(tool_list, **tool_kwargs)
        return {**kwargs, **getattr(bound, "kwargs", {})}

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        failure: BaseException | None = None
        for circuit, model in self._candidates():
            started = False
            try:
                breaker = await self.breakers.get_breaker(circuit)
                async with breaker:
                    call_kwargs = self._call_kwargs(model, dict(kwargs))
                    async for chunk in model._astream(messages, stop=stop, **call_kwargs):
                        started = True
                        yield chunk
                return
            except Exception as exc:
                if started or not is_provider_health_failure(exc):
                    raise
                failure = exc
        raise ProviderUnavailableError("every configured model provider failed") from failure

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop=stop, **kwargs))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Sync path for sync user nodes: fallback without the (async) breaker."""
        failure: BaseException | None = None
        for _, model in self._candidates():
            started = False
            try:
                for chunk in model._stream(
                    messages, stop=stop, **self._call_kwargs(model, dict(kwargs))
                ):
                    started = True
                    yield chunk
                return
            except Exception as exc:
                if started or not is_provider_health_failure(exc):
                    raise
                failure = exc
        raise ProviderUnavailableError("every configured model provider failed") from failure

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop=stop, **kwargs))

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(**{_TOOLS_KWARG: (list(tools), kwargs)})
