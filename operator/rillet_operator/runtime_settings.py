"""ChatService spec -> the runtime's own settings, the file that carries them, and the
environment that carries secrets.

The settings are built from `rillet_runtime.settings`' models, so a setting the runtime
renames or drops breaks this build (mypy, pydantic), and the runtime's validators see the
pod's settings before any pod does. The file holds only what the ChatService decides (the
runtime's defaults fill the rest) and never a secret: API keys and Redis URLs with
passwords reach the pod as environment variables from Secrets (`secret_env`); here they
are a placeholder, left out of the file.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from rillet_operator.spec import (
    AuthSpec,
    ChatServiceSpec,
    CorsSpec,
    ExternalRedisSpec,
    LimitsSpec,
    ModelSpec,
    ProviderSpec,
    RedisSentinelSpec,
    SecretKeyRef,
    VectorIndexSpec,
)
from rillet_runtime.settings import (
    EXTRACTIVE_MODEL,
    ApiKeysSettings,
    AuthSettings,
    ChromaSettings,
    CorsSettings,
    EmbeddedIndexSettings,
    EmbeddingSettings,
    HnswSettings,
    JwtSettings,
    LimitsSettings,
    ModelSettings,
    PineconeSettings,
    ProviderSettings,
    QdrantSettings,
    RedisSentinelSettings,
    RetrievalSettings,
    ServerSettings,
    Settings,
    StateSettings,
    StreamingSettings,
)

SETTINGS_DIR = "/etc/rillet"
SETTINGS_FILE = f"{SETTINGS_DIR}/settings.yaml"
SCRATCH_DIR = "/tmp"  # an emptyDir: the root filesystem is read-only
DRAIN_FILE = f"{SCRATCH_DIR}/rillet/draining"
BUILT_IN_INDEX = "/opt/rillet/index"  # Rillet's docs, ingested when the image is built
CLAIMED_INDEX = "/var/lib/rillet/index"  # vectorIndex.embedded.claimName, read-only
PORT = 8000
METRICS_PORT = 9090  # gunicorn's master serves /metrics here, apart from the API's port
DRAIN_SECONDS = 5
GRACE_MARGIN_SECONDS = 5  # between gunicorn's last word and the kubelet's SIGKILL
REDIS_PORT = 6379  # the managed Redis: its container, its Service and the URL pods use
# The API keys Secret, mounted whole (never by subPath, which the kubelet does not update),
# so an edited key reaches the pods within the kubelet's sync period, without a restart.
API_KEYS_DIR = "/var/run/rillet/api-keys"
FIRST_KEY_PRINCIPAL = "default"  # the one principal of the Secret the operator creates
FROM_ENV = SecretStr("from the pod's environment")  # placeholder; `secret_env` has the value


class _DeclaredSettings(Settings):
    """The runtime's Settings from arguments alone: the operator's own environment (its
    RILLET_* variables, a RILLET_SETTINGS_FILE) must not leak into a pod's settings."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _from_env(ref: SecretKeyRef | None) -> SecretStr | None:
    return FROM_ENV if ref else None


def runtime_settings(spec: ChatServiceSpec) -> Settings:
    """The pod's effective settings, secrets as placeholders (the file leaves them out)."""
    graph: dict[str, Any] = {"graph": spec.graph.ref}
    if spec.graph.id:  # else left out: the runtime's default
        graph["graph_id"] = spec.graph.id
    return _DeclaredSettings(
        **graph,
        server=ServerSettings(
            host="0.0.0.0",
            port=PORT,
            metrics_port=METRICS_PORT,
            workers=spec.server.workers_per_pod,
            max_streams_per_worker=spec.server.max_concurrent_streams_per_worker,
            max_event_loop_lag_ms=spec.server.max_event_loop_lag_ms,
            max_stream_seconds=spec.server.max_stream_seconds,
            drain_seconds=DRAIN_SECONDS,
            drain_file=DRAIN_FILE,
            metrics_dir=f"{SCRATCH_DIR}/rillet-metrics",
            **_cors(spec.api.cors),
        ),
        streaming=StreamingSettings(
            coalesce_max_chars=spec.streaming.coalesce_max_chars,
            coalesce_max_ms=spec.streaming.coalesce_max_ms,
            heartbeat_seconds=spec.streaming.heartbeat_seconds,
            resumable=spec.streaming.resumable,
        ),
        model=_model(spec.model),
        retrieval=_retrieval(spec.vector_index),
        embeddings=EmbeddingSettings(
            provider=spec.embeddings.provider,
            model=spec.embeddings.model,
            base_url=spec.embeddings.base_url,
            dimensions=spec.embeddings.dimensions,
            api_key=_from_env(spec.embeddings.api_key_secret_ref),
        ),
        state=_state(spec),
        auth=_auth(spec.auth),
        limits=_limits(spec.limits),
    )


