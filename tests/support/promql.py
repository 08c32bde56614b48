"""Prometheus' own PromQL parser (testcluster/promqlcheck, built and cached with the test
control plane), for every query Rillet writes: status queries, KEDA triggers, the chart's
adapter rules and alerts."""

from __future__ import annotations

import json
import subprocess

from testcluster import build


def parse_errors(queries: list[str]) -> dict[str, str]:
    """Each query that does not parse, with the parser's error."""
    done = subprocess.run(
        [str(build() / "promqlcheck")],
        input="\n".join(q.replace("\n", " ") for q in queries) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == len(queries)
    return {r["query"]: r["error"] for r in results if r["error"]}
