"""The typed state the lifespan yields: what every request may use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.pregel import Pregel

from rillet_runtime.lifecycle import Lifecycle
from rillet_runtime.retrieval import Retriever
from rillet_runtime.settings import Settings


@dataclass(frozen=True)
class Runtime:
    """Built once per worker process by the lifespan."""

    settings: Settings
    lifecycle: Lifecycle
    graph: Pregel[Any, Any, Any, Any]
    checkpointer: BaseCheckpointSaver[Any]
    model: BaseChatModel
    retriever: Retriever


class LifespanState(TypedDict):
    runtime: Runtime
