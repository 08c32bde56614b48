"""The ChatService spec and status (`rillet.dev/v1alpha1`): the one source of the CRD schema.

Field names are camelCase in YAML and snake_case in Python. Defaults live here, and the
generated CRD carries them, so the API server fills them in and `kubectl get -o yaml` shows
what will run. Cross-field rules are CEL (`x-kubernetes-validations`) so the API server
rejects a bad spec at `kubectl apply`, with the message below.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from rillet_runtime.settings import (
    CORS_ALLOW_HEADERS,
    CORS_EXPOSE_HEADERS,
    CORS_ORIGIN_PATTERN,
    HEADER_NAME_PATTERN,
    SENTINEL_ADDRESS_PATTERN,
    SENTINEL_PORT,
)

GROUP = "rillet.dev"
VERSION = "v1alpha1"
KIND = "ChatService"
PLURAL = "chatservices"

Quantity = str  # a Kubernetes quantity ("256Mi", "500m"); the API server parses it
# A size in bytes as Kubernetes writes it ("512Mi", "20Gi", "1G"): refused at `kubectl apply`
# when it is not one ("1GB"), rather than by the API server when the operator applies it.
ByteQuantity = Annotated[
    str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i|[kMGTPE])?$")
]
DNS_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def cel(rule: str, message: str) -> JsonDict:
    return {"rule": rule, "message": message}


class Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class SecretKeyRef(Model):
    """A key of a Secret in the ChatService's namespace."""

    name: str = Field(min_length=1, max_length=253)
    key: str = Field(min_length=1, max_length=253)


class GraphSpec(Model):
    ref: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="`module:attribute` of a compiled LangGraph graph in the image; "
        "unset: the built-in RAG chat graph",
    )
    id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="the graph's name for LangGraph's clients (their `assistant_id` or "
        "`graph_id`); unset: `agent`",
    )


class ProviderSpec(Model):
    provider: Literal["extractive", "openai", "anthropic"] = Field(
        "extractive",
        description="`extractive` is the offline default; `openai` covers any "
        "OpenAI-compatible server (vLLM, llama.cpp, Ollama)",
    )
    name: str | None = Field(None, max_length=256, description="model name sent to the provider")
    base_url: str | None = Field(None, max_length=2048, pattern=r"^https?://")
    api_key_secret_ref: SecretKeyRef | None = Field(
        None, description="the API key, injected as an environment variable, never in a ConfigMap"
    )
    max_tokens: int = Field(1024, ge=1, le=1_000_000)
    timeout_seconds: int = Field(60, ge=1, le=3600)


_PROVIDER_RULES: list[JsonValue] = [
    cel(
        "self.provider == 'extractive' || has(self.name)",
        "name is required for the openai and anthropic providers",
    ),
    cel(
        "self.provider != 'anthropic' || has(self.apiKeySecretRef)",
        "apiKeySecretRef is required for the anthropic provider",
    ),
    cel(
        "self.provider != 'openai' || has(self.apiKeySecretRef) || has(self.baseUrl)",
        "the openai provider needs apiKeySecretRef, or baseUrl of a server that needs no key",
    ),
]


class FallbackModelSpec(ProviderSpec):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _PROVIDER_RULES})


class ModelSpec(ProviderSpec):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _PROVIDER_RULES})

    fallback: FallbackModelSpec | None = Field(
        None, description="used when the primary fails before its first token"
    )


class ResourcesSpec(Model):
    requests: dict[str, Quantity] = Field(
        default_factory=lambda: {"cpu": "500m", "memory": "512Mi"}
    )
    limits: dict[str, Quantity] = Field(default_factory=lambda: {"memory": "1Gi"})


class ServerSpec(Model):
    workers_per_pod: int = Field(2, ge=1, le=64, description="gunicorn workers in each pod")
    max_concurrent_streams_per_worker: int = Field(
        100, ge=1, le=10_000, description="over it a worker answers 503 with Retry-After"
    )
    max_event_loop_lag_ms: int = Field(
        150,
        ge=0,
        le=10_000,
        description="a worker whose event loop runs later than this refuses new streams "
        "(503 with Retry-After) until it catches up; 0: the stream cap alone",
    )
    max_stream_seconds: int = Field(
        300,
        ge=10,
        le=3600,
        description="longest answer; the pods' termination grace derives from it",
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)


