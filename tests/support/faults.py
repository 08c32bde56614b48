"""What the fault tests share: a client that records what it saw of one request (status,
every SSE event, the error that cut it) and may act mid-stream, the worker processes of a
`rillet serve`, and a thread read back."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
from httpx_sse import connect_sse

Event = tuple[int, str, dict[str, Any]]  # id, name, data


@dataclass
class Seen:
    """One request as its client saw it: the status, a refusal's body, a stream's events in
    order and, if the connection broke before a terminal event, why."""

    status: int = 0
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    cut: str | None = None
    client_port: int = 0  # the client's end of the connection, to find the worker serving it

    @property
    def names(self) -> list[str]:
        return [name for _, name, _ in self.events]

    @property
    def last(self) -> tuple[str, dict[str, Any]]:
        _, name, data = self.events[-1]
        return name, data

    @property
    def text(self) -> str:
        return "".join(str(data["text"]) for _, name, data in self.events if name == "token")

    @property
    def run_id(self) -> str:
        return str(self.events[0][2]["run_id"])

    @property
    def last_id(self) -> int:
        return self.events[-1][0]

    @property
    def saved(self) -> bool:
        """Ended with `done` and said its turn is in the thread."""
        if not self.events:
            return False
        name, data = self.last
        return name == "done" and data["state_saved"] is True


def stream(
    url: str,
    body: dict[str, Any] | None = None,
    *,
    method: str = "POST",
    path: str = "/v1/chat/stream",
    headers: dict[str, str] | None = None,
    on_event: Callable[[Seen], bool | None] | None = None,
    timeout: float = 60,
) -> Seen:
    """One request, recorded; `on_event` runs after each event (the fault goes in there) and
    cuts the connection by returning True. A broken connection is recorded, not raised."""
    seen = Seen()
    with httpx.Client(timeout=timeout) as client:
        try:
            with connect_sse(
                client, method, url + path, json=body, headers=dict(headers or {})
            ) as source:
                response = source.response
                seen.status = response.status_code
                seen.headers = dict(response.headers)
                stream_info = response.extensions.get("network_stream")
                if stream_info is not None:
                    seen.client_port = stream_info.get_extra_info("client_addr")[1]
                if response.status_code != 200:
                    response.read()
                    seen.body = response.json()
                    return seen
                for sse in source.iter_sse():
                    seen.events.append((int(sse.id), sse.event, json.loads(sse.data)))
                    if on_event is not None and on_event(seen):
                        break
        except httpx.TransportError as exc:
            seen.cut = f"{type(exc).__name__}: {exc}"
    return seen


def worker_pids(master_pid: int) -> set[int]:
    return {child.pid for child in psutil.Process(master_pid).children()}


def worker_serving(master_pid: int, client_port: int) -> int:
    """The gunicorn worker holding the connection that the client opened from `client_port`."""
    for child in psutil.Process(master_pid).children():
        if any(c.raddr and c.raddr.port == client_port for c in child.net_connections("tcp")):
            pid: int = child.pid
            return pid
    raise AssertionError(f"no worker of {master_pid} holds a connection from :{client_port}")


def ask(
    url: str,
    message: str,
    thread_id: str | None = None,
    *,
    on_event: Callable[[Seen], bool | None] | None = None,
    timeout: float = 60,
    **fields: str,
) -> Seen:
    """One message to `POST /v1/chat/stream`, recorded; `fields` go in the body as they are."""
    body = {"message": message, **({"thread_id": thread_id} if thread_id else {}), **fields}
    return stream(url, body, on_event=on_event, timeout=timeout)


def read_thread(url: str, thread_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"{url}/v1/threads/{thread_id}", headers=headers, timeout=30)


def stored_turns(url: str, thread_id: str) -> list[tuple[str, str]]:
    """The thread's turns as read back; none when it was never saved."""
    response = read_thread(url, thread_id)
    if response.status_code == 404:
        return []
    response.raise_for_status()
    return turns(response.json()["messages"])


def turns(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """A thread's messages as (question, answer) pairs; fails on a question left without its
    answer or an answer without its question (a half-written turn)."""
    roles = [m["role"] for m in messages]
    assert roles == ["user", "assistant"] * (len(roles) // 2), f"not whole turns: {roles}"
    return [
        (messages[i]["content"], messages[i + 1]["content"]) for i in range(0, len(messages), 2)
    ]
