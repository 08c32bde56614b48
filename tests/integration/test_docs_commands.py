"""Every `rillet` command the docs show runs as written, with the installed `rillet` command.

Those that need no cluster and no running endpoint (ingest, query, render, --help,
--version) run for real, in doc order, in a folder holding the files they name; the rest
(serve, operator, bench against an endpoint) are parsed by the CLI itself, so a renamed or
removed option fails here."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.main import get_command

from rillet_runtime.cli import app
from rillet_runtime.version import version

ROOT = Path(__file__).resolve().parents[2]
RUN_FOR_REAL = {"ingest", "query", "render", "--help", "--version"}
FENCE = re.compile(r"^\s*```[^\n]*\n(.*?)^\s*```", re.S | re.M)
COMMAND = re.compile(r"^((?:[A-Z_][A-Z0-9_]*=\S*\s+)*)rillet(\s.*)$")


def doc_commands() -> list[tuple[str, dict[str, str], list[str]]]:
    """(doc, environment, argv after `rillet`) for each command line in a code block."""
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for block in FENCE.findall(doc.read_text(encoding="utf-8")):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                match = COMMAND.match(re.sub(r"^\s*\$\s+", "", line.strip()))
                if match is None:
                    continue
                command = match.group(2).split("|")[0]  # `rillet render ... | kubectl diff`
                env = dict(item.split("=", 1) for item in match.group(1).split())
                found.append((str(doc.relative_to(ROOT)), env, shlex.split(command, comments=True)))
    return found


COMMANDS = doc_commands()


def test_the_docs_show_rillet_commands() -> None:
    assert {args[0] for _, _, args in COMMANDS} >= {"ingest", "query", "render", "bench", "serve"}


PARSE_ONLY = [c for c in COMMANDS if c[2][0] not in RUN_FOR_REAL]


@pytest.mark.parametrize(
    ("doc", "env", "args"),
    PARSE_ONLY,
    ids=[f"{d}: rillet {shlex.join(a)}" for d, _, a in PARSE_ONLY],
)
def test_commands_that_need_a_cluster_or_an_endpoint_parse(
    doc: str, env: dict[str, str], args: list[str]
) -> None:
    command = get_command(app).commands[args[0]]  # type: ignore[attr-defined]
    command.make_context(args[0], args[1:])  # raises on an unknown option or a bad value


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the docs' commands name: a handbook folder, an HTML FAQ, the examples."""
    folder = tmp_path_factory.mktemp("docs-commands")
    (folder / "handbook").mkdir()
    (folder / "handbook" / "refunds.md").write_text(
        "# Refunds\n\nRefunds are paid to the original card within five working days.\n"
    )
    (folder / "faq.html").write_text(
        "<html><body><h1>FAQ</h1><p>Orders ship within two days.</p></body></html>"
    )
    (folder / "docs").symlink_to(ROOT / "docs")
    return folder


def test_commands_without_a_cluster_run_as_written(workdir: Path) -> None:
    rillet = shutil.which("rillet")
    assert rillet, "the rillet command is not on PATH (make venv installs it)"
    ran = []
    for doc, env, args in [c for c in COMMANDS if c[2][0] in RUN_FOR_REAL]:
        result = subprocess.run(
            [rillet, *args],
            cwd=workdir,
            env={"PATH": str(Path(rillet).parent), "HOME": str(workdir), **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{doc}: rillet {shlex.join(args)}\n{result.stderr}"
        ran.append((args[0], result.stdout))
    outputs = dict(ran)
    assert "2 files" in outputs["ingest"]
    assert "Refunds" in outputs["query"]
    assert "kind: Deployment" in outputs["render"]
    assert outputs["--version"] == f"rillet {version()} (revision unknown)\n"  # no image here
