"""LangGraph's sync API: each method runs one operation of the base on a redis-py client,
calling the requests it yields."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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


class SyncFace(BaseRedisSaver):
    # A client, or a factory called on first use: a sync RedisCluster connects when built,
    # which must not happen on the event loop of a saver used only through the async API.
    _sync_client: Any

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._run(self._get_tuple(config))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._run(self._put(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._run(self._put_writes(config, writes, task_id, task_path))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
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
                reply = self._execute(step)

    def delete_thread(self, thread_id: str) -> None:
        self._run(self._delete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._run(self._delete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(self._copy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._run(self._prune(thread_ids, strategy))

    def thread_bytes(self, thread_id: str) -> int:
        return self._run(self._thread_bytes(thread_id))

    def _run(self, operation: Operation[T]) -> T:
        """Call each request and send the operation its reply, or throw in its error."""
        try:
            request = next(operation)
            while True:
                try:
                    reply = self._execute(request)
                except Exception as exc:
                    request = operation.throw(exc)
                else:
                    request = operation.send(reply)
        except StopIteration as done:
            result: T = done.value
            return result

    def _execute(self, request: Request) -> Any:
        client = self._sync()
        if isinstance(request, Pipeline):
            pipe = client.pipeline(transaction=False)
            for command in request.commands:
                pipe.execute_command(*command)
            return pipe.execute()
        if isinstance(request, Scan):
            return list(client.scan_iter(match=request.match, count=500))
        return client.execute_command(*request)

    def _sync(self) -> Any:
        if self._sync_client is None:
            raise RuntimeError("this saver has no sync client: build it with from_url")
        if callable(self._sync_client):
            self._sync_client = self._sync_client()
        return self._sync_client