class RedisPersistenceSpec(Model):
    enabled: bool = Field(
        True,
        description="an append-only file (fsync every second) plus RDB snapshots on a "
        "PersistentVolumeClaim; off: the data lives in the pod only and any restart, "
        "reschedule or rollout of it loses every thread (status says so)",
    )
    size: ByteQuantity = Field(
        "1Gi",
        description="the claim's size: at least 3x memoryLimit (the AOF, its rewrite and an "
        "RDB snapshot); fixed once the claim exists",
    )
    storage_class_name: str | None = Field(
        None,
        pattern=DNS_NAME,
        max_length=253,
        description="unset: the cluster's default StorageClass; fixed once the claim exists",
    )
    fsync: Literal["everysec", "always"] = Field(
        "everysec",
        description="when Redis fsyncs the append-only file: everysec (a crashed node may "
        "lose the last second or two of turns) or always (before every reply: nothing "
        "acknowledged is lost, each write waits for the disk)",
    )


MANAGED_REDIS_REPLICAS_MESSAGE = (
    "redis.managed runs one Redis, its data on a claim, without failover: replicas must "
    "be 1. For high availability give redis.external as a Sentinel set "
    "(redis.external.sentinel) or a Redis Cluster (redis.external.cluster), run by a Redis "
    "operator or a cloud service"
)


class ManagedRedisSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("!has(self.replicas) || self.replicas == 1", MANAGED_REDIS_REPLICAS_MESSAGE)
            ]
        }
    )

    image: str = "redis:7.2-alpine"
    memory_limit: ByteQuantity = Field(
        "256Mi", description="container limit; maxmemory is 80% of it"
    )
    eviction_policy: Literal[
        "noeviction", "volatile-lru", "volatile-lfu", "volatile-ttl", "allkeys-lru", "allkeys-lfu"
    ] = Field(
        "noeviction",
        description="noeviction: a full Redis refuses writes (the turn fails with state_full) "
        "and drops nothing; every Rillet key has a TTL, so a volatile-* policy evicts "
        "checkpoint keys one by one and leaves threads with holes (docs/state.md)",
    )
    persistence: RedisPersistenceSpec = Field(default_factory=RedisPersistenceSpec)
    replicas: int = Field(
        1,
        ge=1,
        le=1,
        description="always 1: high availability is an external Redis (a Sentinel set or a "
        "Redis Cluster)",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_replica(cls, data: Any) -> Any:
        """The CEL rule's message, for specs read without the API server (`rillet render`)."""
        if isinstance(data, dict) and data.get("replicas", 1) != 1:
            raise ValueError(MANAGED_REDIS_REPLICAS_MESSAGE)
        return data


SentinelAddress = Annotated[
    str, StringConstraints(pattern=SENTINEL_ADDRESS_PATTERN, max_length=261)
]


class RedisSentinelSpec(Model):
    master_name: str = Field(
        min_length=1,
        max_length=256,
        description="the master's name in the sentinels' `sentinel monitor` line",
    )
    addresses: list[SentinelAddress] = Field(
        min_length=1,
        max_length=32,
        description=f"the sentinels, `host:port` (port {SENTINEL_PORT} when left out); any one "
        "that answers names the master",
    )
    password_secret_ref: SecretKeyRef | None = Field(
        None,
        description="the sentinels' own password (their `requirepass`), if they have one; "
        "the master's is in the URL",
    )
    failover_seconds: int = Field(
        5,
        ge=1,
        le=120,
        description="a command that loses the master retries, asking the sentinels again, "
        "at least this long before failing with state_unavailable: set it above the "
        "sentinels' down-after-milliseconds plus a few seconds to ride through a failover",
    )


class ExternalRedisSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.sentinel) ? !(has(self.url) && has(self.urlSecretRef)) "
                    ": has(self.url) != has(self.urlSecretRef)",
                    "set exactly one of redis.external.url and redis.external.urlSecretRef "
                    "(with redis.external.sentinel: at most one)",
                ),
                cel(
                    "!has(self.sentinel) || !self.cluster",
                    "redis.external.sentinel and redis.external.cluster exclude each other: "
                    "a Redis Cluster fails over by itself",
                ),
            ]
        }
    )

    url: str | None = Field(
        None,
        pattern=r"^rediss?://[^@]*$",
        description="without a password; else use urlSecretRef. With sentinel, only its "
        "database and scheme count (`rediss:///0`: TLS, database 0): the sentinels name "
        "the host",
    )
    url_secret_ref: SecretKeyRef | None = Field(None, description="a URL that carries a password")
    cluster: bool = False
    sentinel: RedisSentinelSpec | None = Field(
        None,
        description="find the master through these sentinels and follow it through a failover",
    )


class RedisSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.managed) != has(self.external)",
                    "set exactly one of redis.managed and redis.external",
                )
            ]
        }
    )

    managed: ManagedRedisSpec | None = None
    external: ExternalRedisSpec | None = None
    checkpoint_ttl_seconds: int = Field(604800, ge=0, description="0 keeps threads forever")
    compress_min_bytes: int = Field(1024, ge=0)


class StateSpec(Model):
    """How much of each thread is kept, whichever store holds it (Redis or, without
    spec.redis, each worker's memory)."""

    keep_checkpoints: int = Field(
        10,
        ge=0,
        le=100_000,
        description="checkpoints kept per thread (and subgraph), the newest: time travel "
        "reaches these; older ones go as new ones are written; 0 keeps all",
    )
    max_thread_bytes: int = Field(
        16 * 2**20,
        ge=0,
        description="bytes a thread may hold; a turn that would grow it past this is not "
        "saved (thread_too_large), and a thread over it takes no new turn (413); 0: no cap",
    )


class HnswSpec(Model):
    m: int = Field(16, ge=4, le=128, description="links per vector; used by `rillet ingest`")
    ef_construction: int = Field(
        200, ge=8, le=2048, description="build-time beam; used by `rillet ingest`"
    )
    ef_search: int = Field(64, ge=8, le=2048, description="query-time beam: recall vs latency")


class EmbeddedIndexSpec(Model):
    claim_name: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=253,
        description="a PersistentVolumeClaim holding a `rillet ingest` index folder, mounted "
        "read-only; unset: the index of Rillet's docs built into the image",
    )
    sub_path: str = Field(
        "", max_length=1024, pattern=r"^([^/].*)?$", description="the folder in the claim"
    )


class PineconeSpec(Model):
    host: str = Field(pattern=r"^https://", description="the index host from Pinecone's console")
    namespace: str = ""
    api_key_secret_ref: SecretKeyRef


class QdrantSpec(Model):
    url: str = Field(pattern=r"^https?://")
    collection: str = Field(min_length=1)
    api_key_secret_ref: SecretKeyRef | None = None


class ChromaSpec(Model):
    url: str = Field(pattern=r"^https?://")
    collection: str = Field(min_length=3, max_length=512)


_INDEX_RULES: list[JsonValue] = [
    *(
        cel(f"self.provider != '{p}' || has(self.{p})", f"{p} settings are required")
        for p in ("pinecone", "qdrant", "chroma")
    ),
    cel(
        "!has(self.hybrid) || !self.hybrid || self.provider == 'embedded'",
        "hybrid search needs the embedded index (its keyword index lives beside it)",
    ),
]


class VectorIndexSpec(Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _INDEX_RULES})

    provider: Literal["embedded", "pinecone", "qdrant", "chroma"] = "embedded"
    embedded: EmbeddedIndexSpec = Field(default_factory=EmbeddedIndexSpec)
    hnsw: HnswSpec = Field(default_factory=HnswSpec)
    pinecone: PineconeSpec | None = None
    qdrant: QdrantSpec | None = None
    chroma: ChromaSpec | None = None
    k: int = Field(3, ge=1, le=50)
    score_threshold: float = Field(
        0.0, ge=-1, le=1, description="least cosine similarity a vector hit needs"
    )
    hybrid: bool | None = Field(
        None, description="BM25 + vector fused by RRF; unset: on for embedded, off otherwise"
    )


