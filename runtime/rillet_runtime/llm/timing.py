"""Times every chat model call of a run, in any graph, as the `llm` stage."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from rillet_runtime.metrics import STAGE_DURATION


class LLMStageTimer(BaseCallbackHandler):
    run_inline = True  # a dict write per call: cheaper inline than in an executor

    def __init__(self) -> None:
        self._started: dict[UUID, float] = {}

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, **kwargs: Any
    ) -> None:
        self._started[run_id] = time.perf_counter()

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._observe(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._observe(run_id)

    def _observe(self, run_id: UUID) -> None:
        started = self._started.pop(run_id, None)
        if started is not None:
            STAGE_DURATION.labels("llm").observe(time.perf_counter() - started)
