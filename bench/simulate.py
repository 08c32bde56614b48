"""A day of chat traffic against three autoscaling policies, in simulation.

Discrete time (1 s steps) with pod starts and removals as events. The pod's behaviour is
not modelled from assumptions but read from a measured curve (`rillet bench` steps
against one real 2-worker pod: TTFT p95 and CPU cores by concurrent streams). What is
assumed, and stated in docs/autoscaling.md: the traffic shape, the pod start time, how
streams spread over pods (at random, as kube-proxy does) and each policy's metric lag.

Policies, each run the way its controller runs:
- `cpu`: an HPA on CPU utilisation (metrics-server: a 30 s average, read every 15 s;
  the HPA's default behavior);
- `concurrency`: Knative's KPA as KServe uses it (concurrency per pod against a target;
  60 s stable and 6 s panic windows, every 2 s; scale-down at most halves);
- `rillet`: the HPA the operator builds for a ChatService (active streams per pod,
  scraped every 15 s, against the streams target; its behavior), with the operator's
  adaptation of that target from observed TTFT, run by the operator's own functions.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Any

import numpy as np

from rillet_operator.autoscaling import (
    ADAPT_SECONDS,
    adapted_target,
    behavior,
    configured_target,
    streams_per_pod_target,
)
from rillet_operator.meta import ChatService

DAY = 86_400
HPA_PERIOD = 15
STATUS_WINDOW_SECONDS = 300  # the operator's Prometheus window (autoscaling.STATUS_WINDOW)


@dataclass(frozen=True)
class PodCurve:
    """Measured: concurrency -> TTFT p95 (ms) and CPU (cores) of one pod."""

    concurrency: np.ndarray
    ttft_p95_ms: np.ndarray
    cores: np.ndarray
    admitted: int  # streams a pod takes before it answers 503

    @classmethod
    def from_steps(cls, steps: Sequence[dict[str, Any]], admitted: int) -> PodCurve:
        ordered = sorted(steps, key=lambda s: s["concurrency"])
        return cls(
            np.array([0.0] + [s["concurrency"] for s in ordered]),
            np.array([ordered[0]["ttft_p95_ms"]] + [s["ttft_p95_ms"] for s in ordered]),
            np.array([0.0] + [s["cores"] for s in ordered]),
            admitted,
        )

    def ttft(self, load: np.ndarray) -> np.ndarray:
        """Interpolated; past the last step, extended along the last segment's slope."""
        c, t = self.concurrency, self.ttft_p95_ms
        slope = (t[-1] - t[-2]) / (c[-1] - c[-2])
        inside = np.interp(load, c, t)
        ttft: np.ndarray = np.where(load > c[-1], t[-1] + (load - c[-1]) * slope, inside)
        return ttft

    def cpu(self, load: np.ndarray) -> np.ndarray:
        cores: np.ndarray = np.interp(load, self.concurrency, self.cores)  # flat: saturated
        return cores

    def capacity(self, ttft_target_ms: float) -> int:
        """What `rillet bench --calibrate` would find: the highest concurrency within target."""
        within = self.concurrency[1:][self.ttft_p95_ms[1:] <= ttft_target_ms]
        return int(within.max()) if within.size else 1


@dataclass(frozen=True)
class Traffic:
    """Concurrent streams per second: two daily humps, bursts, Poisson noise; and the
    per-stream cost (1.0 = the mix the pod curve was measured with)."""

    streams: np.ndarray
    cost: np.ndarray


def day_of_traffic(peak: int = 20_000, shifting_mix: bool = False, seed: int = 7) -> Traffic:
    rng = np.random.default_rng(seed)
    hours = np.arange(DAY) / 3600
    humps = np.exp(-(((hours - 11) / 2.5) ** 2)) + 0.9 * np.exp(-(((hours - 16) / 2.5) ** 2))
    shape = 0.08 + 0.72 * humps / humps.max()
    for start_hour in rng.uniform(7, 20, size=6):  # bursts: +25-60% within 30-90 s
        start = int(start_hour * 3600)
        rise, last = int(rng.uniform(30, 90)), int(rng.uniform(300, 1200))
        height = rng.uniform(0.25, 0.6)
        ramp = np.concatenate([np.linspace(0, 1, rise), np.ones(last), np.linspace(1, 0, 300)])
        end = min(DAY, start + ramp.size)
        shape[start:end] *= 1 + height * ramp[: end - start]
    mean = peak * shape / shape.max()
    streams = rng.poisson(mean).astype(float)
    cost = 1 + 0.25 * np.sin((hours - 9) / 24 * 2 * np.pi) if shifting_mix else np.ones(DAY)
    return Traffic(streams, cost)


# -- the cluster side: pods starting, serving, draining ---------------------------------------


