"""The ChatService CRD, the chart's copy of it and its reference doc, generated from the spec
model (`make manifests` writes crds/, charts/rillet/templates/crd.yaml and docs/reference/).

Pydantic's JSON schema becomes a Kubernetes structural schema: references inlined,
`anyOf [X, null]` reduced to X, titles dropped, and whole defaults for nested objects
added, so the API server fills in a complete default spec from `spec: {}`.
"""

from __future__ import annotations

import json
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

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / f"{PLURAL}.{GROUP}.yaml"
REFERENCE_PATH = ROOT / "docs" / "reference" / "chatservice.md"
CHART_CRD_PATH = ROOT / "charts" / "rillet" / "templates" / "crd.yaml"
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
                        _column("SLO met", '.status.conditions[?(@.type=="SLOMet")].status'),
                        _column("Image", ".status.image", priority=1),  # -o wide
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


def _block_if_multiline(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    """A file inside a manifest (the ConfigMap's settings.yaml) reads as itself, not as one
    escaped line; PyYAML still quotes a text that a block cannot hold (trailing spaces)."""
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_PlainDumper.add_representer(str, _block_if_multiline)


def to_yaml(document: Any) -> str:
    return yaml.dump(document, Dumper=_PlainDumper, sort_keys=False, width=100)


def render_crd() -> str:
    header = "# Generated from rillet_operator/spec.py by `make manifests`: do not edit.\n"
    return header + to_yaml(build_crd())


def render_chart_crd() -> str:
    """The chart's copy: installed and upgraded with the release, kept on uninstall so
    that uninstalling the operator never deletes anyone's ChatServices."""
    crd = build_crd()
    crd["metadata"]["annotations"] = {"helm.sh/resource-policy": "keep"}
    body = to_yaml(crd)
    if "{{" in body:
        raise ValueError("the CRD contains '{{', which Helm would read as a template")
    return (
        "{{- if .Values.crds.install }}\n"
        "# Generated from rillet_operator/spec.py by `make manifests`: do not edit.\n"
        f"{body}"
        "{{- end }}\n"
    )


def schema_constraints(node: dict[str, Any]) -> str:
    """A JSON schema node's limits as a table cell (the chart README lists its values' so too)."""
    parts = []
    if "enum" in node:
        parts.append(" \\| ".join(f"`{v}`" for v in node["enum"]))
    for key, word in (("minimum", ">="), ("maximum", "<="), ("maxLength", "length <=")):
        if key in node:
            strict = key == "minimum" and node.get("exclusiveMinimum")
            parts.append(f"{'>' if strict else word} {node[key]}")
    if "pattern" in node:
        escaped = node["pattern"].replace("|", "\\|")  # a bare | would end the table cell
        parts.append(f"matches `{escaped}`")
    return ", ".join(parts)


def _rows(node: dict[str, Any], path: str) -> list[str]:
    rows = []
    for name, child in node.get("properties", {}).items():
        child_path = f"{path}.{name}"
        kind = child.get("type", "")
        if kind == "object" and "properties" in child:
            rules = "; ".join(rule["message"] for rule in child.get("x-kubernetes-validations", []))
            if rules or child.get("description"):
                note = "; ".join(x for x in (child.get("description", ""), rules) if x)
                rows.append(f"| `{child_path}` | object | | {note} |")
            rows += _rows(child, child_path)
            continue
        if kind == "object":
            kind = "map of quantities" if "additionalProperties" in child else kind
        default = child.get("default")
        shown = "" if default is None or isinstance(default, dict) else f"`{json.dumps(default)}`"
        note = "; ".join(x for x in (child.get("description", ""), schema_constraints(child)) if x)
        rows.append(f"| `{child_path}` | {kind} | {shown} | {note} |")
    return rows


def render_reference() -> str:
    """The spec reference in docs/, from the same schema the API server enforces."""
    spec = spec_schema()
    lines = [
        "<!-- Generated from rillet_operator/spec.py by `make manifests`: do not edit. -->",
        "# ChatService reference (`rillet.dev/v1alpha1`)",
        "",
        "Every field of `spec`, its default (filled in by the API server) and its limits.",
        "Cross-field rules are checked by the API server at `kubectl apply`; their messages",
        "are listed on the object they belong to. See [the operator guide](../operator.md).",
        "",
        "| Field | Type | Default | Notes |",
        "|---|---|---|---|",
        *_rows(spec, "spec"),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    generated = (
        (CRD_PATH, render_crd()),
        (CHART_CRD_PATH, render_chart_crd()),
        (REFERENCE_PATH, render_reference()),
    )
    for path, text in generated:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
