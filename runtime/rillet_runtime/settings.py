"""Runtime settings: env vars (RILLET_ prefix, `__` for nesting) over an optional YAML file.

The operator renders the file into a ConfigMap and points RILLET_SETTINGS_FILE at it;
secrets never go in the file, they arrive as env vars from Secrets.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

SETTINGS_FILE_ENV = "RILLET_SETTINGS_FILE"
EXTRACTIVE_MODEL = "rillet-extractive"  # the offline provider's model; the operator names it too


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# An origin as browsers send it: scheme, lowercase host, optional port; no path, no slash.
CORS_ORIGIN_PATTERN = r"^(\*|https?://(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:[0-9]{1,5})?)$"
HEADER_NAME_PATTERN = r"^[A-Za-z0-9-]+$"
CorsOrigin = Annotated[str, StringConstraints(pattern=CORS_ORIGIN_PATTERN)]
HeaderName = Annotated[str, StringConstraints(pattern=HEADER_NAME_PATTERN)]
# What the JS clients send: their key (LangGraph's JS SDK: x-api-key; OpenAI's and fetch:
# Authorization) and a rejoin's Last-Event-ID; Content-Type is always allowed.
CORS_ALLOW_HEADERS = [
    "authorization",
    "content-type",
    "x-api-key",
    "last-event-id",
    "cache-control",
]
# What the JS clients read: LangGraph's run and rejoin URLs, its pagination, and when to retry.
CORS_EXPOSE_HEADERS = [
    "content-location",
    "location",
    "x-pagination-total",
    "x-pagination-next",
    "retry-after",
]


class CorsSettings(_Section):
    """Which web pages, by origin, a browser lets call the API; none unless listed."""

    allow_origins: list[CorsOrigin] = Field(
        default_factory=list,
        description="exact origins (`https://chat.example.com`, no path) whose pages may call "
        "the API; `*`: any page, only with credentials a page must hold itself (auth.mode "
        "api_keys or jwt); empty: CORS off, browsers refuse every other origin",
    )
    allow_headers: list[HeaderName] = Field(
        default_factory=lambda: list(CORS_ALLOW_HEADERS),
        description="request headers a page may send",
    )
    expose_headers: list[HeaderName] = Field(
        default_factory=lambda: list(CORS_EXPOSE_HEADERS),
        description="response headers a page may read",
    )
    allow_credentials: bool = Field(
        False, description="let pages send the browser's cookies (a gateway's session)"
    )
    max_age_seconds: int = Field(
        600, ge=0, le=86_400, description="how long a browser may reuse a preflight's answer"
    )

    @model_validator(mode="after")
    def _no_cookies_for_every_origin(self) -> CorsSettings:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError(
                "server.cors: allow_credentials with `*` lets every site act with the "
                "browser's cookies; list the origins"
            )
        return self


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(2, ge=1, description="gunicorn worker processes per pod")
    max_streams_per_worker: int = Field(
        100,
        ge=1,
        description="concurrent streams one worker accepts; over it: 503 (the operator's "
        "default too; `rillet bench --calibrate` measures what a pod serves within targets)",
    )
    max_event_loop_lag_ms: float = Field(
        150,
        ge=0,
        description="a worker whose event loop runs later than this refuses new streams "
        "(503, Retry-After) until it catches up; 0: only the stream cap",
    )
    max_stream_seconds: float = Field(
        300, gt=0, description="longest a stream may run; drain and grace periods derive from it"
    )
    drain_seconds: float = Field(
        5, ge=0, description="after SIGTERM, keep answering 503 so load balancers notice"
    )
    drain_file: Path | None = Field(
        None, description="while this file exists the worker is draining (set by `rillet drain`)"
    )
    keepalive_seconds: float = Field(5, ge=0)
    worker_timeout_seconds: int = Field(30, ge=1, description="gunicorn heartbeat timeout")
    max_requests: int = Field(10_000, ge=0, description="recycle a worker after N requests")
    max_requests_jitter: int = Field(1_000, ge=0)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    retry_after_seconds: int = Field(2, ge=1)
    metrics_dir: Path | None = Field(
        None, description="prometheus multiprocess dir; `rillet serve` creates one if unset"
    )
    metrics_port: int | None = Field(
        9090,
        ge=1,
        le=65535,
        description="/metrics on its own port (gunicorn's master), not the API's; None: off",
    )
    docs: bool = Field(False, description="serve /docs and /openapi.json (off: a smaller surface)")
    cors: CorsSettings = Field(default_factory=CorsSettings)

    @property
    def graceful_timeout_seconds(self) -> float:
        """Gunicorn must outwait the longest stream, plus the drain window."""
        return self.max_stream_seconds + self.drain_seconds + 5


AuthMode = Literal["none", "api_keys", "jwt", "trusted_header"]
HELD_CREDENTIALS: frozenset[AuthMode] = frozenset({"api_keys", "jwt"})  # sent by the page itself


class ApiKeysSettings(_Section):
    path: Path | None = Field(
        None,
        description="a folder with one file per principal holding its key (a mounted Secret), "
        "or a YAML file of principal: key; re-read when it changes, no restart",
    )
    reload_seconds: float = Field(5, gt=0, description="how often the keys are checked for changes")


class JwtSettings(_Section):
    issuer: str | None = Field(None, description="required `iss`; unset: not checked")
    audience: str = Field(min_length=1, description="required `aud`")
    jwks_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="keys by `kid`, cached, refetched on an unknown kid",
    )
    public_key: str | None = Field(None, description="a PEM public key, instead of jwks_url")
    algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "ES256", "EdDSA"],
        min_length=1,
        description="accepted signature algorithms (never `none`, never HMAC with a public key)",
    )
    principal_claim: str = Field("sub", min_length=1, description="the claim naming the principal")
    leeway_seconds: float = Field(30, ge=0, le=300, description="clock skew allowed on exp/nbf")
    jwks_cache_seconds: float = Field(300, gt=0)

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtSettings:
        if (self.jwks_url is None) == (self.public_key is None):
            raise ValueError("set exactly one of auth.jwt.jwks_url and auth.jwt.public_key")
        refused = [a for a in self.algorithms if a.lower() == "none" or a.upper().startswith("HS")]
        if refused:
            raise ValueError(
                f"auth.jwt.algorithms: {', '.join(refused)} refused (only signatures checked "
                "with a public key: RS*, PS*, ES*, EdDSA)"
            )
        return self


class AuthSettings(_Section):
    mode: AuthMode = Field(
        "none",
        description="who is calling: api_keys, jwt, trusted_header (a gateway in front), or "
        "none (local use only: refused on a non-loopback address unless allow_unauthenticated)",
    )
    allow_unauthenticated: bool = Field(
        False, description="mode none on a non-loopback address: you say you mean it"
    )
    api_keys: ApiKeysSettings = Field(default_factory=ApiKeysSettings)
    jwt: JwtSettings | None = None
    trusted_header: str = Field(
        "X-Auth-Request-User",
        min_length=1,
        description="the header a gateway sets (trusted_header)",
    )

    @model_validator(mode="after")
    def _mode_has_its_section(self) -> AuthSettings:
        if self.mode == "api_keys" and self.api_keys.path is None:
            raise ValueError("auth.api_keys.path is required for mode api_keys")
        if self.mode == "jwt" and self.jwt is None:
            raise ValueError("auth.jwt is required for mode jwt")
        return self


class LimitsSettings(_Section):
    """Per principal, shared by every worker and pod through Redis (in memory: per worker)."""

    concurrent_streams: int | None = Field(None, ge=1, description="open streams at once")
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(
        None, ge=1, description="model tokens (prompt and completion), charged when a run ends"
    )
    max_messages: int = Field(256, ge=1, description="messages in one OpenAI-compatible request")
    max_input_chars: int = Field(
        128_000, ge=1, description="characters of input in one request, all messages together"
    )


class StreamingSettings(_Section):
    coalesce_max_chars: int = Field(32, ge=1, description="flush buffered text at this size")
    coalesce_max_ms: float = Field(15, ge=0, description="or after this long, whichever first")
    heartbeat_seconds: float = Field(15, ge=0, description="SSE comment heartbeat; 0 disables")
    queue_max_events: int = Field(64, ge=1, description="backpressure bound per stream")
    cancel_timeout_seconds: float = Field(
        2, gt=0, description="how long a cancelled run may take to unwind"
    )
    resumable: bool = Field(
        True, description="log events to Redis so clients can resume (needs the Redis state)"
    )
    run_log_ttl_seconds: float = Field(
        300,
        gt=0,
        # The old name, still read: a settings file written for it keeps working.
        validation_alias=AliasChoices("run_log_ttl_seconds", "resume_ttl_seconds"),
        description="a run's event log is kept this long after its last event (a live run's "
        "beat keeps it, however quiet the run)",
    )
    resume_max_events: int = Field(10_000, ge=100, description="cap on a run's logged events")
    resume_grace_seconds: float = Field(
        10, ge=0, description="a resumable run outlives its client this long, awaiting a resume"
    )


ProviderName = Literal["extractive", "openai", "anthropic"]


class ProviderSettings(_Section):
    provider: ProviderName = "extractive"
    name: str = Field(EXTRACTIVE_MODEL, description="model name sent to the provider")
    base_url: str | None = None
    api_key: SecretStr | None = Field(None, description="from env or a Secret; never a file")
    max_tokens: int = Field(1024, ge=1)
    temperature: float = Field(0.2, ge=0, le=2)
    timeout_seconds: float = Field(60, gt=0)
    max_retries: int = Field(2, ge=0, description="SDK retries before the first token")

    @model_validator(mode="after")
    def _api_key_where_required(self) -> ProviderSettings:
        if (
            self.provider == "anthropic"
            and self.api_key is None
            and "ANTHROPIC_API_KEY" not in os.environ
        ):
            raise ValueError("model.api_key is required for provider 'anthropic'")
        if (
            self.provider == "openai"
            and self.api_key is None
            and self.base_url is None
            and "OPENAI_API_KEY" not in os.environ
        ):
            raise ValueError("model.api_key (or model.base_url of a keyless server) is required")
        return self


class ModelSettings(ProviderSettings):
    breaker_failure_threshold: int = Field(5, ge=1)
    breaker_reset_seconds: float = Field(30, gt=0)
    fallback: ProviderSettings | None = None


class HnswSettings(_Section):
    m: int = Field(16, ge=4, le=128, description="graph links per vector (set at ingest)")
    ef_construction: int = Field(200, ge=8, le=2048, description="build-time beam (ingest)")
    ef_search: int = Field(64, ge=8, le=2048, description="query-time beam: recall vs latency")


class EmbeddedIndexSettings(_Section):
    path: Path | None = Field(
        None, description="folder built by `rillet ingest`; unset: the bundled docs, built once"
    )


class PineconeSettings(_Section):
    host: str = Field(pattern=r"^https?://", description="the index host (Pinecone console)")
    namespace: str = ""
    api_key: SecretStr | None = Field(None, description="or PINECONE_API_KEY; from a Secret")


class QdrantSettings(_Section):
    url: str | None = Field(None, pattern=r"^https?://", description="a Qdrant server")
    path: Path | None = Field(None, description="qdrant-client's local mode (tests, one process)")
    collection: str = Field(min_length=1)
    api_key: SecretStr | None = Field(None, description="from a Secret")

    @model_validator(mode="after")
    def _one_location(self) -> QdrantSettings:
        if (self.url is None) == (self.path is None):
            raise ValueError("set exactly one of url and path")
        return self


class ChromaSettings(_Section):
    url: str | None = Field(None, pattern=r"^https?://", description="a Chroma server")
    path: Path | None = Field(None, description="chromadb's embedded mode (tests, one process)")
    collection: str = Field(min_length=1)

    @model_validator(mode="after")
    def _one_location(self) -> ChromaSettings:
        if (self.url is None) == (self.path is None):
            raise ValueError("set exactly one of url and path")
        return self


IndexProvider = Literal["embedded", "pinecone", "qdrant", "chroma"]


class RetrievalSettings(_Section):
    provider: IndexProvider = "embedded"
    embedded: EmbeddedIndexSettings = Field(default_factory=EmbeddedIndexSettings)
    hnsw: HnswSettings = Field(default_factory=HnswSettings)
    pinecone: PineconeSettings | None = None
    qdrant: QdrantSettings | None = None
    chroma: ChromaSettings | None = None
    k: int = Field(3, ge=1, le=50)
    score_threshold: float = Field(
        0.0, ge=-1, le=1, description="least cosine similarity a vector hit needs"
    )
    hybrid: bool | None = Field(
        None,
        description="fuse BM25 keyword hits with vector hits (RRF); unset: on for embedded. "
        "The keyword index lives beside the embedded index only",
    )
    rrf_k: int = Field(60, ge=1, description="reciprocal rank fusion constant")
    candidates: int = Field(20, ge=1, le=1000, description="hits per side before fusion")
    chunk_tokens: int = Field(512, ge=32, le=8192, description="chunk size at ingest")
    chunk_overlap: int = Field(50, ge=0, description="tokens shared by neighbouring chunks")

    @model_validator(mode="after")
    def _consistent(self) -> RetrievalSettings:
        if self.provider != "embedded" and getattr(self, self.provider) is None:
            raise ValueError(f"retrieval.{self.provider} is required for that provider")
        if self.hybrid and self.provider != "embedded":
            raise ValueError(
                f"retrieval.hybrid needs the embedded index's keyword side; "
                f"provider {self.provider} searches vectors only"
            )
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError("retrieval.chunk_overlap must be smaller than chunk_tokens")
        return self

    @property
    def hybrid_search(self) -> bool:
        return self.provider == "embedded" if self.hybrid is None else self.hybrid


class EmbeddingSettings(_Section):
    provider: Literal["offline", "openai", "sentence-transformers"] = Field(
        "offline",
        description="offline: hashing, lexical only (docs/retrieval.md); openai: any "
        "OpenAI-compatible /v1/embeddings (OpenAI, TEI, vLLM); sentence-transformers: a "
        "local model folder",
    )
    model: str | None = Field(
        None, description="openai: model name (text-embedding-3-small); sentence-transformers: path"
    )
    base_url: str | None = Field(None, pattern=r"^https?://")
    api_key: SecretStr | None = Field(None, description="or OPENAI_API_KEY; from a Secret")
    dimensions: int | None = Field(None, ge=8, le=8192, description="ask for shorter vectors")
    batch_size: int = Field(64, ge=1, le=2048)
    timeout_seconds: float = Field(30, gt=0)
    max_retries: int = Field(2, ge=0)


SENTINEL_PORT = 26379  # Redis Sentinel's own port, when an address names none
# host:port, host, [IPv6]:port or [IPv6]; the port is checked for its range apart.
SENTINEL_ADDRESS_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:[0-9]{1,5})?$"


def sentinel_address(address: str) -> tuple[str, int]:
    """A sentinel's address as redis-py takes it: (host, port)."""
    matched = re.match(SENTINEL_ADDRESS_PATTERN, address)
    port = int(matched[2][1:]) if matched and matched[2] else SENTINEL_PORT
    if matched is None or not 1 <= port <= 65535:
        raise ValueError(
            f"{address!r} is not host:port (port 1-65535; an IPv6 address in brackets)"
        )
    return matched[1].removeprefix("[").removesuffix("]"), port


