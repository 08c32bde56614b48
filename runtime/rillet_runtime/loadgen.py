"""`rillet bench`: an SSE load generator for a running chat endpoint.

Closed loop: `concurrency` clients, started evenly over `ramp` seconds, each opening one
stream after another until `duration` has passed or `requests` streams have been made.
It speaks Rillet's API (`/v1/chat/stream`), the OpenAI-compatible API
(`/v1/chat/completions` with `stream: true`) and LangGraph's Agent Server API
(`/runs/stream`, stream mode `messages-tuple`), over plain asyncio sockets with an
incremental HTTP/1.1 and SSE parser: no client library per stream, so one core drives
thousands of streams.

Reported per stream: time to first token (TTFT), the gaps between tokens (inter-token
latency, ITL), tokens per second after the first, and errors by kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

# --- the three APIs ----------------------------------------------------------------------

Event = tuple[bytes, bytes]  # (event name, data)


@dataclass(frozen=True)
class Api:
    """How to ask for a stream and read tokens, the end and errors from its events."""

    name: str
    path: str
    request: Callable[[str, str], dict[str, Any]]  # (prompt, model) -> JSON body
    is_token: Callable[[Event], bool]
    is_end: Callable[[Event], bool]
    is_error: Callable[[Event], bool]


def _has_text(data: bytes, key: bytes = b'"content":"') -> bool:
    at = data.find(key)
    return at >= 0 and data[at + len(key) : at + len(key) + 1] not in (b'"', b"")


APIS: dict[str, Api] = {
    "rillet": Api(
        "rillet",
        "/v1/chat/stream",
        lambda prompt, model: {"message": prompt},
        lambda e: e[0] == b"token",
        lambda e: e[0] == b"done",
        lambda e: e[0] == b"error",
    ),
    "openai": Api(
        "openai",
        "/v1/chat/completions",
        lambda prompt, model: {
            "model": model,
            "stream": True,
            "messages": [{"role": "user", "content": prompt}],
        },
        lambda e: _has_text(e[1]),
        lambda e: e[1] == b"[DONE]",
        lambda e: e[1].startswith(b'{"error"'),
    ),
    "langgraph": Api(
        "langgraph",
        "/runs/stream",
        lambda prompt, model: {
            "assistant_id": model,
            "input": {"messages": [{"role": "human", "content": prompt}]},
            "stream_mode": ["messages-tuple"],
            "on_disconnect": "cancel",  # as Rillet does: no tokens for a gone client
        },
        lambda e: e[0] == b"messages" and _has_text(e[1]),
        lambda e: e[0] == b"end",
        lambda e: e[0] == b"error",
    ),
}


# --- one stream -----------------------------------------------------------------------------


@dataclass
class StreamResult:
    started: float
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0
    last_token: float | None = None
    error: str | None = None
    answered: float | None = None  # seconds from the start to the response's status line

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def tokens_per_second(self) -> float | None:
        if self.tokens < 2 or self.ttft is None or self.last_token is None:
            return None
        spent = self.last_token - (self.started + self.ttft)
        return (self.tokens - 1) / spent if spent > 0 else None


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool
    base_path: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        tls = parts.scheme == "https"
        return cls(parts.hostname, parts.port or (443 if tls else 80), tls, parts.path.rstrip("/"))


class _Body:
    """Incremental decoding of a response body: chunked or not, then SSE events."""

    def __init__(self, chunked: bool) -> None:
        self.chunked = chunked
        self.raw = b""
        self.text = b""
        self.done = False

    def feed(self, data: bytes) -> list[Event]:
        if self.done:  # the last chunk's trailing CRLF, or anything after it
            return []
        if not self.chunked:
            self.text += data
        else:
            self.raw += data
            while True:
                line_end = self.raw.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(self.raw[:line_end].split(b";")[0], 16)
                if size == 0:
                    self.done = True
                    self.raw = b""
                    break
                if len(self.raw) < line_end + 2 + size + 2:
                    break
                start = line_end + 2
                self.text += self.raw[start : start + size]
                self.raw = self.raw[start + size + 2 :]
        return self._events()

    def _events(self) -> list[Event]:
        events = []
        text = self.text.replace(b"\r\n", b"\n")
        *blocks, self.text = text.split(b"\n\n")
        for block in blocks:
            name, data = b"message", []
            for line in block.split(b"\n"):
                if line.startswith(b"event:"):
                    name = line[6:].strip()
                elif line.startswith(b"data:"):
                    data.append(line[5:].lstrip())
            if data or name != b"message":
                events.append((name, b"\n".join(data)))
        return events


async def one_stream(
    endpoint: Endpoint,
    api: Api,
    prompt: str,
    model: str,
    limit_seconds: float,
    api_key: str | None = None,
) -> StreamResult:
    result = StreamResult(started=time.perf_counter())
    body = json.dumps(api.request(prompt, model)).encode()
    auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
    request = (
        f"POST {endpoint.base_path}{api.path} HTTP/1.1\r\nHost: {endpoint.host}\r\n"
        f"Content-Type: application/json\r\nAccept: text/event-stream\r\n{auth}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(limit_seconds):
            context = ssl.create_default_context() if endpoint.tls else None
            reader, writer = await asyncio.open_connection(
                endpoint.host, endpoint.port, ssl=context
            )
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            result.answered = time.perf_counter() - result.started
            status = int(head.split(b" ", 2)[1])
            if status != 200:
                result.error = f"http_{status}"
                return result
            chunked = b"transfer-encoding: chunked" in head.lower()
            decoder = _Body(chunked)
            while not decoder.done:
                data = await reader.read(65536)
                if not data:
                    break
                now = time.perf_counter()
                for event in decoder.feed(data):
                    if api.is_token(event):
                        _count_token(result, now)
                    elif api.is_error(event):
                        result.error = "error_event"
                        return result
                    elif api.is_end(event):
                        return result
            if api.name != "langgraph":  # LangGraph's server ends by closing the stream
                result.error = "incomplete"
    except TimeoutError:
        result.error = "timeout"
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        result.error = type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    return result


def _count_token(result: StreamResult, now: float) -> None:
    if result.ttft is None:
        result.ttft = now - result.started
    elif result.last_token is not None:
        result.gaps.append(now - result.last_token)
    result.last_token = now
    result.tokens += 1


# --- a load run -----------------------------------------------------------------------------


@dataclass
class LoadPlan:
    concurrency: int
    ramp_seconds: float = 0.0
    duration_seconds: float | None = None
    requests: int | None = None
    timeout_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if (self.duration_seconds is None) == (self.requests is None):
            raise ValueError("give exactly one of duration and requests")


@dataclass
class Progress:
    started: int = 0
    finished: int = 0
    errors: int = 0
    tokens: int = 0
    open: int = 0


async def run_load(
    url: str,
    api: Api,
    plan: LoadPlan,
    prompts: Sequence[str],
    model: str = "default",
    progress: Progress | None = None,
    api_key: str | None = None,
) -> list[StreamResult]:
    endpoint = Endpoint.parse(url)
    progress = progress or Progress()
    results: list[StreamResult] = []
    budget = [plan.requests] if plan.requests is not None else None
    deadline = (
        time.perf_counter() + plan.ramp_seconds + plan.duration_seconds
        if plan.duration_seconds is not None
        else None
    )
    rng = random.Random(0)

    async def client(index: int) -> None:
        await asyncio.sleep(plan.ramp_seconds * index / plan.concurrency)
        while True:
            if deadline is not None and time.perf_counter() >= deadline:
                return
            if budget is not None:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            progress.started += 1
            progress.open += 1
            prompt = prompts[rng.randrange(len(prompts))]
            result = await one_stream(endpoint, api, prompt, model, plan.timeout_seconds, api_key)
            progress.open -= 1
            progress.finished += 1
            progress.tokens += result.tokens
            progress.errors += not result.ok
            results.append(result)

    await asyncio.gather(*(client(i) for i in range(plan.concurrency)))
    return results


# --- reporting ------------------------------------------------------------------------------


def percentiles(values: Sequence[float], scale: float = 1000.0) -> dict[str, float | None]:
    """p50, p90, p95 (what latency targets are set on), p99; milliseconds by default;
    None without samples."""
    names = {"p50": 49, "p90": 89, "p95": 94, "p99": 98}
    if not values:
        return dict.fromkeys(names)
    if len(values) == 1:
        return dict.fromkeys(names, values[0] * scale)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {name: cuts[index] * scale for name, index in names.items()}


def summarize(results: Sequence[StreamResult], wall_seconds: float) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    rates = [r.tokens_per_second for r in ok]
    return {
        "streams": len(results),
        "ok": len(ok),
        "errors": dict(Counter(r.error for r in results if r.error)),
        "wall_seconds": wall_seconds,
        "tokens": sum(r.tokens for r in results),
        "tokens_per_second_total": sum(r.tokens for r in results) / wall_seconds,
        "ttft_ms": percentiles([r.ttft for r in ok if r.ttft is not None]),
        "inter_token_ms": percentiles([g for r in ok for g in r.gaps]),
        "tokens_per_second_per_stream": percentiles([x for x in rates if x is not None], 1.0),
    }


def table(summary: dict[str, Any]) -> str:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:,.1f}"

    lines = [
        f"{summary['ok']}/{summary['streams']} streams ok in {summary['wall_seconds']:.1f} s, "
        f"{summary['tokens']:,} tokens ({summary['tokens_per_second_total']:,.0f}/s)",
        "",
        "| metric | p50 | p90 | p95 | p99 |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, key in (
        ("time to first token (ms)", "ttft_ms"),
        ("inter-token latency (ms)", "inter_token_ms"),
        ("tokens/s per stream", "tokens_per_second_per_stream"),
    ):
        row = summary[key]
        cells = " | ".join(cell(row[p]) for p in ("p50", "p90", "p95", "p99"))
        lines.append(f"| {label} | {cells} |")
    if summary["errors"]:
        lines += ["", "errors: " + ", ".join(f"{k} {v}" for k, v in summary["errors"].items())]
    return "\n".join(lines)


def plot(results: Sequence[StreamResult], path: str) -> None:
    """TTFT and ITL distributions, and TTFT over the run (matplotlib: the `plot` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if r.ok and r.ttft is not None]
    t0 = min((r.started for r in results), default=0.0)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.scatter([r.started - t0 for r in ok], [(r.ttft or 0) * 1000 for r in ok], s=4, alpha=0.5)
    left.set(xlabel="stream start (s)", ylabel="time to first token (ms)", title="TTFT over time")
    gaps = sorted(g * 1000 for r in ok for g in r.gaps)
    ttfts = sorted((r.ttft or 0) * 1000 for r in ok)
    for values, label in ((ttfts, "TTFT"), (gaps, "inter-token")):
        if values:
            right.plot(values, [i / len(values) for i in range(len(values))], label=label)
    right.set(xscale="log", xlabel="ms", ylabel="share of samples", title="distribution")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
