"""The operator's settings: environment variables (RILLET_OPERATOR_ prefix), overridden by
`rillet operator`'s flags, handed to the handlers through kopf's memo, never read at import.

The Prometheus URL keeps its product-wide name, RILLET_PROMETHEUS_URL: `rillet render` reads
it too, to render KEDA triggers as the operator would."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rillet_operator.autoscaling import ADAPT_SECONDS
from rillet_operator.network import DEFAULT_MONITORING_NAMESPACE, NetworkIsolation
from rillet_runtime import version

PROMETHEUS_URL_ENV = "RILLET_PROMETHEUS_URL"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RILLET_OPERATOR_", extra="forbid")

    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="namespaces to watch (comma-separated in the environment); none: the cluster",
    )
    liveness: str | None = Field(
        None, description="serve a liveness endpoint, e.g. http://0.0.0.0:8081/healthz"
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="serve the operator's Prometheus metrics on this port"
    )
    prometheus_url: str | None = Field(
        None,
        validation_alias=PROMETHEUS_URL_ENV,
        description="Prometheus that scrapes ChatService pods: observed latency in status, "
        "and the server KEDA triggers query",
    )
    default_image: str = Field(
        default_factory=version.default_image,
        min_length=1,
        description="the image of ChatService pods whose spec names none; the chart sets "
        "the operator's own",
    )
    resync_seconds: float = Field(
        300, gt=0, description="reconcile every ChatService this often, whatever the watches saw"
    )
    observe_seconds: float = Field(
        30, gt=0, description="read every ChatService's latency from Prometheus this often"
    )
    adapt_seconds: float = Field(
        ADAPT_SECONDS, gt=0, description="move a ChatService's streams-per-pod target this often"
    )
    network_policies: bool = Field(
        True,
        description="create NetworkPolicies for every ChatService; off only on clusters whose "
        "network plugin does not enforce them (auth.mode trustedHeader is then refused)",
    )
    monitoring_namespace: str | None = Field(
        DEFAULT_MONITORING_NAMESPACE,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="the namespace whose pods may scrape ChatService pods' metrics port; "
        "empty: none may",
    )

    @field_validator("monitoring_namespace", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return value or None

    def isolation(self) -> NetworkIsolation | None:
        """What the builders need to write NetworkPolicies; None: they write none."""
        if not self.network_policies:
            return None
        return NetworkIsolation(monitoring_namespace=self.monitoring_namespace)

    @field_validator("namespaces", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @classmethod
    def with_flags(cls, **flags: Any) -> OperatorSettings:
        """The environment, overridden by the flags that were given (not None), named as
        the fields are."""
        keys = {
            name: field.validation_alias if isinstance(field.validation_alias, str) else name
            for name, field in cls.model_fields.items()
        }
        return cls(**{keys[name]: value for name, value in flags.items() if value is not None})
