"""Threads of LangGraph's API: the same threads as the native API's (one checkpointer,
ids in the principal's scope), with the metadata and status LangGraph's clients read.
Another principal's thread of the same id is a thread of its own: 404 here, never 403."""

from __future__ import annotations

import contextlib
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from langchain_core.runnables import RunnableConfig
from langgraph.errors import InvalidUpdateError
from langgraph.types import StateSnapshot

from rillet_runtime.api.deps import (
    PrincipalDep,
    RuntimeDep,
    get_principal,
    holding_thread,
    remove_thread,
    thread_key,
)
from rillet_runtime.api.errors import ERROR_RESPONSES, ApiError
from rillet_runtime.api.langgraph.models import (
    THREAD_ID_PATTERN,
    HistoryRequest,
    StateAt,
    StateUpdate,
    ThreadCreate,
    ThreadPatch,
    ThreadSearch,
)
from rillet_runtime.api.langgraph.shapes import (
    contains,
    state_json,
    thread_json,
    thread_status,
)
from rillet_runtime.app_state import Runtime
from rillet_runtime.auth import Principal
from rillet_runtime.events import CheckpointCorrupt
from rillet_runtime.state.threads import ThreadRecord, now_iso

router = APIRouter(
    tags=["langgraph: threads"], dependencies=[Depends(get_principal)], responses=ERROR_RESPONSES
)
ThreadIdPath = Annotated[str, Path(pattern=THREAD_ID_PATTERN)]
# Checkpoint keys a client may name; the thread is always the one in the path.
_CHECKPOINT_KEYS = ("checkpoint_id", "checkpoint_ns", "checkpoint_map")


def thread_not_found(thread_id: str) -> ApiError:
    return ApiError(
        404, "thread_not_found", f"Thread with ID {thread_id} not found", param="thread_id"
    )


def state_config(
    principal: Principal, thread_id: str, checkpoint: dict[str, Any] | None = None
) -> RunnableConfig:
    picked = {key: value for key, value in (checkpoint or {}).items() if key in _CHECKPOINT_KEYS}
    return {"configurable": {**picked, "thread_id": thread_key(principal, thread_id)}}


async def snapshot_of(
    runtime: Runtime, principal: Principal, thread_id: str, checkpoint: dict[str, Any] | None = None
) -> StateSnapshot:
    return await runtime.graph.aget_state(state_config(principal, thread_id, checkpoint))


async def require_checkpoint(
    runtime: Runtime, principal: Principal, thread_id: str, checkpoint: dict[str, Any] | None
) -> None:
    """A checkpoint the client names by id is there, or 404 `checkpoint_not_found`: never
    read (or run from) as an empty state. One retention dropped raises the same 404
    (CheckpointPruned, answered by its handler)."""
    checkpoint_id = (checkpoint or {}).get("checkpoint_id")
    if not checkpoint_id:
        return
    config = state_config(principal, thread_id, checkpoint)
    if await runtime.checkpointer.aget_tuple(config) is None:
        raise ApiError(
            404,
            "checkpoint_not_found",
            f"checkpoint {checkpoint_id} of thread {thread_id} not found",
            param="checkpoint_id",
        )


async def own_thread(
    runtime: Runtime, principal: Principal, thread_id: str
) -> tuple[ThreadRecord, StateSnapshot]:
    """The caller's thread and its latest state, or 404. A thread the native API started
    has no record yet: it gets one made from its state."""
    record = await runtime.threads.get_thread(principal.key, thread_id)
    snapshot = await snapshot_of(runtime, principal, thread_id)
    if record is None:
        if snapshot.created_at is None:
            raise thread_not_found(thread_id)
        record = ThreadRecord(
            thread_id, created_at=snapshot.created_at, updated_at=snapshot.created_at
        )
    return record, snapshot


