"""The per-ChatService queue: one reconcile at a time, requests during one coalesce."""

from __future__ import annotations

import asyncio

from rillet_operator.queue import ReconcileQueue


async def test_requests_during_a_run_coalesce_into_one_more_run() -> None:
    runs: list[tuple[str, str]] = []
    running = asyncio.Event()
    release = asyncio.Event()

    async def work(namespace: str, name: str) -> None:
        runs.append((namespace, name))
        running.set()
        await release.wait()

    queue = ReconcileQueue(work)
    first = asyncio.create_task(queue.run("ns", "a"))
    await running.wait()
    for _ in range(5):
        queue.request("ns", "a")
    release.set()
    await first
    for _ in range(10):
        await asyncio.sleep(0)
    assert runs == [("ns", "a"), ("ns", "a")]
    await queue.aclose()


async def test_a_failed_queued_run_is_logged_not_raised() -> None:
    calls = 0
    done = asyncio.Event()

    async def work(namespace: str, name: str) -> None:
        nonlocal calls
        calls += 1
        done.set()
        raise RuntimeError("API server away")

    queue = ReconcileQueue(work)
    queue.request("ns", "a")
    await done.wait()
    await asyncio.sleep(0)
    assert calls == 1
    await queue.aclose()
