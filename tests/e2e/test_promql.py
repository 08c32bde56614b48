"""Every PromQL query Rillet writes parses with Prometheus' own parser (promql/parser from
github.com/prometheus/prometheus v0.316.0, built into the test control plane's cache):
the operator's status queries, the KEDA triggers, and the chart's prometheus-adapter
rules with their template placeholders filled in as prometheus-adapter fills them."""

from __future__ import annotations

from pathlib import Path

import yaml

from rillet_operator.autoscaling import (
    STATUS_WINDOW,
    inter_token_p95_query,
    scaled_object,
    streams_per_pod_query,
    ttft_p95_query,
)
from rillet_operator.meta import ChatService
from rillet_operator.observe import GROUP_BY, SELECTOR
from rillet_operator.spec import ChatServiceSpec
from tests.support.promql import parse_errors

ROOT = Path(__file__).resolve().parents[2]
ADAPTER_RULES = ROOT / "charts" / "rillet" / "templates" / "prometheus-adapter-rules.yaml"


def adapter_queries() -> list[str]:
    """The rules' metricsQuery, filled in as prometheus-adapter does for a Pods metric."""
    template = ADAPTER_RULES.read_text()
    body = template.split("config.yaml: |", 1)[1].split("{{- end }}", 1)[0]
    rules = yaml.safe_load(body.replace("\n    ", "\n"))["rules"]
    queries = []
    for rule in rules:
        series = rule["seriesQuery"].split("{", 1)[0]
        queries.append(
            rule["metricsQuery"]
            .replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", 'namespace="chat",pod=~"demo-a|demo-b"')
            .replace("<<.GroupBy>>", "pod")
        )
        queries.append(rule["seriesQuery"])
    return queries


def test_every_query_parses() -> None:
    spec = ChatServiceSpec.model_validate({"autoscaling": {"scaleOnLatency": True}})
    cs = ChatService("demo", "chat", "uid", spec)
    keda = [t["metadata"]["query"] for t in scaled_object(cs, "http://p:9090")["spec"]["triggers"]]
    queries = [
        ttft_p95_query(SELECTOR, STATUS_WINDOW, GROUP_BY),
        inter_token_p95_query(SELECTOR, STATUS_WINDOW, GROUP_BY),
        streams_per_pod_query(SELECTOR, STATUS_WINDOW, GROUP_BY),
        *keda,
        *adapter_queries(),
    ]
    assert len(queries) == 9
    assert parse_errors(queries) == {}


def test_the_checker_rejects_what_prometheus_rejects() -> None:
    broken = "histogram_quantile(0.95, sum by (le) (rate(x_bucket[2m]))"
    assert broken in parse_errors([broken, "sum(x)"])
