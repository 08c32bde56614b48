"""`rillet render`: the operator's children for ChatService manifests, without a cluster."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from rillet_operator.builders import children
from rillet_operator.crd import to_yaml
from rillet_operator.meta import ChatService
from rillet_operator.spec import GROUP, KIND

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"
PLACEHOLDER_PASSWORD = "generated-by-the-operator"


def render_manifests(
    documents: list[Any], prometheus_url: str | None = None, default_image: str | None = None
) -> str:
    """`default_image`: the operator's, for ChatServices without spec.image; None: this
    version's."""
    rendered: list[dict[str, Any]] = []
    for document in documents:
        if not document:
            continue
        if document.get("kind") != KIND or not str(document.get("apiVersion", "")).startswith(
            f"{GROUP}/"
        ):
            raise ValueError(f"not a {KIND}: {document.get('apiVersion')}/{document.get('kind')}")
        meta = document.get("metadata") or {}
        if "name" not in meta:
            raise ValueError("metadata.name is required")
        body = {
            "metadata": {
                "name": meta["name"],
                "namespace": meta.get("namespace", "default"),
                "uid": PLACEHOLDER_UID,
            },
            "spec": document.get("spec") or {},
        }
        try:
            cs = ChatService.from_body(body)
        except ValidationError as exc:
            raise ValueError(_readable(exc)) from None
        if default_image:
            cs = replace(cs, default_image=default_image)
        rendered += children(cs, PLACEHOLDER_PASSWORD, prometheus_url)
    return "".join(f"---\n{to_yaml(manifest)}" for manifest in rendered)


def _readable(exc: ValidationError) -> str:
    return "; ".join(
        f"spec.{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
    )
