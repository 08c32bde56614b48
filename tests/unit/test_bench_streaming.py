"""The streaming benchmark's arithmetic: added latency and the highest level under bound."""

from __future__ import annotations

from typing import Any

import pytest

from bench.streaming import derive, ratios


def wave(server: str, level: int, ttft_p99: float, ok: int | None = None) -> dict[str, Any]:
    return {
        "server": server,
        "concurrency": level,
        "ok": level if ok is None else ok,
        "ttft_ms": {"p50": ttft_p99 - 5, "p99": ttft_p99},
        "inter_token_ms": {"p99": 25.0},
        "cpu_seconds_per_1000_tokens": 0.1 if server == "floor" else 0.3,
    }


def test_the_highest_level_under_the_bound_stops_at_the_first_miss() -> None:
    waves = [
        wave("model", 10, 200),
        wave("model", 50, 210),
        wave("model", 100, 220),
        wave("floor", 10, 210),
        wave("floor", 50, 240),
        wave("floor", 100, 400),
        wave("rillet (memory)", 10, 300),
        wave("rillet (memory)", 50, 220),
    ]
    derived = derive(waves, ["floor", "rillet (memory)"])
    assert derived["max_concurrency_under_bound"]["50"] == {"floor": 50, "rillet (memory)": None}
    assert derived["max_concurrency_under_bound"]["250"] == {"floor": 100, "rillet (memory)": 50}
    added = {(a["server"], a["concurrency"]): a for a in derived["added"]}
    assert added["floor", 50]["added_ttft_p99_ms"] == 30


def test_failed_streams_end_the_search() -> None:
    waves = [wave("model", 10, 200), wave("floor", 10, 205, ok=9)]
    assert derive(waves, ["floor"])["max_concurrency_under_bound"]["1000"] == {"floor": None}


def test_ratios_against_langgraph_and_the_floor() -> None:
    result = {
        "max_concurrency_under_bound": {
            "50": {"floor": 100, "langgraph": 25, "rillet (memory)": 50, "rillet (redis)": None}
        },
        "added": [
            {"server": "floor", "cpu_seconds_per_1000_tokens": 0.1},
            {"server": "langgraph", "cpu_seconds_per_1000_tokens": 0.6},
            {"server": "rillet (memory)", "cpu_seconds_per_1000_tokens": 0.3},
        ],
    }
    out = ratios(result)
    assert out["rillet (memory) / langgraph"] == {
        "max_concurrency": {"50": 2.0},
        "cpu_per_token": 0.5,
    }
    assert out["rillet (memory) / floor"]["cpu_per_token"] == pytest.approx(3.0)
    assert out["rillet (redis) / floor"] == {"max_concurrency": {"50": 0.0}, "cpu_per_token": None}