class EmbeddingsSpec(Model):
    provider: Literal["offline", "openai"] = Field(
        "offline",
        description="offline: lexical hashing, no model (docs/retrieval.md); openai: any "
        "OpenAI-compatible /v1/embeddings (OpenAI, or TEI/vLLM in the cluster)",
    )
    model: str | None = Field(None, description="openai: text-embedding-3-small if unset")
    base_url: str | None = Field(None, pattern=r"^https?://")
    api_key_secret_ref: SecretKeyRef | None = None
    dimensions: int | None = Field(None, ge=8, le=8192, description="ask for shorter vectors")


class StreamingSpec(Model):
    coalesce_max_chars: int = Field(32, ge=1, le=4096)
    coalesce_max_ms: int = Field(15, ge=0, le=1000)
    heartbeat_seconds: int = Field(15, ge=0, le=300)
    resumable: bool = Field(True, description="needs redis")


class LatencyTargetsSpec(Model):
    ttft_p95_ms: int = Field(1000, ge=10, description="time to first token, 95th percentile")
    inter_token_p95_ms: int = Field(100, ge=1, description="gap between tokens, 95th percentile")


class AutoscalingSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "minReplicas must not exceed maxReplicas",
                )
            ]
        }
    )

    min_replicas: int = Field(2, ge=1, le=1000)
    max_replicas: int = Field(10, ge=1, le=1000)
    engine: Literal["hpa", "keda"] = Field(
        "hpa",
        description="hpa: an HPA on custom metrics (prometheus-adapter); keda: a KEDA "
        "ScaledObject with Prometheus triggers (needs KEDA and the operator's --prometheus-url)",
    )
    streams_per_pod: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="concurrent streams one pod serves within the latency targets, as "
        "measured by `rillet bench --calibrate`; unset: 20 per worker (conservative)",
    )
    target_utilization_percent: int = Field(
        70,
        ge=10,
        le=100,
        description="scale out when active streams per pod reach this share of streamsPerPod; "
        "the rest absorbs arrivals while new pods start",
    )
    adapt_capacity: bool = Field(
        True,
        description="move the streams-per-pod target (50-120% of streamsPerPod) from the "
        "observed TTFT p95, every 5 minutes, with an Event per change; needs the operator's "
        "--prometheus-url",
    )
    scale_on_latency: bool = Field(
        False,
        description="also scale out in proportion to a pod's TTFT p95 over the target: reacts "
        "to what the streams target misses, but lags and overshoots (docs/autoscaling.md)",
    )
    scale_down_stabilization_seconds: int = Field(
        300,
        ge=0,
        le=3600,
        description="scale in only to the highest recommendation of this window",
    )


# Asymmetric only: a shared HMAC secret in the spec would be readable by anyone who can
# read the ChatService.
JwtAlgorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]


class ApiKeysSpec(Model):
    secret_name: str | None = Field(
        None,
        pattern=DNS_NAME,
        max_length=253,
        description="a Secret in the namespace: each key names a principal, its value is that "
        "principal's API key; edits reach the pods without a restart. Unset: the operator "
        "creates `<name>-api-keys` with one random key for the principal `default`",
    )


class JwtSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.jwksUrl) != has(self.publicKey)",
                    "set exactly one of auth.jwt.jwksUrl and auth.jwt.publicKey",
                )
            ]
        }
    )

    issuer: str = Field(min_length=1, max_length=2048, description="the required `iss`")
    audience: str = Field(min_length=1, max_length=2048, description="the required `aud`")
    jwks_url: str | None = Field(
        None,
        pattern=r"^https?://",
        max_length=2048,
        description="signing keys by `kid`, cached, fetched again for an unknown kid",
    )
    public_key: str | None = Field(
        None,
        pattern=r"^-----BEGIN PUBLIC KEY-----",
        max_length=16384,
        description="a PEM public key, instead of jwksUrl",
    )
    algorithms: list[JwtAlgorithm] = Field(
        ["RS256", "ES256", "EdDSA"],
        min_length=1,
        max_length=10,
        description="accepted signature algorithms (asymmetric only)",
    )
    principal_claim: str = Field(
        "sub", min_length=1, max_length=256, description="the claim naming the principal"
    )


