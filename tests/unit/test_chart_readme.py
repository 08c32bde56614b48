"""The chart's README is generated from values.yaml and values.schema.json (charts/readme.py):
the committed one is the generator's output, and the generator lists every value.

After a change to the values or their schema, `make manifests` (or this test with
RILLET_UPDATE_GOLDEN=1) rewrites the README; review and commit it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from charts.readme import CHART, README_PATH, render_readme

UPDATE = os.environ.get("RILLET_UPDATE_GOLDEN") == "1"


def test_the_committed_readme_matches_the_values_and_their_schema() -> None:
    if UPDATE:
        README_PATH.write_text(render_readme())
    assert README_PATH.read_text() == render_readme(), (
        f"run `make manifests` and commit {README_PATH.relative_to(CHART.parents[1])}"
    )


def leaf_paths(values: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for name, value in values.items():
        if isinstance(value, dict) and value:
            paths |= leaf_paths(value, f"{prefix}{name}.")
        else:
            paths.add(f"{prefix}{name}")
    return paths


def table(readme: str) -> dict[str, list[str]]:
    """Value path -> its cells (type, default, limits, description)."""
    lines = [line.removeprefix("| ").removesuffix(" |") for line in readme.splitlines()]
    rows = [line.split(" | ") for line in lines if line.startswith("`")]
    return {row[0].strip("`"): row[1:] for row in rows}


def test_every_value_is_listed_with_its_type_and_default() -> None:
    rows = table(render_readme())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in leaf_paths(values):
        # A leaf, or inside an object the schema leaves open (resources: {limits: ...}).
        listed = [p for p in rows if path == p or path.startswith(f"{p}.")]
        assert listed, f"{path} is not in the README"
        kind, default, *_ = rows[max(listed, key=len)]
        assert kind, path
        assert default.startswith("`"), path
    assert rows["metrics.port"][:3] == ["integer", "`8080`", ">= 1024, <= 65535, not 8081"]
    assert rows["watch.namespaces"][0] == "array of string"
    assert rows["podAnnotations"][0] == "map of string"
    assert rows["image.tag"][3] == "default: the chart's appVersion"  # the inline comment
    assert rows["crds.install"][3].startswith("Install and upgrade the ChatService CRD")


def test_a_value_the_schema_does_not_know_is_refused(tmp_path: Path) -> None:
    chart = tmp_path / "rillet"
    shutil.copytree(CHART, chart)
    with (chart / "values.yaml").open("a") as values:
        values.write("undocumented: true\n")
    with pytest.raises(ValueError, match=r"undocumented is in values\.yaml but not in"):
        render_readme(chart)
