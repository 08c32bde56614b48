"""Schemathesis fuzzes every route of the runtime's own OpenAPI description against a real
`rillet serve` (2 workers, API keys, the offline model), authenticated: no 5xx, and no
response that breaks the schema (status, content type, headers, body). The number of
requests sent is printed; docs/security.md records it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from rillet_runtime.app import create_app
from rillet_runtime.settings import Settings
from tests.support.keys import api_key_settings, write_api_keys
from tests.support.servers import Process, rillet_server

KEY = "fuzz-key-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}"}
EXAMPLES_PER_ROUTE = 100
# Rules the schema cannot state, so a schema-valid request may rightly get 422 there (still
# never a 5xx, and its answer still fits the schema).
BEYOND_THE_SCHEMA = {
    "POST /threads/{thread_id}/state": "the values and node must fit the served graph",
    "POST /runs/stream": "a threadless run cannot resume an interrupt",
    "POST /runs/wait": "a threadless run cannot resume an interrupt",
    "POST /runs": "a threadless run cannot resume an interrupt",
}
sent: list[str] = []


@pytest.fixture(scope="module")
def fuzzed(module_tmp: Path) -> Iterator[Process]:
    keys = write_api_keys(module_tmp / "keys", {"fuzzer": KEY})
    with rillet_server(module_tmp, workers=2, **api_key_settings(keys)) as server:
        yield server
    print(f"\nschemathesis sent {len(sent)} requests over {len(set(sent))} operations")


def test_no_route_fails_or_breaks_its_schema(fuzzed: Process) -> None:
    schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_ROUTE,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def call(case: Any) -> None:
            sent.append(f"{case.method} {case.path}")
            excluded = [positive_data_acceptance] if sent[-1] in BEYOND_THE_SCHEMA else []
            case.call_and_validate(
                base_url=fuzzed.url, headers=HEADERS, timeout=60, excluded_checks=excluded
            )

        call()
