"""A web page on another origin asks `rillet serve` in a real browser (Debian's chromium,
headless, driven by playwright-core): with the page's origin in `server.cors` the answer
streams into the page; from an origin not listed the browser itself refuses. The page
sends an API key in `Authorization`, so every call is preflighted. Screenshots land in the
test's tmp folder (their paths are printed)."""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from rillet_runtime.fakellm import answer_tokens
from tests.support.js import JS, run_node
from tests.support.keys import api_key_settings, write_api_keys
from tests.support.servers import RilletServer, fake_llm_process, rillet_server

TOKENS = 30
KEY = "key-browser-0123456789"
CHROMIUM = "/usr/bin/chromium"


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextlib.contextmanager
def static_site(folder: Path) -> Iterator[str]:
    """`folder` served on a loopback port of its own: a web app's origin."""
    handler = functools.partial(_QuietFiles, directory=str(folder))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join()


@pytest.fixture(scope="module")
def origins() -> Iterator[tuple[str, str]]:
    """The page on two origins: the first one listed in the server's CORS settings."""
    with static_site(JS / "page") as listed, static_site(JS / "page") as other:
        yield listed, other


@pytest.fixture(scope="module")
def server(module_tmp: Path, origins: tuple[str, str]) -> Iterator[RilletServer]:
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: `make chromium` installs it"
    keys = write_api_keys(module_tmp / "keys", {"web": KEY})
    with (
        fake_llm_process(module_tmp, "--answer-tokens", str(TOKENS)) as fake,
        rillet_server(
            module_tmp,
            workers=1,
            server__cors__allow_origins=json.dumps([origins[0]]),
            **api_key_settings(keys),
            **fake.openai_settings(),
        ) as served,
    ):
        yield served


def open_page(origin: str, server: RilletServer, tmp_path: Path, key: str = KEY) -> Any:
    """What the page shows once it settles, and its screenshot's path printed."""
    fragment = urlencode({"api": server.url, "key": key, "question": "How does Rillet stream?"})
    screenshot = tmp_path / "page.png"
    seen = run_node("browser.cjs", f"{origin}/index.html#{fragment}", str(screenshot))
    print(f"screenshot: {screenshot}")
    assert screenshot.stat().st_size > 0
    return seen


def test_a_listed_origin_streams_the_answer_into_the_page(
    server: RilletServer, origins: tuple[str, str], tmp_path: Path
) -> None:
    seen = open_page(origins[0], server, tmp_path)
    assert (seen["state"], seen["status"]) == ("done", "done")
    assert seen["answer"] == "".join(answer_tokens(TOKENS))
    assert seen["run"].startswith("/threads/")  # Content-Location: an exposed header


def test_an_origin_not_listed_is_refused_by_the_browser(
    server: RilletServer, origins: tuple[str, str], tmp_path: Path
) -> None:
    seen = open_page(origins[1], server, tmp_path)
    assert seen["state"] == "error"
    assert "Failed to fetch" in seen["status"]  # the page never sees a response
    assert seen["answer"] == ""
    assert any("blocked by CORS policy" in line for line in seen["console"]), seen["console"]


def test_a_refusal_is_readable_by_a_listed_page(
    server: RilletServer, origins: tuple[str, str], tmp_path: Path
) -> None:
    """A 401 carries the CORS headers too, so the page can tell a bad key from a refusal."""
    seen = open_page(origins[0], server, tmp_path, key="not-a-key")
    assert seen["state"] == "error"
    assert "HTTP 401 from /threads" in seen["status"]
