"""LLM providers, all LangChain chat models so their tokens stream out of any graph."""

from rillet_runtime.llm.errors import ProviderUnavailableError, classify_error
from rillet_runtime.llm.providers import build_chat_model

__all__ = ["ProviderUnavailableError", "build_chat_model", "classify_error"]
