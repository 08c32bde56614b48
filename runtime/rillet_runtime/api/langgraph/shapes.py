"""The JSON objects of LangGraph's Agent Server API, built from Rillet's state: pure
functions, so each shape is written once and tested without a server."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from langgraph.types import StateSnapshot

from rillet_runtime.state.threads import RunRecord, ThreadRecord

# LangGraph's server names a graph's own assistant uuid5(this, graph_id).
ASSISTANT_NAMESPACE = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")
# Configurable keys that are Rillet's own: never shown to the client.
_PRIVATE = frozenset({"principal"})

EMPTY_STATE: dict[str, Any] = {
    "values": {},
    "next": [],
    "tasks": [],
    "metadata": None,
    "created_at": None,
    "checkpoint": None,
    "parent_checkpoint": None,
    "interrupts": [],
    "checkpoint_id": None,
    "parent_checkpoint_id": None,
}


def assistant_id(graph_id: str) -> str:
    return str(uuid.uuid5(ASSISTANT_NAMESPACE, graph_id))


def assistant_json(graph_id: str, name: str, created_at: str) -> dict[str, Any]:
    return {
        "assistant_id": assistant_id(graph_id),
        "graph_id": graph_id,
        "config": {},
        "context": {},
        "metadata": {"created_by": "system"},
        "name": name,
        "created_at": created_at,
        "updated_at": created_at,
        "version": 1,
        "description": None,
    }


def public_metadata(metadata: dict[str, Any] | None, thread_id: str | None) -> dict[str, Any]:
    """Run or checkpoint metadata as the client may see it: its own thread id, not the
    principal-scoped key Rillet stores it under."""
    shown = {key: value for key, value in (metadata or {}).items() if key not in _PRIVATE}
    if "thread_id" in shown:
        shown["thread_id"] = thread_id
    return shown


def _checkpoint(config: Any, thread_id: str) -> dict[str, Any] | None:
    configurable = (config or {}).get("configurable") or {}
    if "checkpoint_id" not in configurable:
        return None
    return {
        "checkpoint_id": configurable["checkpoint_id"],
        "thread_id": thread_id,
        "checkpoint_ns": configurable.get("checkpoint_ns", ""),
    }


def _interrupt(interrupt: Any) -> dict[str, Any]:
    return {"id": interrupt.id, "value": interrupt.value}


def interrupts_by_task(snapshot: StateSnapshot) -> dict[str, list[dict[str, Any]]]:
    return {
        task.id: [_interrupt(i) for i in task.interrupts]
        for task in snapshot.tasks
        if task.interrupts
    }


def state_json(snapshot: StateSnapshot, thread_id: str) -> dict[str, Any]:
    """A `ThreadState`; a thread without a checkpoint has the empty one."""
    if snapshot.created_at is None:
        return dict(EMPTY_STATE)
    checkpoint = _checkpoint(snapshot.config, thread_id)
    parent = _checkpoint(snapshot.parent_config, thread_id)
    tasks = [
        {
            "id": task.id,
            "name": task.name,
            "path": list(task.path),
            "error": None if task.error is None else str(task.error),
            "interrupts": [_interrupt(i) for i in task.interrupts],
            "checkpoint": None,
            "state": None,
            "result": task.result,
        }
        for task in snapshot.tasks
    ]
    return {
        "values": snapshot.values,
        "next": list(snapshot.next),
        "tasks": tasks,
        "metadata": public_metadata(dict(snapshot.metadata or {}), thread_id),
        "created_at": snapshot.created_at,
        "checkpoint": checkpoint,
        "parent_checkpoint": parent,
        "interrupts": [_interrupt(i) for i in snapshot.interrupts],
        "checkpoint_id": checkpoint and checkpoint["checkpoint_id"],
        "parent_checkpoint_id": parent and parent["checkpoint_id"],
    }


def thread_status(busy: bool, snapshot: StateSnapshot | None, record: ThreadRecord) -> str:
    """Worked out, never stored: a run holds the thread's lease (busy), the graph waits at
    an interrupt, or the last run failed."""
    if busy:
        return "busy"
    if snapshot is not None and (snapshot.next or snapshot.interrupts):
        return "interrupted"
    if record.error is not None:
        return "error"
    return "idle"


def thread_json(
    record: ThreadRecord, status: str, snapshot: StateSnapshot | None
) -> dict[str, Any]:
    state = snapshot if snapshot is not None and snapshot.created_at is not None else None
    return {
        "thread_id": record.thread_id,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "state_updated_at": state.created_at if state else record.updated_at,
        "metadata": record.metadata,
        "status": status,
        "config": {},
        "values": state.values if state else None,
        "interrupts": interrupts_by_task(state) if state else {},
        "error": record.error,
    }


def run_json(run: RunRecord) -> dict[str, Any]:
    return {**dataclasses.asdict(run), "langsmith_session_name": None}


def contains(document: Any, pattern: Any) -> bool:
    """JSON containment, as LangGraph's search filters match (`@>`): every key of the
    pattern present, dicts matched recursively, anything else equal."""
    if isinstance(pattern, dict):
        return isinstance(document, dict) and all(
            key in document and contains(document[key], value) for key, value in pattern.items()
        )
    return bool(document == pattern)
