"""What every child shares: the ChatService as the builders see it, its labels, and the
owner reference that makes deleting it garbage-collect the children."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rillet_operator.spec import GROUP, KIND, VERSION, ChatServiceSpec
from rillet_runtime import version

MANAGER = "rillet-operator"
SERVICE_PORT = 80


@dataclass(frozen=True)
class ChatService:
    """What the builders need of a ChatService object."""

    name: str
    namespace: str
    uid: str
    spec: ChatServiceSpec
    # Streams per pod as adapted from observed latency, and the configured target it was
    # adapted from (a changed spec starts adaptation over).
    adapted_target: int | None = None
    adapted_from: int | None = None
    # The operator's own image (its setting), which pods run unless spec.image names one;
    # never stored in the object, so an upgraded operator rolls them onto its version.
    default_image: str = field(default_factory=version.default_image)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ChatService:
        meta = body["metadata"]
        scaling = (body.get("status") or {}).get("autoscaling") or {}
        return cls(
            meta["name"],
            meta["namespace"],
            meta["uid"],
            ChatServiceSpec.model_validate(body.get("spec") or {}),
            scaling.get("streamsPerPodTarget"),
            scaling.get("adaptedFrom"),
        )

    @property
    def image(self) -> str:
        return self.spec.image or self.default_image

    @property
    def endpoint(self) -> str:
        return f"http://{self.name}.{self.namespace}.svc:{SERVICE_PORT}"


def labels(cs: ChatService, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "rillet",
        "app.kubernetes.io/instance": cs.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGER,
    }


def selector(cs: ChatService, component: str = "chat") -> dict[str, str]:
    return {k: v for k, v in labels(cs, component).items() if k != "app.kubernetes.io/managed-by"}


def selector_string(cs: ChatService) -> str:
    return ",".join(f"{k}={v}" for k, v in selector(cs).items())


def metadata(cs: ChatService, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": cs.namespace,
        "labels": labels(cs, component),
        "ownerReferences": [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": cs.name,
                "uid": cs.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
