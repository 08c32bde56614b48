"""What authentication and per-principal limits cost a stream, side by side in one run.

Three `rillet serve` processes (one worker each, the built-in graph, one redis-server, the
fake model at 200 ms to the first token and 20 ms between tokens):

- none: `auth.mode: none`, no limits: the baseline;
- api_keys: API keys from a folder, limits on (streams, requests and tokens per minute, all
  far above the load, so every admission runs the Lua script and every end charges tokens);
- jwt: RS256 JWTs checked against a public key, the same limits.

Rounds alternate the order; each round sends one wave of `--streams` streams (one per
client, all at once) to each server. Reported per server: TTFT p50/p99 and inter-token p99
(medians over the rounds), what each adds to `none`'s, and server CPU seconds per 1,000
model tokens with its ratio to `none`'s.

Then, in this process against the same redis-server, the admission path alone, timed per
stream start over `--admissions` starts in each mode: authenticate, admit under the limits,
claim and release the thread's lease, release the stream (charging tokens). A p99 of a
50-stream wave moves by tens of milliseconds from round to round on a shared 2-core
machine; this part resolves what each mode adds in microseconds.

    python -m bench.auth --out bench-results [--streams 50 --rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import jwt
import redis.asyncio as aredis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.datastructures import Headers

from bench.streaming import Server, started, wave
from rillet_runtime import loadgen
from rillet_runtime.auth import Anonymous, ApiKeys, Authenticator, JwtBearer, read_api_keys
from rillet_runtime.settings import ApiKeysSettings, JwtSettings, LimitsSettings
from rillet_runtime.state.limits import RedisLimiter
from rillet_runtime.state.runs import RedisRunRegistry
from tests.support.keys import api_key_settings, write_api_keys
from tests.support.processes import RedisServer, free_port

TTFT_MS, TOKEN_DELAY_MS, ANSWER_TOKENS = 200, 20, 50
LIMITS = {
    "RILLET_LIMITS__CONCURRENT_STREAMS": "100000",
    "RILLET_LIMITS__REQUESTS_PER_MINUTE": "1000000",
    "RILLET_LIMITS__TOKENS_PER_MINUTE": "1000000000",
}


def _rsa_pair() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(65537, 2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public.decode()


def _env(port: int, workdir: Path, redis_url: str, fake_url: str, **extra: str) -> dict[str, str]:
    return {
        "RILLET_SERVER__PORT": str(port),
        "RILLET_SERVER__WORKERS": "1",
        "RILLET_SERVER__METRICS_PORT": str(free_port()),
        "RILLET_SERVER__METRICS_DIR": str(workdir / f"metrics-{port}"),
        "RILLET_MODEL__PROVIDER": "openai",
        "RILLET_MODEL__NAME": "fake",
        "RILLET_MODEL__BASE_URL": f"{fake_url}/v1",
        "RILLET_STATE__CHECKPOINTER": "redis",
        "RILLET_STATE__REDIS_URL": redis_url,
        **extra,
    }


def fake_model(stack: ExitStack, workdir: Path) -> str:
    """The fake model at TTFT_MS to the first token, TOKEN_DELAY_MS between tokens; its URL."""
    port = free_port()
    command = [
        "rillet", "fake-llm", "--port", str(port), "--ttft-ms", str(TTFT_MS),
        "--token-delay-ms", str(TOKEN_DELAY_MS), "--answer-tokens", str(ANSWER_TOKENS),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    stack.enter_context(started(command, {}, f"{url}/_fake/stats", workdir / "fake.log"))
    return url


def serve(
    stack: ExitStack,
    workdir: Path,
    name: str,
    redis_url: str,
    fake_url: str,
    api_key: str | None = None,
    **extra: str,
) -> Server:
    """`rillet serve`, one worker, on that Redis and the fake model, until `stack` closes."""
    port = free_port()
    env = _env(port, workdir, redis_url, fake_url, **extra)
    url = f"http://127.0.0.1:{port}"
    log = workdir / f"serve-{port}.log"
    proc = stack.enter_context(started(["rillet", "serve"], env, f"{url}/readyz", log))
    return Server(name, url, loadgen.APIS["rillet"], "rillet", proc, api_key)


def median_of(rows: list[dict[str, Any]], *path: str) -> float | None:
    values = []
    for row in rows:
        value: Any = row
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            values.append(float(value))
    return statistics.median(values) if values else None


def summarize(waves: list[dict[str, Any]], baseline: str = "none") -> dict[str, Any]:
    by_server: dict[str, list[dict[str, Any]]] = {}
    for row in waves:
        by_server.setdefault(row["server"], []).append(row)
    table: dict[str, dict[str, Any]] = {}
    for name, rows in by_server.items():
        table[name] = {
            "ok": sum(r["ok"] for r in rows),
            "streams": sum(r["concurrency"] for r in rows),
            "ttft_p50_ms": median_of(rows, "ttft_ms", "p50"),
            "ttft_p99_ms": median_of(rows, "ttft_ms", "p99"),
            "inter_token_p99_ms": median_of(rows, "inter_token_ms", "p99"),
            "cpu_seconds_per_1000_tokens": median_of(rows, "cpu_seconds_per_1000_tokens"),
        }
    base = table[baseline]
    for row in table.values():
        for key in ("ttft_p50_ms", "ttft_p99_ms", "inter_token_p99_ms"):
            if row[key] is not None and base[key] is not None:
                row[f"added_{key}"] = round(row[key] - base[key], 2)
        if row["cpu_seconds_per_1000_tokens"] and base["cpu_seconds_per_1000_tokens"]:
            row["cpu_ratio"] = round(
                row["cpu_seconds_per_1000_tokens"] / base["cpu_seconds_per_1000_tokens"], 3
            )
    return table


async def admission_costs(
    redis_url: str, keys: Path, pem: str, token: str, n: int
) -> dict[str, Any]:
    """Microseconds per stream start in each mode: p50, p99, and p50 added to `none`'s."""
    client = aredis.Redis.from_url(redis_url)
    limits = LimitsSettings(
        concurrent_streams=100_000, requests_per_minute=10**9, tokens_per_minute=10**12
    )
    registry = RedisRunRegistry(client, record_ms=600_000)
    async with httpx.AsyncClient() as http:
        modes: dict[str, tuple[Authenticator, Any, str | None]] = {
            "none": (Anonymous(), RedisLimiter(client, LimitsSettings(), 10_000), None),
            "api_keys": (
                ApiKeys(ApiKeysSettings(path=keys), read_api_keys(keys)),
                RedisLimiter(client, limits, 10_000),
                "bench-key-0123456789",
            ),
            "jwt": (
                JwtBearer(JwtSettings(audience="bench", public_key=pem), http),
                RedisLimiter(client, limits, 10_000),
                token,
            ),
        }
        timings: dict[str, list[float]] = {name: [] for name in modes}
        for i in range(n):
            for name, (authenticator, limiter, credential) in modes.items():
                headers = Headers({"authorization": f"Bearer {credential}"} if credential else {})
                run_id, started = f"{name}-{i}", time.perf_counter()
                principal = await authenticator.authenticate(headers)
                assert await limiter.admit(principal.key, run_id) is None
                assert await registry.claim(f"{principal.key}/t{i}", run_id, principal.key)
                await registry.release(f"{principal.key}/t{i}", run_id)
                await limiter.release(principal.key, run_id, 60)
                timings[name].append((time.perf_counter() - started) * 1e6)
    await client.aclose()
    result = {name: loadgen.percentiles(values, scale=1.0) for name, values in timings.items()}
    base = result["none"]["p50"] or 0.0
    for row in result.values():
        row["added_p50_us"] = round((row["p50"] or 0.0) - base, 1)
    return {"starts_per_mode": n, "microseconds": result}


