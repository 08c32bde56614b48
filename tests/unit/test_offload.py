"""CPU work on large inputs leaves the event loop: a short input runs inline, a long one in
a thread, and a long offline embedding lets the loop's other work go on meanwhile. A
resource's blocking calls run on a thread of its own, in turn."""

from __future__ import annotations

import asyncio
import threading

from rillet_runtime.offload import INLINE_MAX_CHARS, OwnThread, cpu_bound
from rillet_runtime.retrieval.embeddings import OfflineEmbedder


async def test_short_inputs_run_inline_and_long_ones_in_a_thread() -> None:
    loop_thread = threading.get_ident()
    assert await cpu_bound(INLINE_MAX_CHARS, threading.get_ident) == loop_thread
    assert await cpu_bound(INLINE_MAX_CHARS + 1, threading.get_ident) != loop_thread


async def test_a_long_offline_embedding_leaves_the_loop_serving() -> None:
    """128,000 characters (the default input cap) take tens of milliseconds to embed; on
    the loop that would be as long with no other stream served. A ticker keeps ticking."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    text = " ".join(f"word{i} scaling latency target" for i in range(4_000))[:128_000]
    before = ticks
    vectors = await OfflineEmbedder().embed([text])
    during = ticks - before
    ticker.cancel()
    assert vectors.shape == (1, 384)
    assert during >= 2, f"the loop ticked {during} times while embedding"


async def test_a_resource_thread_runs_every_call_off_the_loop_on_one_thread_in_turn() -> None:
    own = OwnThread("test-resource")
    order: list[int] = []

    def record(call: int) -> int:
        order.append(call)
        return threading.get_ident()

    threads = await asyncio.gather(*(own.run(record, call) for call in range(20)))
    own.close()
    assert len(set(threads)) == 1
    assert threads[0] != threading.get_ident()
    assert order == list(range(20))
