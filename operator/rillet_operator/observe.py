"""Side effect: read every ChatService's observed latency from Prometheus' HTTP API.

Three instant queries per round (TTFT p95, inter-token p95, streams per pod) cover all
ChatServices, grouped by namespace and chatservice (the labels the chart's PodMonitor
sets), so the cost does not grow with the number of ChatServices."""

from __future__ import annotations

import math
from typing import Any

import httpx

from rillet_operator.autoscaling import (
    STATUS_WINDOW,
    inter_token_p95_query,
    streams_per_pod_query,
    ttft_p95_query,
)
from rillet_operator.status import LatencyReading

Key = tuple[str, str]
GROUP_BY = "namespace, chatservice"
SELECTOR = 'chatservice!=""'


def _by_chat_service(payload: dict[str, Any], scale: float = 1000.0) -> dict[Key, float]:
    if payload.get("status") != "success":
        raise ValueError(payload.get("error") or "Prometheus answered without success")
    found: dict[Key, float] = {}
    for sample in payload["data"]["result"]:
        labels, (_, value) = sample["metric"], sample["value"]
        number = float(value)
        if math.isfinite(number):  # NaN: buckets exist but no stream in the window
            found[labels.get("namespace", ""), labels.get("chatservice", "")] = number * scale
    return found


def readings(
    ttft: dict[Key, float], inter_token: dict[Key, float], streams: dict[Key, float]
) -> dict[Key, LatencyReading]:
    return {
        key: LatencyReading(
            ttft_p95_ms=ttft.get(key),
            inter_token_p95_ms=inter_token.get(key),
            streams_per_pod=streams.get(key),
        )
        for key in ttft.keys() | inter_token.keys()
    }


class PrometheusReader:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url
        self._http = httpx.AsyncClient(base_url=url, timeout=timeout)

    async def _query(self, promql: str, scale: float = 1000.0) -> dict[Key, float]:
        response = await self._http.get("/api/v1/query", params={"query": promql})
        if response.status_code >= 500:
            response.raise_for_status()
        return _by_chat_service(response.json(), scale)

    async def latency(self) -> dict[Key, LatencyReading]:
        """Every ChatService with samples in the window; raises when Prometheus cannot answer."""
        ttft = await self._query(ttft_p95_query(SELECTOR, STATUS_WINDOW, GROUP_BY))
        inter_token = await self._query(inter_token_p95_query(SELECTOR, STATUS_WINDOW, GROUP_BY))
        streams = await self._query(streams_per_pod_query(SELECTOR, STATUS_WINDOW, GROUP_BY), 1)
        return readings(ttft, inter_token, streams)

    async def aclose(self) -> None:
        await self._http.aclose()