@dataclass
class Pods:
    start_seconds: int
    drain_seconds: int
    starting: deque[int] = field(default_factory=deque)  # ready-at times
    ready: int = 0
    draining: deque[int] = field(default_factory=deque)  # gone-at times

    @property
    def total(self) -> int:
        return self.ready + len(self.starting)

    def tick(self, now: int) -> None:
        while self.starting and self.starting[0] <= now:
            self.starting.popleft()
            self.ready += 1
        while self.draining and self.draining[0] <= now:
            self.draining.popleft()

    def scale_to(self, wanted: int, now: int) -> None:
        for _ in range(wanted - self.total):
            self.starting.append(now + self.start_seconds)
        for _ in range(self.total - wanted):  # starting pods go first, then ready ones drain
            if self.starting:
                self.starting.pop()
            else:
                self.ready -= 1
                self.draining.append(now + self.drain_seconds)

    def billed(self) -> int:
        return self.total + len(self.draining)


# -- policies -----------------------------------------------------------------------------------


@dataclass
class Observed:
    """What a policy may read at time t (each picks its own lag and window)."""

    streams: np.ndarray
    cpu_utilization: np.ndarray  # of ready pods, 1.0 = the CPU request
    ttft_p95_ms: np.ndarray  # across all arrivals of each second
    ready: np.ndarray


@dataclass
class Hpa:
    """The HPA controller's algorithm (pkg/controller/podautoscaler): the highest
    metric proposal, 10% tolerance, a scale-down stabilization window, rate policies."""

    proposals: Callable[[Observed, int, int], list[float]]  # desired counts, unrounded
    down_window: int
    down_percent_per_minute: float | None  # None: the default, 100% per 15 s
    min_replicas: int
    max_replicas: int
    recommendations: deque[tuple[int, int]] = field(default_factory=deque)
    history: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=16))
    period: int = HPA_PERIOD

    def decide(self, seen: Observed, now: int, current: int) -> int:
        ready = max(1, int(seen.ready[now]))
        wanted = [
            current if abs(proposal / ready - 1) <= 0.1 else math.ceil(proposal)
            for proposal in self.proposals(seen, now, ready)
        ]
        desired = min(max(max(wanted), self.min_replicas), self.max_replicas)
        self.recommendations.append((now, desired))
        while self.recommendations[0][0] < now - self.down_window:
            self.recommendations.popleft()
        if desired < current:  # the window's highest recommendation, then the rate
            desired = min(current, max(r for _, r in self.recommendations))
            desired = max(desired, self._down_limit(now, current))
        elif desired > current:
            start = self._replicas_at(now - self.period, current)
            desired = min(desired, max(2 * start, start + 4))
        self.history.append((now, desired))
        return desired

    def _replicas_at(self, when: int, default: int) -> int:
        """The count decided last at or before `when`: a rate policy's period start."""
        for decided_at, replicas in reversed(self.history):
            if decided_at <= when:
                return replicas
        return default

    def _down_limit(self, now: int, current: int) -> int:
        if self.down_percent_per_minute is None:
            return 0
        start = self._replicas_at(now - 60, current)
        return int(start * (1 - self.down_percent_per_minute / 100))


def _window_mean(series: np.ndarray, end: int, seconds: int) -> float:
    return float(series[max(0, end - seconds + 1) : end + 1].mean())


def cpu_policy(target_percent: float, min_replicas: int, max_replicas: int) -> Hpa:
    def proposals(seen: Observed, now: int, ready: int) -> list[float]:
        utilization = _window_mean(seen.cpu_utilization, now, 30)
        return [ready * utilization / (target_percent / 100)]

    return Hpa(proposals, 300, None, min_replicas, max_replicas)


@dataclass
class _Adapting:
    cs: ChatService
    due: int


def rillet_policy(cs: ChatService, adapt_every: int = ADAPT_SECONDS) -> Hpa:
    """The operator's HPA for this ChatService: its streams target and behavior, the TTFT
    metric when scaleOnLatency is set, and the operator's own adaptation of the target
    (rillet_operator.autoscaling.adapted_target, called as the operator calls it)."""
    state = _Adapting(cs, adapt_every)
    spec = cs.spec

    def proposals(seen: Observed, now: int, ready: int) -> list[float]:
        current = state.cs
        if spec.autoscaling.adapt_capacity and now >= state.due:
            state.due = now + adapt_every
            window = slice(max(0, now - STATUS_WINDOW_SECONDS), now + 1)
            ttft = _weighted_quantile(seen.ttft_p95_ms[window], seen.streams[window], 0.95)
            per_pod = float((seen.streams[window] / np.maximum(seen.ready[window], 1)).mean())
            change = adapted_target(current, ttft, per_pod)
            if change:
                state.cs = replace(
                    current, adapted_target=change[0], adapted_from=configured_target(current)
                )
        scraped = now - now % 15  # the gauge as Prometheus last scraped it
        wanted = [seen.streams[scraped] / streams_per_pod_target(state.cs)]
        if spec.autoscaling.scale_on_latency:
            recent = seen.ttft_p95_ms[max(0, now - 119) : now + 1]
            ratio = float(np.percentile(recent, 95)) / spec.latency_targets.ttft_p95_ms
            wanted.append(ready * ratio)
        return wanted

    down = behavior(cs)["scaleDown"]
    return Hpa(
        proposals,
        down["stabilizationWindowSeconds"],
        down["policies"][0]["value"],
        spec.autoscaling.min_replicas,
        spec.autoscaling.max_replicas,
    )


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order] + 1e-9)
    at = int(np.searchsorted(cumulative, q * cumulative[-1]))
    return float(values[order][min(at, values.size - 1)])


