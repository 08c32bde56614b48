"""The ChatService CRD, generated from the spec model (`make manifests` writes crds/).

Pydantic's JSON schema becomes a Kubernetes structural schema: references inlined,
`anyOf [X, null]` reduced to X, titles dropped, and whole defaults for nested objects
added, so the API server fills in a complete default spec from `spec: {}`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rillet_operator.spec import (
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    ChatServiceSpec,
    ChatServiceStatus,
    cel,
)

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / f"{PLURAL}.{GROUP}.yaml"
MAX_NAME_LENGTH = 57  # "<name>-redis" must stay a valid 63-character Service name

_DROPPED = {"title", "$defs"}


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**_structural(target, defs), **node}
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"unsupported union in the spec model: {branches}")
        node = {**_structural(branches[0], defs), **node}
    if node.get("default", ...) is None:
        del node["default"]
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]  # the API server prunes or rejects unknown fields
    if "exclusiveMinimum" in node:
        node["minimum"], node["exclusiveMinimum"] = node["exclusiveMinimum"], True
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            value = {name: _structural(child, defs) for name, child in value.items()}
        elif key in {"items", "additionalProperties"} and isinstance(value, dict):
            value = _structural(value, defs)
        out[key] = value
    return out


def _add_object_defaults(node: dict[str, Any], value: Any) -> None:
    """Default every nested object the model defaults, so API-server defaulting reaches it."""
    if not isinstance(value, dict):
        return
    for name, child in node.get("properties", {}).items():
        if name not in value or child.get("type") != "object":
            continue
        if "default" not in child:
            # The whole default object, not `{}`: the API server checks CEL rules against
            # the default as written, before nested defaults would fill it in.
            child["default"] = value[name]
        _add_object_defaults(child, value[name])


def schema_of(model: type[ChatServiceSpec] | type[ChatServiceStatus]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True)
    return _structural(raw, raw.get("$defs", {}))


def spec_schema() -> dict[str, Any]:
    schema = schema_of(ChatServiceSpec)
    defaults = ChatServiceSpec().model_dump(by_alias=True, exclude_none=True, mode="json")
    _add_object_defaults(schema, defaults)
    schema["default"] = defaults
    return schema


def _column(name: str, path: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "jsonPath": path, **extra}


def build_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["chat"],
                "categories": ["rillet"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A streaming LangGraph chat service with latency "
                            "targets as its contract.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": schema_of(ChatServiceStatus),
                            },
                            "x-kubernetes-validations": [
                                cel(
                                    f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
                                    f"metadata.name must be at most {MAX_NAME_LENGTH} "
                                    "characters (children add suffixes such as -redis)",
                                )
                            ],
                        }
                    },
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        _column("Ready", '.status.conditions[?(@.type=="Ready")].status'),
                        _column("Replicas", ".status.readyReplicas", "integer"),
                        _column("TTFT target", ".spec.latencyTargets.ttftP95Ms", "integer"),
                        _column("TTFT p95", ".status.observedLatency.ttftP95Ms", "number"),
                        _column("Age", ".metadata.creationTimestamp", "date"),
                    ],
                }
            ],
        },
    }


class _PlainDumper(yaml.SafeDumper):
    """No &anchors: shared rule lists would otherwise be written as YAML aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(document: Any) -> str:
    return yaml.dump(document, Dumper=_PlainDumper, sort_keys=False, width=100)


def render_crd() -> str:
    header = "# Generated from rillet_operator/spec.py by `make manifests`: do not edit.\n"
    return header + to_yaml(build_crd())


def main() -> None:
    CRD_PATH.parent.mkdir(parents=True, exist_ok=True)
    CRD_PATH.write_text(render_crd())
    print(f"wrote {CRD_PATH}")


if __name__ == "__main__":
    main()
