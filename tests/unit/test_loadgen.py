"""The load generator's HTTP and SSE decoding, fed in awkward pieces."""

from __future__ import annotations

import pytest

from rillet_runtime.loadgen import APIS, Endpoint, LoadPlan, StreamResult, _Body, summarize

SSE = (
    b"event: metadata\ndata: {}\n\n"
    b'event: token\ndata: {"text": "Hel"}\n\n'
    b": heartbeat\n\n"
    b'event: token\r\ndata: {"text": "lo"}\r\n\r\n'
    b"event: done\ndata: {}\n\n"
)


def chunked(payload: bytes, size: int) -> bytes:
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 4096])
@pytest.mark.parametrize("feed_size", [1, 5, 1000])
def test_events_survive_any_chunking_and_any_read_size(chunk_size: int, feed_size: int) -> None:
    body = _Body(chunked=True)
    wire = chunked(SSE, chunk_size)
    events = []
    for i in range(0, len(wire), feed_size):
        events += body.feed(wire[i : i + feed_size])
    assert [name for name, _ in events] == [b"metadata", b"token", b"token", b"done"]
    assert events[2][1] == b'{"text": "lo"}'
    assert body.done


def test_openai_tokens_are_chunks_with_text() -> None:
    api = APIS["openai"]
    role_only = (b"message", b'{"choices":[{"delta":{"role":"assistant","content":""}}]}')
    text = (b"message", b'{"choices":[{"delta":{"content":"Hi"}}]}')
    assert not api.is_token(role_only)
    assert api.is_token(text)
    assert api.is_end((b"message", b"[DONE]"))


def test_summary_counts_errors_and_percentiles() -> None:
    fine = StreamResult(started=0.0, ttft=0.2, gaps=[0.02, 0.02], tokens=3, last_token=0.24)
    failed = StreamResult(started=0.0, error="http_503")
    summary = summarize([fine, failed], wall_seconds=1.0)
    assert (summary["streams"], summary["ok"], summary["errors"]) == (2, 1, {"http_503": 1})
    assert summary["ttft_ms"]["p50"] == pytest.approx(200)
    assert summary["tokens_per_second_per_stream"]["p50"] == pytest.approx(50)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: LoadPlan(0, requests=1), "concurrency"),
        (lambda: LoadPlan(1), "exactly one"),
        (lambda: LoadPlan(1, duration_seconds=1, requests=1), "exactly one"),
        (lambda: Endpoint.parse("ftp://host"), "http"),
    ],
)
def test_bad_plans_are_refused(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]
