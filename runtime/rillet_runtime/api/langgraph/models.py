"""Request bodies of LangGraph's Agent Server API, as its SDKs send them.

Fields the SDKs send that Rillet does not act on are accepted when they ask for nothing
(`webhook: null`, `after_seconds: 0`, tracing options) and refused by name otherwise.
Unknown fields are ignored, as LangGraph's server does: a newer SDK's new field must not
fail every request of every client.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rillet_runtime.api.langgraph.stream import REFUSED_MODES, SUPPORTED_MODES, SupportedMode
from rillet_runtime.run_guard import MultitaskStrategy

THREAD_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
ThreadId = Annotated[str, Field(pattern=THREAD_ID_PATTERN)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CommandBody(_Body):
    """`Command` as the SDKs send it: resume an `interrupt()`, update state, go to nodes."""

    resume: Any = None
    update: dict[str, Any] | list[tuple[str, Any]] | None = None
    goto: str | list[str] | None = None


class RunCreate(_Body):
    assistant_id: str = Field(description="the graph's id, or its assistant's uuid")
    input: dict[str, Any] | list[Any] | None = None
    command: CommandBody | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    stream_mode: list[SupportedMode] = Field(
        ["values"], description="values, updates, messages-tuple, custom"
    )
    stream_subgraphs: bool = False
    stream_resumable: bool = Field(
        False, description="keep the run's events for a rejoin (`Last-Event-ID`) after a drop"
    )
    on_disconnect: Literal["cancel", "continue"] = Field(
        "cancel", description="what a streamed run does when its client leaves"
    )
    multitask_strategy: MultitaskStrategy = "enqueue"
    if_not_exists: Literal["create", "reject"] = "reject"
    on_completion: Literal["delete", "keep"] = "delete"
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    checkpoint: dict[str, Any] | None = None
    checkpoint_id: str | None = None
    # Sent by the SDKs; nothing in them changes how Rillet runs the graph.
    durability: Literal["sync", "async", "exit"] | None = None
    checkpoint_during: bool | None = None
    feedback_keys: list[str] | None = None
    langsmith_tracer: dict[str, Any] | None = None
    strict_resume: bool | None = None
    # Not served: refused when they ask for something.
    webhook: None = Field(None, description="not served (must be null)")
    after_seconds: Literal[0] | None = Field(None, description="not served (must be 0 or null)")

    @field_validator("stream_mode", mode="before")
    @classmethod
    def _modes(cls, value: Any) -> Any:
        modes = [value] if isinstance(value, str) else value
        for mode in modes if isinstance(modes, list) else ():
            if mode in REFUSED_MODES:
                raise ValueError(f"stream mode {mode!r} is not served: {REFUSED_MODES[mode]}")
            if mode not in SUPPORTED_MODES:
                raise ValueError(f"unknown stream mode {mode!r}; one of {sorted(SUPPORTED_MODES)}")
        return modes


class ThreadCreate(_Body):
    thread_id: ThreadId | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    if_exists: Literal["raise", "do_nothing"] = "raise"
    ttl: Any = Field(None, description="not served: threads live as long as state.checkpoint_ttl")
    supersteps: None = Field(None, description="not served (must be null)")


class ThreadPatch(_Body):
    metadata: dict[str, Any] = Field(default_factory=dict)
    ttl: Any = None


ThreadStatus = Literal["idle", "busy", "interrupted", "error"]


class ThreadSearch(_Body):
    ids: list[ThreadId] | None = None
    metadata: dict[str, Any] | None = None
    values: dict[str, Any] | None = None
    status: ThreadStatus | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0)
    sort_by: Literal["thread_id", "status", "created_at", "updated_at", "state_updated_at"] = (
        "updated_at"
    )
    sort_order: Literal["asc", "desc"] = "desc"
    select: list[str] | None = None
    extract: dict[str, Any] | None = None


class CheckpointRef(BaseModel):
    model_config = ConfigDict(extra="allow")

    thread_id: str | None = None
    checkpoint_ns: str = ""
    checkpoint_id: str | None = None


class StateUpdate(_Body):
    values: dict[str, Any] | list[Any] | None = None
    as_node: str | None = None
    checkpoint: CheckpointRef | None = None
    checkpoint_id: str | None = None


class StateAt(_Body):
    checkpoint: CheckpointRef
    subgraphs: bool = False


class HistoryRequest(_Body):
    limit: int = Field(10, ge=1, le=1000)
    before: dict[str, Any] | str | None = None
    metadata: dict[str, Any] | None = None
    checkpoint: CheckpointRef | None = None


class AssistantSearch(_Body):
    graph_id: str | None = None
    name: str | None = None
    metadata: dict[str, Any] | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0)
    sort_by: str | None = None
    sort_order: Literal["asc", "desc"] | None = None
    select: list[str] | None = None