async def describe(
    runtime: Runtime, principal: Principal, record: ThreadRecord, snapshot: StateSnapshot
) -> dict[str, Any]:
    busy = await runtime.runs.holder(thread_key(principal, record.thread_id)) is not None
    return thread_json(record, thread_status(busy, snapshot, record), snapshot)


@router.post("/threads")
async def create_thread(
    body: ThreadCreate, runtime: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    record = ThreadRecord(body.thread_id or str(uuid.uuid4()), metadata=body.metadata)
    if not await runtime.threads.add_thread(principal.key, record):
        if body.if_exists == "raise":
            raise ApiError(
                409,
                "thread_exists",
                f"Thread with ID {record.thread_id} already exists",
                param="thread_id",
            )
        record, snapshot = await own_thread(runtime, principal, record.thread_id)
        return await describe(runtime, principal, record, snapshot)
    return thread_json(record, "idle", None)


@router.get("/threads/{thread_id}")
async def get_thread(
    thread_id: ThreadIdPath, runtime: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    record, snapshot = await own_thread(runtime, principal, thread_id)
    return await describe(runtime, principal, record, snapshot)


@router.patch("/threads/{thread_id}")
async def patch_thread(
    thread_id: ThreadIdPath, body: ThreadPatch, runtime: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Metadata is merged into the thread's (shallow), as LangGraph's server does."""
    record, snapshot = await own_thread(runtime, principal, thread_id)
    record.metadata = {**record.metadata, **body.metadata}
    record.updated_at = now_iso()
    await runtime.threads.put_thread(principal.key, record)
    return await describe(runtime, principal, record, snapshot)


@router.delete("/threads/{thread_id}", status_code=204)
async def delete_thread(
    thread_id: ThreadIdPath, runtime: RuntimeDep, principal: PrincipalDep
) -> Response:
    # A damaged thread exists (something of it is stored) and can only be deleted.
    with contextlib.suppress(CheckpointCorrupt):
        await own_thread(runtime, principal, thread_id)
    await remove_thread(runtime, principal, thread_id)
    return Response(status_code=204)


# What a search may sort or filter by without reading each thread's state.
_RECORD_FIELDS = ("thread_id", "created_at", "updated_at")


@router.post("/threads/search")
async def search_threads(
    body: ThreadSearch, runtime: RuntimeDep, principal: PrincipalDep, response: Response
) -> list[dict[str, Any]]:
    """The caller's threads only (the index is per principal), filtered like LangGraph's:
    metadata and values by containment, status exactly. Each thread's state is read only
    for the page, unless a filter or the order needs it (status, values)."""
    records = [
        record
        for record in await runtime.threads.threads(principal.key)
        if (body.ids is None or record.thread_id in body.ids)
        and (body.metadata is None or contains(record.metadata, body.metadata))
    ]
    descending = body.sort_order == "desc"
    window = slice(body.offset, body.offset + body.limit)

    async def described(record: ThreadRecord) -> dict[str, Any]:
        snapshot = await snapshot_of(runtime, principal, record.thread_id)
        return await describe(runtime, principal, record, snapshot)

    if body.status is None and body.values is None and body.sort_by in _RECORD_FIELDS:
        records.sort(key=lambda record: getattr(record, body.sort_by), reverse=descending)
        total, page = len(records), [await described(record) for record in records[window]]
    else:
        found = [await described(record) for record in records]
        found = [
            thread
            for thread in found
            if (body.status is None or thread["status"] == body.status)
            and (body.values is None or contains(thread["values"], body.values))
        ]
        found.sort(key=lambda thread: thread[body.sort_by], reverse=descending)
        total, page = len(found), found[window]
    response.headers["X-Pagination-Total"] = str(total)
    if body.offset + body.limit < total:
        response.headers["X-Pagination-Next"] = str(body.offset + body.limit)
    if body.select:
        return [{key: t[key] for key in body.select if key in t} for t in page]
    return page


async def _state(
    runtime: Runtime, principal: Principal, thread_id: str, checkpoint: dict[str, Any] | None
) -> dict[str, Any]:
    await own_thread(runtime, principal, thread_id)
    await require_checkpoint(runtime, principal, thread_id, checkpoint)
    return state_json(await snapshot_of(runtime, principal, thread_id, checkpoint), thread_id)


@router.get("/threads/{thread_id}/state")
async def get_state(
    thread_id: ThreadIdPath,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    subgraphs: Annotated[bool, Query()] = False,
) -> dict[str, Any]:
    return await _state(runtime, principal, thread_id, None)


@router.get("/threads/{thread_id}/state/{checkpoint_id}")
async def get_state_at(
    thread_id: ThreadIdPath,
    checkpoint_id: Annotated[str, Path(max_length=64)],
    runtime: RuntimeDep,
    principal: PrincipalDep,
    subgraphs: Annotated[bool, Query()] = False,
) -> dict[str, Any]:
    return await _state(runtime, principal, thread_id, {"checkpoint_id": checkpoint_id})


@router.post("/threads/{thread_id}/state/checkpoint")
async def post_state_at(
    thread_id: ThreadIdPath, body: StateAt, runtime: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """What `RemoteGraph.get_state` calls."""
    return await _state(runtime, principal, thread_id, body.checkpoint.model_dump())


@router.post("/threads/{thread_id}/state")
async def update_state(
    thread_id: ThreadIdPath, body: StateUpdate, runtime: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """A new checkpoint with these values, as if `as_node` had returned them; 409 while a
    run holds the thread."""
    record, _ = await own_thread(runtime, principal, thread_id)
    checkpoint = body.checkpoint.model_dump() if body.checkpoint else {}
    if body.checkpoint_id:
        checkpoint["checkpoint_id"] = body.checkpoint_id
    await require_checkpoint(runtime, principal, thread_id, checkpoint)
    async with holding_thread(runtime, principal, thread_id):
        try:
            config = await runtime.graph.aupdate_state(
                state_config(principal, thread_id, checkpoint), body.values, as_node=body.as_node
            )
        except (InvalidUpdateError, ValueError, TypeError, KeyError) as exc:
            message = f"values do not fit the graph's state: {type(exc).__name__}: {exc}"
            raise ApiError(422, "invalid_request", message[:500], param="values") from None
    record.updated_at = now_iso()
    await runtime.threads.put_thread(principal.key, record)
    configurable = config.get("configurable", {})
    written = {
        "thread_id": thread_id,
        "checkpoint_ns": configurable.get("checkpoint_ns", ""),
        "checkpoint_id": configurable.get("checkpoint_id"),
    }
    return {
        "checkpoint": written,
        "configurable": written,
        "checkpoint_id": written["checkpoint_id"],
    }


def _before(before: dict[str, Any] | str | None) -> RunnableConfig | None:
    """`before` as the SDKs send it: a checkpoint id, a flat checkpoint, or a config."""
    if before is None:
        return None
    if isinstance(before, str):
        return {"configurable": {"checkpoint_id": before}}
    checkpoint_id = before.get("configurable", before).get("checkpoint_id")
    return {"configurable": {"checkpoint_id": checkpoint_id}}


@router.post("/threads/{thread_id}/history")
async def get_history(
    thread_id: ThreadIdPath, body: HistoryRequest, runtime: RuntimeDep, principal: PrincipalDep
) -> list[dict[str, Any]]:
    """The thread's checkpoints, newest first: those retention keeps."""
    await own_thread(runtime, principal, thread_id)
    checkpoint = body.checkpoint.model_dump() if body.checkpoint else None
    await require_checkpoint(runtime, principal, thread_id, checkpoint)
    states = runtime.graph.aget_state_history(
        state_config(principal, thread_id, checkpoint),
        filter=body.metadata,
        before=_before(body.before),
        limit=body.limit,
    )
    return [state_json(snapshot, thread_id) async for snapshot in states]