def _valid_sentinel_address(address: str) -> str:
    sentinel_address(address)
    return address


SentinelAddress = Annotated[str, AfterValidator(_valid_sentinel_address)]


class RedisSentinelSettings(_Section):
    """Redis behind Sentinel: where the sentinels listen and which master they watch. The
    master's password, username, database and TLS stay in `state.redis_url`."""

    master_name: str = Field(
        min_length=1, description="the master's name in the sentinels' `sentinel monitor` line"
    )
    addresses: list[SentinelAddress] = Field(
        min_length=1,
        description=f"the sentinels, `host:port` (port {SENTINEL_PORT} when left out); any one "
        "that answers names the master",
    )
    username: str | None = Field(None, description="the sentinels' own ACL user, if any")
    password: SecretStr | None = Field(
        None, description="the sentinels' own password (their `requirepass`); from a Secret"
    )
    failover_seconds: float = Field(
        5,
        ge=0,
        le=120,
        description="a command that loses the master keeps retrying, asking the sentinels "
        "again, at least this long (at most about twice) before state_unavailable",
    )

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [sentinel_address(address) for address in self.addresses]


class StateSettings(_Section):
    checkpointer: Literal["memory", "redis"] = "memory"
    redis_url: SecretStr | None = Field(
        None, description="redis:// or rediss:// URL (may carry a password: from a Secret)"
    )
    redis_cluster: bool = Field(False, description="the URL points at a Redis Cluster")
    redis_sentinel: RedisSentinelSettings | None = Field(
        None,
        description="find the master through these sentinels and follow it through a "
        "failover; redis_url then gives only the password, username, database and TLS",
    )
    redis_timeout_seconds: float = Field(2, gt=0, description="per command; connect gets half")
    redis_max_connections: int = Field(
        64,
        ge=1,
        le=10_000,
        description="per worker; when all are busy a command waits up to redis_timeout_seconds",
    )
    checkpoint_ttl_seconds: float = Field(
        7 * 24 * 3600, ge=0, description="a thread expires this long after its last use; 0: never"
    )
    compress_min_bytes: int = Field(1024, ge=0, description="zstd-compress values from this size")
    memory_max_threads: int = Field(
        10_000,
        ge=1,
        description="threads the in-memory state keeps per worker; the least recently used go",
    )
    keep_checkpoints: int = Field(
        10,
        ge=0,
        description="checkpoints kept per thread and namespace, the newest (time travel "
        "reaches these); older ones go in the write that makes them old; 0: keep all",
    )
    max_thread_bytes: int = Field(
        16 * 2**20,
        ge=0,
        description="the most a thread may hold (its stored checkpoints, values and pending "
        "writes); a run that would grow it past this is not saved (thread_too_large); 0: "
        "no cap",
    )
    history_window: int = Field(20, ge=2, description="messages kept in thread state")
    serde_allowed_types: list[Annotated[str, StringConstraints(pattern=r"^\w+(\.\w+)+$")]] = Field(
        default_factory=list,
        description="`module.Class` types a checkpoint may revive; set: nothing else is revived",
    )
    response_cache: bool = Field(False, description="exact-match answer cache, opt-in")
    response_cache_ttl_seconds: float = Field(600, gt=0)
    response_cache_max_entries: int = Field(10_000, ge=1)
    embedding_cache_ttl_seconds: float = Field(24 * 3600, gt=0)

    @model_validator(mode="after")
    def _redis_needs_a_url(self) -> StateSettings:
        sentinel = self.redis_sentinel
        if self.checkpointer == "redis" and self.redis_url is None and sentinel is None:
            raise ValueError(
                "state.redis_url (or state.redis_sentinel) is required when "
                "state.checkpointer is 'redis'"
            )
        if sentinel is not None and self.redis_cluster:
            raise ValueError(
                "state.redis_sentinel and state.redis_cluster exclude each other: a Redis "
                "Cluster fails over by itself; set one"
            )
        socket = self.redis_url and self.redis_url.get_secret_value().startswith("unix:")
        if sentinel is not None and socket:
            raise ValueError(
                "state.redis_url must be redis:// or rediss:// with state.redis_sentinel, "
                "not unix://: the sentinels name the master's host and port"
            )
        return self

    @property
    def redis_connection_url(self) -> str:
        """The URL the clients are built from; with sentinels and no URL: no password,
        database 0, no TLS."""
        return self.redis_url.get_secret_value() if self.redis_url else "redis://"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RILLET_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    graph: str | None = Field(
        None, description="`module:attribute` of the user's graph; unset: the built-in RAG graph"
    )
    graph_id: str = Field(
        "agent",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="the graph's name for LangGraph's clients (`assistant_id`, `graph_id`)",
    )
    server: ServerSettings = Field(default_factory=ServerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    streaming: StreamingSettings = Field(default_factory=StreamingSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    embeddings: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    state: StateSettings = Field(default_factory=StateSettings)

    @model_validator(mode="after")
    def _any_origin_needs_a_held_credential(self) -> Settings:
        """`*` is safe only where a page must hold the credential itself (an API key, a
        bearer token). An open server (`none`), or a gateway that vouches for whoever
        reaches it (`trusted_header`: by network, client certificate or cookie), would
        serve any page its users open, as them."""
        if "*" in self.server.cors.allow_origins and self.auth.mode not in HELD_CREDENTIALS:
            raise ValueError(
                f"server.cors.allow_origins: `*` with auth.mode {self.auth.mode} lets any "
                "web page its users open call the API as them; list the origins"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        settings_file = os.environ.get(SETTINGS_FILE_ENV)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_file:
            if not Path(settings_file).is_file():
                raise FileNotFoundError(f"{SETTINGS_FILE_ENV}={settings_file}: no such file")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=settings_file))
        return tuple(sources)
