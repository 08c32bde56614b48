"""The calibration search, as a pure function of the steps measured so far."""

from __future__ import annotations

from rillet_runtime.calibrate import Step, Targets, capacity, next_concurrency

TARGETS = Targets(ttft_p95_ms=500, inter_token_p95_ms=100)


def simulate(true_capacity: int, start: int = 4, ceiling: int = 1024) -> list[int]:
    """The concurrencies the search measures against a pod that holds up to a capacity."""
    steps: list[Step] = []
    while (c := next_concurrency(steps, TARGETS, start, ceiling)) is not None:
        ttft = 200.0 if c <= true_capacity else 900.0
        steps.append(Step(c, streams=100, errors=0, ttft_p95_ms=ttft, inter_token_p95_ms=20))
    return [s.concurrency for s in steps]


def test_doubles_then_bisects_to_within_ten_percent() -> None:
    measured = simulate(true_capacity=95)
    assert measured == [4, 8, 16, 32, 64, 128, 96, 80, 88]
    steps = [Step(c, 100, 0, 200.0 if c <= 95 else 900.0, 20) for c in measured]
    assert capacity(steps, TARGETS) == 88  # 96 missed: 88 is within 10% of the truth


def test_stops_at_the_ceiling() -> None:
    assert simulate(true_capacity=10_000, ceiling=50) == [4, 8, 16, 32, 50]


def test_gives_up_below_one_stream() -> None:
    assert simulate(true_capacity=0) == [4, 2, 1]


def test_errors_or_a_missed_inter_token_target_fail_a_step() -> None:
    assert not Step(10, 100, 2, 100.0, 10.0).holds(TARGETS)  # 2% of streams failed
    assert not Step(10, 100, 0, 100.0, 150.0).holds(TARGETS)
    assert Step(10, 100, 1, 100.0, 100.0).holds(TARGETS)
