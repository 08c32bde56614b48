"""ChatService spec -> the runtime's settings file and the environment that carries secrets.

The file goes into a ConfigMap and holds no secret: API keys and Redis URLs with
passwords arrive as environment variables from Secrets (`valueFrom.secretKeyRef`).
"""

from __future__ import annotations

from typing import Any

from rillet_operator.spec import ChatServiceSpec, ProviderSpec, SecretKeyRef

SETTINGS_DIR = "/etc/rillet"
SETTINGS_FILE = f"{SETTINGS_DIR}/settings.yaml"
SCRATCH_DIR = "/tmp"  # an emptyDir: the root filesystem is read-only
DRAIN_FILE = f"{SCRATCH_DIR}/rillet/draining"
BUILT_IN_INDEX = "/opt/rillet/index"  # Rillet's docs, ingested when the image is built
CLAIMED_INDEX = "/var/lib/rillet/index"  # vectorIndex.embedded.claimName, read-only
PORT = 8000
DRAIN_SECONDS = 5
EXTRACTIVE_MODEL = "rillet-extractive"


def _provider(spec: ProviderSpec) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "provider": spec.provider,
        "name": spec.name or EXTRACTIVE_MODEL,
        "max_tokens": spec.max_tokens,
        "timeout_seconds": spec.timeout_seconds,
    }
    if spec.base_url:
        settings["base_url"] = spec.base_url
    return settings


def runtime_settings(spec: ChatServiceSpec) -> dict[str, Any]:
    """The settings file's content (`rillet_runtime.settings.Settings`, minus secrets)."""
    model = _provider(spec.model)
    if spec.model.fallback:
        model["fallback"] = _provider(spec.model.fallback)
    settings: dict[str, Any] = {
        "server": {
            "host": "0.0.0.0",
            "port": PORT,
            "workers": spec.server.workers_per_pod,
            "max_streams_per_worker": spec.server.max_concurrent_streams_per_worker,
            "max_stream_seconds": spec.server.max_stream_seconds,
            "drain_seconds": DRAIN_SECONDS,
            "drain_file": DRAIN_FILE,
            "metrics_dir": f"{SCRATCH_DIR}/rillet-metrics",
        },
        "streaming": {
            "coalesce_max_chars": spec.streaming.coalesce_max_chars,
            "coalesce_max_ms": spec.streaming.coalesce_max_ms,
            "heartbeat_seconds": spec.streaming.heartbeat_seconds,
            "resumable": spec.streaming.resumable,
        },
        "model": model,
        "retrieval": _retrieval(spec),
        "embeddings": spec.embeddings.model_dump(exclude={"api_key_secret_ref"}, exclude_none=True),
        "state": {"checkpointer": "memory"},
    }
    if spec.graph.ref:
        settings["graph"] = spec.graph.ref
    if spec.redis:
        settings["state"] = {
            "checkpointer": "redis",
            "redis_cluster": bool(spec.redis.external and spec.redis.external.cluster),
            "checkpoint_ttl_seconds": spec.redis.checkpoint_ttl_seconds,
            "compress_min_bytes": spec.redis.compress_min_bytes,
        }
    return settings


def _retrieval(spec: ChatServiceSpec) -> dict[str, Any]:
    index = spec.vector_index
    settings: dict[str, Any] = {
        "provider": index.provider,
        "k": index.k,
        "score_threshold": index.score_threshold,
        "hnsw": index.hnsw.model_dump(),
    }
    if index.provider == "embedded":
        path = CLAIMED_INDEX if index.embedded.claim_name else BUILT_IN_INDEX
        settings["embedded"] = {"path": path}
    if index.hybrid is not None:
        settings["hybrid"] = index.hybrid
    remote = {"pinecone": index.pinecone, "qdrant": index.qdrant, "chroma": index.chroma}
    if index.provider in remote and (chosen := remote[index.provider]) is not None:
        settings[index.provider] = chosen.model_dump(exclude={"api_key_secret_ref"})
    return settings


def _from_secret(name: str, ref: SecretKeyRef) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def redis_service_name(name: str) -> str:
    return f"{name}-redis"


def secret_env(name: str, spec: ChatServiceSpec) -> list[dict[str, Any]]:
    """Environment variables for secrets; order matters: $(VAR) needs VAR defined first."""
    env: list[dict[str, Any]] = []
    if spec.model.api_key_secret_ref:
        env.append(_from_secret("RILLET_MODEL__API_KEY", spec.model.api_key_secret_ref))
    fallback = spec.model.fallback
    if fallback and fallback.api_key_secret_ref:
        env.append(_from_secret("RILLET_MODEL__FALLBACK__API_KEY", fallback.api_key_secret_ref))
    if spec.embeddings.api_key_secret_ref:
        env.append(_from_secret("RILLET_EMBEDDINGS__API_KEY", spec.embeddings.api_key_secret_ref))
    index = spec.vector_index
    if index.provider == "pinecone" and index.pinecone:
        env.append(
            _from_secret("RILLET_RETRIEVAL__PINECONE__API_KEY", index.pinecone.api_key_secret_ref)
        )
    if index.provider == "qdrant" and index.qdrant and index.qdrant.api_key_secret_ref:
        env.append(
            _from_secret("RILLET_RETRIEVAL__QDRANT__API_KEY", index.qdrant.api_key_secret_ref)
        )
    redis = spec.redis
    if redis and redis.managed:
        env.append(
            _from_secret(
                "REDIS_PASSWORD", SecretKeyRef(name=redis_service_name(name), key="password")
            )
        )
        url = f"redis://:$(REDIS_PASSWORD)@{redis_service_name(name)}:6379/0"
        env.append({"name": "RILLET_STATE__REDIS_URL", "value": url})
    elif redis and redis.external and redis.external.url_secret_ref:
        env.append(_from_secret("RILLET_STATE__REDIS_URL", redis.external.url_secret_ref))
    elif redis and redis.external and redis.external.url:
        env.append({"name": "RILLET_STATE__REDIS_URL", "value": redis.external.url})
    return env
