"""Work kept off the event loop: CPU work sized by its input when it is large, and a
resource's blocking calls on a thread of its own.

A worker's event loop serves every open stream; pure-Python work on a long input (embedding
it offline, tokenising it, scoring it with BM25) would stall all of them at once, for tens
of milliseconds on the largest inputs the caps allow. Above `INLINE_MAX_CHARS` the work runs
in a thread instead; the GIL still lets the loop in every switch interval (5 ms), so other
streams keep flowing. Below it the work runs inline: about a millisecond, less than the
thread hop would add to a short question.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

INLINE_MAX_CHARS = 2_000  # offline embedding or BM25 of this much text: about 1 ms


async def cpu_bound(chars: int, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`work(*args, **kwargs)`, in a thread when its input (`chars` long) is large."""
    if chars <= INLINE_MAX_CHARS:
        return work(*args, **kwargs)
    return await asyncio.to_thread(work, *args, **kwargs)


class OwnThread:
    """One thread of its own for a resource's blocking calls (an SQLite connection), in turn.

    Measured for the embedded index's row lookups under uvloop (20,000 chunks, 3 rows each):
    about 72 us a lookup here, 73 us through `asyncio.to_thread` and 165 us through aiosqlite;
    50 at once, 39 us each here, 85 us through `to_thread` (the pool's threads contend for the
    one connection) and 40 us through aiosqlite (a thread per connection too, plus a queue).
    """

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(work, *args, **kwargs))

    def close(self) -> None:
        """Without waiting: the thread ends once the calls already given to it are done."""
        self._executor.shutdown(wait=False)