async def run(servers: list[Server], streams: int, rounds: int) -> list[dict[str, Any]]:
    waves = []
    for round_index in range(rounds):
        order = servers[round_index % len(servers) :] + servers[: round_index % len(servers)]
        for server in order:
            row = await wave(server, streams, ANSWER_TOKENS)
            waves.append({**row, "round": round_index})
            print(
                f"round {round_index} {server.name:9} ok {row['ok']}/{streams} "
                f"ttft p99 {row['ttft_ms']['p99']} ms cpu/1k "
                f"{row['cpu_seconds_per_1000_tokens']:.3f} s",
                flush=True,
            )
    return waves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--admissions", type=int, default=5000)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="rillet-bench-auth-"))
    private_key, public_pem = _rsa_pair()
    token = jwt.encode(
        {"sub": "bench", "aud": "bench", "exp": int(time.time()) + 3600},
        private_key,
        algorithm="RS256",
    )
    keys = write_api_keys(workdir / "keys", {"bench": "bench-key-0123456789"})
    redis = RedisServer(workdir / "redis")
    redis.start()
    modes: dict[str, tuple[dict[str, str], str | None]] = {
        "none": ({}, None),
        "api_keys": (
            {f"RILLET_{k.upper()}": v for k, v in api_key_settings(keys).items()} | LIMITS,
            "bench-key-0123456789",
        ),
        "jwt": (
            {
                "RILLET_AUTH__MODE": "jwt",
                "RILLET_AUTH__JWT__AUDIENCE": "bench",
                "RILLET_AUTH__JWT__PUBLIC_KEY": public_pem,
            }
            | LIMITS,
            token,
        ),
    }
    try:
        with ExitStack() as stack:
            fake_url = fake_model(stack, workdir)
            servers = [
                serve(stack, workdir, name, redis.url, fake_url, api_key, **extra)
                for name, (extra, api_key) in modes.items()
            ]
            waves = asyncio.run(run(servers, args.streams, args.rounds))
        admission = asyncio.run(
            admission_costs(redis.url, keys, public_pem, token, args.admissions)
        )
    finally:
        redis.kill()
    result = {"streams": args.streams, "rounds": args.rounds, "waves": waves}
    result["summary"] = summarize(waves)
    result["admission"] = admission
    print("admission path, microseconds per stream start:", json.dumps(admission["microseconds"]))
    (args.out / "auth.json").write_text(json.dumps(result, indent=2))
    for name, row in result["summary"].items():
        print(name, json.dumps(row))


if __name__ == "__main__":
    main()
