"""JavaScript clients for the tests: the Node scripts in tests/js, with the packages
tests/js/install.sh keeps in a cache keyed by tests/js/package-lock.json."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

JS = Path(__file__).resolve().parents[1] / "js"


@functools.cache
def node_modules() -> Path:
    """The cached packages, installed first when the lock changed (`make js-clients`)."""
    done = subprocess.run(
        ["bash", str(JS / "install.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(done.stdout.split()[-1])


def run_node(script: str, *args: str, timeout: float = 120) -> Any:
    """Runs tests/js/<script>; its last line of output, as JSON."""
    node = shutil.which("node")
    assert node, "Node.js 20+ is needed for the JavaScript tests"
    done = subprocess.run(
        [node, str(JS / script), *args],
        env={**os.environ, "NODE_PATH": str(node_modules())},  # require() finds them there
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{script} failed ({done.returncode}):\n{done.stderr}"
    return json.loads(done.stdout.splitlines()[-1])