def oracle_replica_hours(traffic: Traffic, capacity: float, min_replicas: int) -> float:
    """A lower bound no policy can beat: every second exactly the pods its load needs at
    the calibrated capacity, started instantly, streams spread perfectly evenly."""
    pods = np.maximum(np.ceil(traffic.streams * traffic.cost / capacity), min_replicas)
    return float(pods.sum() / 3600)


@dataclass
class Kpa:
    """Knative's autoscaler (KServe's serverless mode): concurrency against a target."""

    target: float
    min_replicas: int
    max_replicas: int
    panic_until: int = -1
    period: int = 2

    def decide(self, seen: Observed, now: int, current: int) -> int:
        ready = max(1, int(seen.ready[now]))
        seen_until = max(0, now - 1)  # queue-proxies report every second
        stable = math.ceil(_window_mean(seen.streams, seen_until, 60) / self.target)
        panic = math.ceil(_window_mean(seen.streams, seen_until, 6) / self.target)
        if panic / ready >= 2:
            self.panic_until = now + 60
        if now < self.panic_until:
            desired = max(panic, current)
        else:
            desired = max(stable, math.ceil(ready / 2))  # max scale-down rate 2
        return min(max(desired, self.min_replicas), self.max_replicas)


Policy = Hpa | Kpa


# -- the simulation -----------------------------------------------------------------------------

_QUANTILES = np.linspace(0.01, 0.99, 33)
Z = np.array([NormalDist().inv_cdf(q) for q in _QUANTILES])


def second_latency(streams: float, cost: float, ready: int, curve: PodCurve) -> tuple[float, float]:
    """(TTFT p95 across this second's arrivals, share refused). Streams land on pods at
    random, so a pod's load is about Normal(mean, sqrt(mean)): arrivals on busier pods
    are weighed by the load they find there."""
    if ready == 0:
        return math.inf, 1.0
    mean = streams / ready
    loads = np.maximum(0.0, mean + Z * math.sqrt(max(mean, 1e-9)))
    refused = float(np.clip(loads - curve.admitted, 0, None).sum() / max(loads.sum(), 1e-9))
    ttft = curve.ttft(np.minimum(loads, curve.admitted) * cost)
    p95 = _weighted_quantile(ttft, loads, max(0.0, 0.95 - refused))
    return (math.inf if refused > 0.05 else p95), refused


@dataclass(frozen=True)
class Outcome:
    name: str
    replicas: np.ndarray
    ttft_p95_ms_by_minute: np.ndarray
    attainment: float
    replica_hours: float


def simulate(
    name: str,
    policy: Policy,
    traffic: Traffic,
    curve: PodCurve,
    ttft_target_ms: float,
    start_seconds: int = 45,
    drain_seconds: int = 30,
    initial: int | None = None,
) -> Outcome:
    pods = Pods(start_seconds, drain_seconds)
    pods.scale_to(initial or policy.min_replicas, -start_seconds)
    seen = Observed(
        streams=traffic.streams,
        cpu_utilization=np.zeros(DAY),
        ttft_p95_ms=np.zeros(DAY),
        ready=np.zeros(DAY),
    )
    billed = np.zeros(DAY)
    period = policy.period
    for now in range(DAY):
        pods.tick(now)
        seen.ready[now] = pods.ready
        ttft, _ = second_latency(traffic.streams[now], traffic.cost[now], pods.ready, curve)
        seen.ttft_p95_ms[now] = min(ttft, 60_000.0)
        per_pod = traffic.streams[now] / max(pods.ready, 1)
        cores = float(curve.cpu(np.array([per_pod * traffic.cost[now]]))[0])
        seen.cpu_utilization[now] = cores / curve.cores.max()
        if now % period == 0:
            pods.scale_to(policy.decide(seen, now, pods.total), now)
        billed[now] = pods.billed()
    minutes = _minute_p95(seen.ttft_p95_ms, traffic.streams)
    return Outcome(
        name,
        billed,
        minutes,
        attainment=float((minutes <= ttft_target_ms).mean()),
        replica_hours=float(billed.sum() / 3600),
    )


def _minute_p95(per_second: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The minute's p95 over its arrivals, from each second's p95 weighted by arrivals."""
    minutes = zip(per_second.reshape(-1, 60), weights.reshape(-1, 60), strict=True)
    return np.array([_weighted_quantile(values, weight, 0.95) for values, weight in minutes])