class TrustedHeaderSpec(Model):
    header: str = Field(
        "X-Auth-Request-User",
        pattern=r"^[A-Za-z0-9-]+$",
        max_length=256,
        description="the header the gateway in front sets to the caller's name",
    )


class AuthSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.mode != 'jwt' || has(self.jwt)", "auth.jwt is required for mode jwt")
            ]
        }
    )

    mode: Literal["apiKeys", "jwt", "trustedHeader", "none"] = Field(
        "apiKeys",
        description="who is calling: apiKeys (from a Secret), jwt, trustedHeader (a gateway "
        "in front names the caller; needs network.allowFrom and the operator's "
        "NetworkPolicies), or none (anyone who can reach the pods)",
    )
    api_keys: ApiKeysSpec | None = None
    jwt: JwtSpec | None = None
    trusted_header: TrustedHeaderSpec | None = None


class LimitsSpec(Model):
    """Per principal, shared by every pod through Redis (without Redis: per worker)."""

    concurrent_streams: int | None = Field(None, ge=1, le=1_000_000, description="open at once")
    requests_per_minute: int | None = Field(None, ge=1, le=100_000_000)
    tokens_per_minute: int | None = Field(
        None, ge=1, le=10_000_000_000, description="model tokens, prompt and completion"
    )


Origin = Annotated[str, StringConstraints(pattern=CORS_ORIGIN_PATTERN, max_length=260)]
Header = Annotated[str, StringConstraints(pattern=HEADER_NAME_PATTERN, max_length=256)]


class CorsSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!self.allowCredentials || !('*' in self.allowOrigins)",
                    "api.cors.allowCredentials with `*` lets every site act with the "
                    "browser's cookies; list the origins",
                )
            ]
        }
    )

    allow_origins: list[Origin] = Field(
        default_factory=list,
        max_length=64,
        description="exact origins (`https://chat.example.com`, no path) whose web pages may "
        "call the API from a browser; `*`: any page, with auth.mode apiKeys or jwt only "
        "(credentials the page holds itself); empty: none",
    )
    allow_headers: list[Header] | None = Field(
        None,
        max_length=64,
        description="request headers a page may send; unset: what LangGraph's and OpenAI's "
        "JS clients send (" + ", ".join(CORS_ALLOW_HEADERS) + ")",
    )
    expose_headers: list[Header] | None = Field(
        None,
        max_length=64,
        description="response headers a page may read; unset: " + ", ".join(CORS_EXPOSE_HEADERS),
    )
    allow_credentials: bool = Field(
        False, description="let pages send the browser's cookies (a gateway's session)"
    )
    max_age_seconds: int = Field(
        600, ge=0, le=86_400, description="how long a browser may reuse a preflight's answer"
    )


class ApiSpec(Model):
    cors: CorsSpec = Field(
        default_factory=CorsSpec, description="browsers on other origins (a web app's pages)"
    )


