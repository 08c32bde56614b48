"""The loop lag admission sees: a smoothed average of how late the worker's loop wakes."""

from __future__ import annotations

from rillet_runtime.admission import Admission, smoothed_lag

BUDGET = 0.150


def after(samples: list[float], start: float = 0.0) -> list[float]:
    seen, lag = [], start
    for sample in samples:
        lag = smoothed_lag(lag, sample)
        seen.append(lag)
    return seen


def test_one_late_wake_sheds_nothing() -> None:
    """A 300 ms pause (a full collection, a worker's first request) among healthy samples."""
    assert max(after([0.001] * 20 + [0.300] + [0.001] * 20)) < BUDGET


def test_a_loop_that_stays_late_sheds_until_it_catches_up() -> None:
    late = after([0.250] * 10)
    assert late[-1] > BUDGET
    recovered = after([0.002] * 10, start=late[-1])
    assert recovered[-1] < BUDGET
    assert recovered[0] > BUDGET  # not at the first good sample


def test_overloaded_only_past_the_budget_and_never_without_one() -> None:
    admission = Admission(max_streams=10, max_loop_lag=BUDGET)
    admission.loop_lag = BUDGET
    assert not admission.overloaded
    admission.loop_lag = BUDGET + 0.001
    assert admission.overloaded
    unbounded = Admission(max_streams=10)
    unbounded.loop_lag = 10.0
    assert not unbounded.overloaded