def settings_file(settings: Settings) -> dict[str, Any]:
    """What the ChatService decided, as the file's mapping: no defaults, no secrets, no
    section left empty by them."""
    dumped = settings.model_dump(
        mode="json", exclude_unset=True, exclude_none=True, exclude=_secrets(settings)
    )
    return {name: value for name, value in dumped.items() if value != {}}


def _secrets(model: BaseModel) -> dict[str, Any]:
    """pydantic's `exclude` for every secret field, however deep, so none reaches the file."""
    exclude: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            exclude[name] = True
        elif isinstance(value, BaseModel) and (inner := _secrets(value)):
            exclude[name] = inner
    return exclude


def termination_grace_seconds(server: ServerSettings) -> int:
    """The preStop drain, then gunicorn's graceful timeout (the runtime's own derivation from
    the longest stream), then a margin, so Kubernetes never kills a stream allowed to run."""
    return math.ceil(server.drain_seconds + server.graceful_timeout_seconds + GRACE_MARGIN_SECONDS)


def _provider(spec: ProviderSpec) -> ProviderSettings:
    return ProviderSettings(
        provider=spec.provider,
        name=spec.name or EXTRACTIVE_MODEL,
        base_url=spec.base_url,
        api_key=_from_env(spec.api_key_secret_ref),
        max_tokens=spec.max_tokens,
        timeout_seconds=spec.timeout_seconds,
    )


def _model(spec: ModelSpec) -> ModelSettings:
    primary = _provider(spec).model_dump(exclude_unset=True)
    return ModelSettings(**primary, fallback=_provider(spec.fallback) if spec.fallback else None)


def _retrieval(index: VectorIndexSpec) -> RetrievalSettings:
    return RetrievalSettings(
        **_index_location(index),
        provider=index.provider,
        k=index.k,
        score_threshold=index.score_threshold,
        hybrid=index.hybrid,
        hnsw=HnswSettings(
            m=index.hnsw.m,
            ef_construction=index.hnsw.ef_construction,
            ef_search=index.hnsw.ef_search,
        ),
    )


def _index_location(index: VectorIndexSpec) -> dict[str, BaseModel]:
    """The chosen provider's section, keyed by its name; the other providers' stay unset."""
    if index.provider == "embedded":
        path = CLAIMED_INDEX if index.embedded.claim_name else BUILT_IN_INDEX
        return {"embedded": EmbeddedIndexSettings(path=path)}
    if index.provider == "pinecone" and (pinecone := index.pinecone):
        api_key = _from_env(pinecone.api_key_secret_ref)
        return {
            "pinecone": PineconeSettings(
                host=pinecone.host, namespace=pinecone.namespace, api_key=api_key
            )
        }
    if index.provider == "qdrant" and (qdrant := index.qdrant):
        api_key = _from_env(qdrant.api_key_secret_ref)
        return {
            "qdrant": QdrantSettings(url=qdrant.url, collection=qdrant.collection, api_key=api_key)
        }
    if index.provider == "chroma" and (chroma := index.chroma):
        return {"chroma": ChromaSettings(url=chroma.url, collection=chroma.collection)}
    return {}  # the runtime's validator names the missing section


