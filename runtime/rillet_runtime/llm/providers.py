"""Chat models from settings. Secrets come from settings fed by env vars, never files."""

from __future__ import annotations

import httpx
from langchain_anthropic import ChatAnthropic
from langchain_core.language_models import BaseChatModel
from langchain_openai import ChatOpenAI

from rillet_runtime.llm.extractive import ExtractiveChatModel
from rillet_runtime.llm.resilient import ResilientChatModel
from rillet_runtime.settings import ModelSettings, ProviderSettings

# A local OpenAI-compatible server (vLLM, llama.cpp, Ollama) often wants no key, but the
# SDK insists on one.
_KEYLESS = "not-needed"


def provider_model(settings: ProviderSettings, http_client: httpx.AsyncClient) -> BaseChatModel:
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    if settings.provider == "openai":
        return ChatOpenAI(
            model=settings.name,
            base_url=settings.base_url,
            api_key=api_key or (_KEYLESS if settings.base_url else None),
            max_completion_tokens=settings.max_tokens,
            temperature=settings.temperature,
            timeout=settings.timeout_seconds,
            max_retries=settings.max_retries,
            stream_usage=True,
            http_async_client=http_client,
        )
    if settings.provider == "anthropic":
        model = ChatAnthropic(
            model=settings.name,
            base_url=settings.base_url,
            api_key=api_key,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            timeout=settings.timeout_seconds,
            max_retries=settings.max_retries,
            stream_usage=True,
        )
        # It builds its SDK client (HTTP transport, TLS context from the CA files, package
        # metadata: blocking reads) on first use, a request; build it now, in the lifespan.
        _ = model._async_client
        return model
    return ExtractiveChatModel(model_name=settings.name)


def build_chat_model(settings: ModelSettings, http_client: httpx.AsyncClient) -> BaseChatModel:
    primary = provider_model(settings, http_client)
    if settings.provider == "extractive" and settings.fallback is None:
        return primary  # nothing remote to guard
    return ResilientChatModel(
        primary=primary,
        fallback=provider_model(settings.fallback, http_client) if settings.fallback else None,
        failure_threshold=settings.breaker_failure_threshold,
        reset_seconds=settings.breaker_reset_seconds,
    )
