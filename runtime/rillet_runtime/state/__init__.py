"""Thread state and caches behind one seam chosen by settings.

Memory is the embedded default (`make run`, tests); Redis arrives behind the same
functions so the app and graphs never name a backend.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from cachetools import TTLCache
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.memory import InMemorySaver

from rillet_runtime.metrics import CACHE_REQUESTS, timed_stage
from rillet_runtime.settings import StateSettings


class TimedMemorySaver(InMemorySaver):
    """LangGraph's in-memory saver, with history loads and saves in the stage histogram."""

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        with timed_stage("history_load"):
            return await super().aget_tuple(config)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        with timed_stage("checkpoint_save"):
            return await super().aput(config, checkpoint, metadata, new_versions)


def build_checkpointer(settings: StateSettings) -> BaseCheckpointSaver[Any]:
    match settings.checkpointer:
        case "memory":
            return TimedMemorySaver()


class ResponseCache(Protocol):
    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, answer: str) -> None: ...


class MemoryResponseCache:
    def __init__(self, max_entries: int, ttl_seconds: float) -> None:
        self._entries: TTLCache[str, str] = TTLCache(maxsize=max_entries, ttl=ttl_seconds)

    async def get(self, key: str) -> str | None:
        answer = self._entries.get(key)
        CACHE_REQUESTS.labels("response", "hit" if answer is not None else "miss").inc()
        return answer

    async def set(self, key: str, answer: str) -> None:
        self._entries[key] = answer


def build_response_cache(settings: StateSettings) -> ResponseCache | None:
    if not settings.response_cache:
        return None
    return MemoryResponseCache(
        settings.response_cache_max_entries, settings.response_cache_ttl_seconds
    )


def response_cache_key(scope: str, model: str, question: str) -> str:
    """Exact match on the normalised question, per scope (tenant or thread) and model."""
    normalised = " ".join(question.lower().split())
    digest = hashlib.sha256(f"{scope}\0{model}\0{normalised}".encode()).hexdigest()
    return f"rillet:resp:{digest}"