class LabelSelectorRequirement(Model):
    key: str = Field(min_length=1, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = Field(None, max_length=64)


class LabelSelector(Model):
    """A Kubernetes label selector; `{}` selects everything."""

    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = Field(None, max_length=16)


class NetworkPeer(Model):
    """A NetworkPolicy peer: pods matching podSelector in namespaces matching
    namespaceSelector; podSelector alone: in the ChatService's namespace."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.namespaceSelector) || has(self.podSelector)",
                    "set namespaceSelector, podSelector or both",
                )
            ]
        }
    )

    namespace_selector: LabelSelector | None = None
    pod_selector: LabelSelector | None = None


class NetworkSpec(Model):
    allow_from: list[NetworkPeer] | None = Field(
        None,
        min_length=1,
        max_length=32,
        description="who may reach the chat API port, as NetworkPolicy peers; unset: every "
        "pod in the ChatService's namespace. The operator's NetworkPolicies enforce it "
        "(unless switched off for the cluster)",
    )


class ChatServiceSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.embeddings.provider == 'offline' || self.vectorIndex.provider != "
                    "'embedded' || (has(self.vectorIndex.embedded) && "
                    "has(self.vectorIndex.embedded.claimName))",
                    "the image's built-in index holds offline embeddings: with another "
                    "embeddings provider, set vectorIndex.embedded.claimName to an index "
                    "built with it (`rillet ingest`)",
                ),
                cel(
                    "!('*' in self.api.cors.allowOrigins) || self.auth.mode in ['apiKeys', 'jwt']",
                    "api.cors.allowOrigins `*` needs auth.mode apiKeys or jwt (credentials a "
                    "page holds itself): otherwise any page its users open calls the API as "
                    "them; list the origins",
                ),
                cel(
                    "self.auth.mode != 'trustedHeader' || has(self.network.allowFrom)",
                    "auth.mode trustedHeader needs network.allowFrom naming the gateway in "
                    "front: anyone else who reaches the pods could set the header",
                ),
            ]
        }
    )

    image: str | None = Field(
        None,
        min_length=1,
        description="the pods' image, to pin this ChatService to one; unset: the operator's "
        "default, the image it was installed with (it follows the operator's upgrades)",
    )
    replicas: int | None = Field(
        None,
        ge=0,
        le=1000,
        description="a fixed pod count; set (or `kubectl scale`), autoscaling is off",
    )
    graph: GraphSpec = Field(default_factory=GraphSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    server: ServerSpec = Field(default_factory=ServerSpec)
    redis: RedisSpec | None = Field(
        None, description="unset: in-memory state in each worker (a demo, not for production)"
    )
    state: StateSpec = Field(
        default_factory=StateSpec, description="bounds on each thread: retention and size"
    )
    vector_index: VectorIndexSpec = Field(default_factory=VectorIndexSpec)
    embeddings: EmbeddingsSpec = Field(default_factory=EmbeddingsSpec)
    streaming: StreamingSpec = Field(default_factory=StreamingSpec)
    latency_targets: LatencyTargetsSpec = Field(default_factory=LatencyTargetsSpec)
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    auth: AuthSpec = Field(default_factory=AuthSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    api: ApiSpec = Field(
        default_factory=ApiSpec, description="who may call the chat API from a web page"
    )


class Condition(Model):
    type: Literal["Ready", "Progressing", "Degraded", "RedisReady", "SLOMet"]
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class ObservedLatency(Model):
    """Read from Prometheus (the operator's --prometheus-url) over the last window."""

    ttft_p95_ms: float | None = None
    inter_token_p95_ms: float | None = None
    window: str | None = Field(None, description="the PromQL range the figures cover")


class AutoscalingStatus(Model):
    streams_per_pod_target: int | None = Field(
        None, description="what the autoscaler aims at, once adapted from observed latency"
    )
    adapted_from: int | None = Field(
        None, description="the configured target it was adapted from; a new one starts over"
    )


class AuthStatus(Model):
    api_keys_secret: str | None = Field(
        None, description="the Secret the pods read their API keys from"
    )


class ChatServiceStatus(Model):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    replicas: int | None = None
    ready_replicas: int | None = None
    selector: str | None = Field(None, description="for the scale subresource")
    endpoint: str | None = Field(None, description="the in-cluster URL of the chat API")
    image: str | None = Field(
        None,
        description="the image the Deployment gives the pods: spec.image or the operator's default",
    )
    observed_latency: ObservedLatency | None = None
    autoscaling: AutoscalingStatus | None = None
    auth: AuthStatus | None = None


def parse_spec(spec: dict[str, Any]) -> ChatServiceSpec:
    return ChatServiceSpec.model_validate(spec)
