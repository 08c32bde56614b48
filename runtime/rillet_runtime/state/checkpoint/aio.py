"""LangGraph's async API: each method runs one operation of the base on redis.asyncio,
awaiting the requests it yields."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)

from rillet_runtime.state.checkpoint.base import (
    BaseRedisSaver,
    Operation,
    Pipeline,
    Request,
    Scan,
    T,
)


class AsyncFace(BaseRedisSaver):
    # Any: redis-py's annotations mix sync and async return types on every command.
    client: Any

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._arun(self._get_tuple(config))

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._arun(self._put(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._arun(self._put_writes(config, writes, task_id, task_path))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        listing = self._list(config, filter, before, limit)
        reply: Any = None
        while True:
            try:
                step = listing.send(reply)
            except StopIteration:
                return
            if isinstance(step, CheckpointTuple):
                reply = None
                yield step
            else:
                reply = await self._aexecute(step)

    async def adelete_thread(self, thread_id: str) -> None:
        await self._arun(self._delete_thread(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._arun(self._delete_for_runs(run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._arun(self._copy_thread(source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._arun(self._prune(thread_ids, strategy))

    async def athread_bytes(self, thread_id: str) -> int:
        return await self._arun(self._thread_bytes(thread_id))

    async def _arun(self, operation: Operation[T]) -> T:
        """Await each request and send the operation its reply, or throw in its error."""
        try:
            request = next(operation)
            while True:
                try:
                    reply = await self._aexecute(request)
                except Exception as exc:
                    request = operation.throw(exc)
                else:
                    request = operation.send(reply)
        except StopIteration as done:
            result: T = done.value
            return result

    async def _aexecute(self, request: Request) -> Any:
        if isinstance(request, Pipeline):
            pipe = self.client.pipeline(transaction=False)
            for command in request.commands:
                pipe.execute_command(*command)
            return await pipe.execute()
        if isinstance(request, Scan):
            return [key async for key in self.client.scan_iter(match=request.match, count=500)]
        return await self.client.execute_command(*request)
