"""`rillet bench --calibrate`: the highest concurrency one pod serves within the latency
targets, which becomes the ChatService's `autoscaling.streamsPerPod`.

Steps of closed-loop load at a fixed concurrency: doubling while the targets hold, then
bisecting between the last step that held and the first that did not. The search is a
pure function of the steps measured so far, so it is tested without a server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rillet_runtime.loadgen import StreamResult, percentiles

MAX_ERROR_RATE = 0.01  # a step with more failed streams than this does not hold


@dataclass(frozen=True)
class Targets:
    ttft_p95_ms: float
    inter_token_p95_ms: float


@dataclass(frozen=True)
class Step:
    concurrency: int
    streams: int
    errors: int
    ttft_p95_ms: float | None
    inter_token_p95_ms: float | None

    def holds(self, targets: Targets) -> bool:
        if self.streams == 0 or self.ttft_p95_ms is None:
            return False
        if self.errors > MAX_ERROR_RATE * self.streams:
            return False
        itl_ok = self.inter_token_p95_ms is None or (
            self.inter_token_p95_ms <= targets.inter_token_p95_ms
        )
        return self.ttft_p95_ms <= targets.ttft_p95_ms and itl_ok


def measure(concurrency: int, results: Sequence[StreamResult]) -> Step:
    ok = [r for r in results if r.error is None]
    return Step(
        concurrency=concurrency,
        streams=len(results),
        errors=len(results) - len(ok),
        ttft_p95_ms=percentiles([r.ttft for r in ok if r.ttft is not None])["p95"],
        inter_token_p95_ms=percentiles([gap for r in ok for gap in r.gaps])["p95"],
    )


def next_concurrency(
    steps: Sequence[Step], targets: Targets, start: int, ceiling: int
) -> int | None:
    """The next concurrency to measure, or None when the search is done."""
    if not steps:
        return min(start, ceiling)
    held = [s.concurrency for s in steps if s.holds(targets)]
    failed = [s.concurrency for s in steps if not s.holds(targets)]
    low = max(held, default=0)
    high = min((c for c in failed if c > low), default=None)
    if high is None:  # everything so far held: double, up to the ceiling
        return None if low >= ceiling else min(low * 2, ceiling)
    if low == 0 and high <= 1:
        return None  # not even one stream meets the targets
    if high - low <= max(1, low // 10):  # within 10%: good enough for a capacity target
        return None
    return (low + high) // 2 if low else max(1, high // 2)


def capacity(steps: Sequence[Step], targets: Targets) -> int | None:
    """The highest measured concurrency that met the targets; None if none did."""
    return max((s.concurrency for s in steps if s.holds(targets)), default=None)


async def calibrate(
    run_step: Callable[[int], Awaitable[Sequence[StreamResult]]],
    targets: Targets,
    start: int = 4,
    ceiling: int = 1024,
    on_step: Callable[[Step], None] | None = None,
) -> list[Step]:
    steps: list[Step] = []
    while (concurrency := next_concurrency(steps, targets, start, ceiling)) is not None:
        step = measure(concurrency, await run_step(concurrency))
        steps.append(step)
        if on_step:
            on_step(step)
    return steps


def report(steps: Sequence[Step], targets: Targets) -> dict[str, Any]:
    return {
        "targets": asdict(targets),
        "steps": [asdict(s) | {"holds": s.holds(targets)} for s in steps],
        "streams_per_pod": capacity(steps, targets),
    }


def describe(step: Step, targets: Targets) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f} ms"

    verdict = "meets the targets" if step.holds(targets) else "misses"
    return (
        f"{step.concurrency:>5} streams: TTFT p95 {ms(step.ttft_p95_ms)}, inter-token p95 "
        f"{ms(step.inter_token_p95_ms)}, {step.errors}/{step.streams} errors: {verdict}"
    )
