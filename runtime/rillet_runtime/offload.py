"""CPU work sized by its input, kept off the event loop when it is large.

A worker's event loop serves every open stream; pure-Python work on a long input (embedding
it offline, tokenising it, scoring it with BM25) would stall all of them at once, for tens
of milliseconds on the largest inputs the caps allow. Above `INLINE_MAX_CHARS` the work runs
in a thread instead; the GIL still lets the loop in every switch interval (5 ms), so other
streams keep flowing. Below it the work runs inline: about a millisecond, less than the
thread hop would add to a short question.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

INLINE_MAX_CHARS = 2_000  # offline embedding or BM25 of this much text: about 1 ms


async def cpu_bound(chars: int, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`work(*args, **kwargs)`, in a thread when its input (`chars` long) is large."""
    if chars <= INLINE_MAX_CHARS:
        return work(*args, **kwargs)
    return await asyncio.to_thread(work, *args, **kwargs)
