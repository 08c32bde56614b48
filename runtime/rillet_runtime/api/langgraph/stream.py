"""A run as LangGraph's server streams it: `metadata` first, then one event per stream mode
chunk (`mode` or `mode|namespace` for subgraphs), then `end` or `error`. Tokens in
`messages-tuple` mode come from the streaming core's token sink (so they keep its
backpressure and coalescing: adjacent tokens of one message become one chunk)."""

from __future__ import annotations

from typing import Any, Literal, get_args

from langchain_core.messages import AIMessageChunk
from langgraph.types import StreamMode

from rillet_runtime.api.langgraph.shapes import public_metadata
from rillet_runtime.streaming import ModelCall, RunRequest, new_answers

# What clients may ask for, and what is refused with a clear 422.
SupportedMode = Literal["values", "updates", "messages-tuple", "custom"]
SUPPORTED_MODES: frozenset[str] = frozenset(get_args(SupportedMode))
REFUSED_MODES = {
    "messages": "use 'messages-tuple' (LangGraph's clients and UIs read it)",
    "debug": "not served: use 'updates' and 'values'",
    "events": "not served: use 'messages-tuple' for tokens",
    "tasks": "not served: use 'updates'",
    "checkpoints": "not served: read /threads/{thread_id}/history",
}
# A message chunk as LangGraph's server writes it; each token event fills in text and id.
_CHUNK = AIMessageChunk(content="").model_dump()


def _named(mode: str, namespace: tuple[str, ...], subgraphs: bool) -> str:
    return f"{mode}|{'|'.join(namespace)}" if subgraphs and namespace else mode


class LangGraphDialect:
    def __init__(self, modes: list[SupportedMode], subgraphs: bool, thread_id: str | None) -> None:
        self.modes = frozenset(modes)
        self.subgraphs = subgraphs
        self.thread_id = thread_id
        self.streams_tokens = "messages-tuple" in self.modes
        # `updates` always: interrupts arrive there, and answers a node returned whole.
        stream_mode: list[StreamMode] = ["updates"]
        stream_mode += [mode for mode in ("values", "custom") if mode in self.modes]
        self.stream_mode = stream_mode

    def model_call(
        self, metadata: dict[str, Any] | None, tags: list[str] | None, name: str | None
    ) -> ModelCall | None:
        if not self.streams_tokens:
            return None
        shown = public_metadata(
            {"tags": tags or [], "name": name, **(metadata or {})}, self.thread_id
        )
        namespace = str(shown.get("langgraph_checkpoint_ns", "")).split("|")[:-1]
        return ModelCall(shown, tuple(namespace))

    def start(self, request: RunRequest) -> tuple[str, Any]:
        return "metadata", {"run_id": request.run_id, "attempt": 1}

    def output(
        self, namespace: tuple[str, ...], mode: str, chunk: Any, seen: set[str]
    ) -> list[Any]:
        items: list[Any] = []
        if mode == "updates" and isinstance(chunk, dict):
            # As LangGraph's server does: a client streaming neither mode still sees it.
            interrupted = chunk.get("__interrupt__") and not namespace
            if interrupted and not self.modes & {"updates", "values"}:
                items.append(("event", "values", chunk))
            if self.streams_tokens:
                items += self._new_answers(namespace, chunk, seen)
        if namespace and not self.subgraphs:
            return items
        if mode in self.modes:
            items.append(("event", _named(mode, namespace, self.subgraphs), chunk))
        return items

    def _new_answers(
        self, namespace: tuple[str, ...], update: dict[str, Any], seen: set[str]
    ) -> list[Any]:
        """Answers a node returned whole (a cached answer), as one messages event each."""
        items = []
        for node, values in update.items():
            if not isinstance(values, dict):
                continue
            for message in new_answers(values, seen):
                metadata = {"langgraph_node": node, "thread_id": self.thread_id}
                name = _named("messages", namespace, self.subgraphs)
                items.append(("event", name, [message, metadata]))
        return items

    def token(self, text: str, call: ModelCall | None) -> tuple[str, Any]:
        assert call is not None  # tokens are only streamed in messages-tuple mode
        message = {**_CHUNK, "content": text, "id": call.message_id}
        return _named("messages", call.namespace, self.subgraphs), [message, call.metadata]

    def chunk(self, message: Any, call: ModelCall) -> tuple[str, Any] | None:
        return _named("messages", call.namespace, self.subgraphs), [message, call.metadata]

    def end(
        self, outcome: dict[str, Any], timings: dict[str, float | None]
    ) -> list[tuple[str, Any]]:
        """No data, as LangGraph's server sends; but a run whose state could not be saved
        says so there (its clients ignore the end's data)."""
        if outcome.get("state_saved", True):
            return [("end", None)]
        unsaved = {key: outcome.get(key) for key in ("state_saved", "state_saved_error")}
        return [("end", unsaved)]

    def error(self, code: str, message: str, retryable: bool) -> tuple[str, Any]:
        return "error", {"error": code, "message": message, "retryable": retryable}