def _auth(auth: AuthSpec) -> AuthSettings:
    if auth.mode == "apiKeys":
        return AuthSettings(mode="api_keys", api_keys=ApiKeysSettings(path=API_KEYS_DIR))
    if auth.mode == "jwt" and (jwt := auth.jwt):
        return AuthSettings(
            mode="jwt",
            jwt=JwtSettings(
                issuer=jwt.issuer,
                audience=jwt.audience,
                jwks_url=jwt.jwks_url,
                public_key=jwt.public_key,
                algorithms=list(jwt.algorithms),
                principal_claim=jwt.principal_claim,
            ),
        )
    if auth.mode == "trustedHeader":
        header = auth.trusted_header
        return AuthSettings(
            mode="trusted_header", **({"trusted_header": header.header} if header else {})
        )
    if auth.mode == "none":
        # The pods listen on every address: the runtime refuses `none` there unless told
        # that it is meant, and a ChatService that says `none` means it.
        return AuthSettings(mode="none", allow_unauthenticated=True)
    return AuthSettings(mode="jwt")  # jwt without its section: the runtime's validator names it


def _cors(cors: CorsSpec) -> dict[str, CorsSettings]:
    """`server.cors` when origins are listed; else left out, as the runtime's default is off."""
    if not cors.allow_origins:
        return {}
    headers = {
        name: list(value)
        for name, value in (
            ("allow_headers", cors.allow_headers),
            ("expose_headers", cors.expose_headers),
        )
        if value is not None
    }
    return {
        "cors": CorsSettings(
            allow_origins=list(cors.allow_origins),
            allow_credentials=cors.allow_credentials,
            max_age_seconds=cors.max_age_seconds,
            **headers,
        )
    }


def _limits(limits: LimitsSpec) -> LimitsSettings:
    return LimitsSettings(
        concurrent_streams=limits.concurrent_streams,
        requests_per_minute=limits.requests_per_minute,
        tokens_per_minute=limits.tokens_per_minute,
    )


def first_key_secret_name(name: str) -> str:
    return f"{name}-api-keys"


def api_keys_secret(name: str, spec: ChatServiceSpec) -> str | None:
    """The Secret the pods read their API keys from: the one the spec names, else the one
    the operator creates; None when the ChatService does not use API keys."""
    if spec.auth.mode != "apiKeys":
        return None
    named = spec.auth.api_keys.secret_name if spec.auth.api_keys else None
    return named or first_key_secret_name(name)


def _state(spec: ChatServiceSpec) -> StateSettings:
    redis = spec.redis
    bounds = {
        "keep_checkpoints": spec.state.keep_checkpoints,
        "max_thread_bytes": spec.state.max_thread_bytes,
    }
    if redis is None:
        return StateSettings(checkpointer="memory", **bounds)
    external = redis.external
    sentinel = external.sentinel if external else None
    return StateSettings(
        checkpointer="redis",
        redis_url=FROM_ENV if redis.managed or (external and _has_url(external)) else None,
        redis_cluster=bool(external and external.cluster),
        redis_sentinel=_sentinel(sentinel) if sentinel else None,
        checkpoint_ttl_seconds=redis.checkpoint_ttl_seconds,
        compress_min_bytes=redis.compress_min_bytes,
        **bounds,
    )


def _has_url(external: ExternalRedisSpec) -> bool:
    """A Sentinel set may do without: its master then has no password, database 0, no TLS."""
    return bool(external.url or external.url_secret_ref)


def _sentinel(sentinel: RedisSentinelSpec) -> RedisSentinelSettings:
    return RedisSentinelSettings(
        master_name=sentinel.master_name,
        addresses=list(sentinel.addresses),
        password=_from_env(sentinel.password_secret_ref),
        failover_seconds=sentinel.failover_seconds,
    )


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
        url = f"redis://:$(REDIS_PASSWORD)@{redis_service_name(name)}:{REDIS_PORT}/0"
        env.append({"name": "RILLET_STATE__REDIS_URL", "value": url})
    elif redis and redis.external and redis.external.url_secret_ref:
        env.append(_from_secret("RILLET_STATE__REDIS_URL", redis.external.url_secret_ref))
    elif redis and redis.external and redis.external.url:
        env.append({"name": "RILLET_STATE__REDIS_URL", "value": redis.external.url})
    sentinel = redis.external.sentinel if redis and redis.external else None
    if sentinel and sentinel.password_secret_ref:
        env.append(
            _from_secret("RILLET_STATE__REDIS_SENTINEL__PASSWORD", sentinel.password_secret_ref)
        )
    return env
