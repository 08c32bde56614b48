"""The operator's way to the API server: the official `kubernetes` client's dynamic client,
with objects as plain dicts. Its calls block, so each runs in a worker thread, off kopf's
event loop.

A kind is found through API discovery, cached for the life of the process. A kind that is
not served (KEDA's ScaledObject before KEDA is installed) is asked about again on every
use, with one request for its group version, so a CRD installed later is used without a
restart and without throwing the whole discovery cache away each time."""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException, load_incluster_config, load_kube_config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

from rillet_operator.meta import MANAGER

ApiError = ApiException  # every error the API server answers with
REQUEST_TIMEOUT = (10, 60)  # seconds: connect, read


class NotServed(Exception):
    """The API server does not serve this kind: its CRD (KEDA's, say) is not installed."""

    def __init__(self, api_version: str, kind: str) -> None:
        super().__init__(f"{kind} ({api_version}) is not served")
        self.api_version = api_version


def error_status(exc: ApiError) -> dict[str, Any]:
    """The Status object the API server sent with an error, or {} when it sent none."""
    try:
        status = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def error_message(exc: ApiError) -> str:
    return str(error_status(exc).get("message") or f"{exc.status} {exc.reason}")


def _plain(_client: Any, body: Any) -> Any:
    """Responses as the JSON the server sent, not the client's attribute wrappers."""
    return body


def load_configuration() -> Configuration:
    """The pod's ServiceAccount in a pod, the kubeconfig elsewhere (as kopf logs in)."""
    configuration = Configuration()
    try:
        load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except ConfigException:
        load_kube_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration, persist_config=False
        )
    return configuration


class Kube:
    """One API server, as the operator uses it: get, apply, delete, create, status, list."""

    def __init__(self, configuration: Configuration) -> None:
        """Connects (discovery asks for the server's version and API groups): call it in a
        worker thread, as `connect` does."""
        self._api = ApiClient(configuration)
        # Discovery's file cache, which defaults to one file per server shared by every
        # process on the machine, kept private to this client and gone when it closes.
        self._cache_dir = tempfile.TemporaryDirectory(prefix="rillet-discovery-")
        cache_file = str(Path(self._cache_dir.name) / "discovery.json")
        self._dynamic = DynamicClient(self._api, cache_file=cache_file)  # type: ignore[no-untyped-call]
        self._discovery = threading.Lock()  # the discoverer is not thread-safe
        self._not_served: set[str] = set()  # group versions found missing

    @classmethod
    async def connect(cls) -> Kube:
        return await asyncio.to_thread(lambda: cls(load_configuration()))

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]
        self._cache_dir.cleanup()

    def _served(self, api_version: str) -> bool:
        path = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
        try:
            self._request("get", path, serialize=False)
        except NotFoundError:
            return False
        return True

    def _resource(self, api_version: str, kind: str) -> Any:
        """The kind as discovery describes it; NotServed when the server does not serve it.
        On a miss the library refreshes its whole cache: a group version already found
        missing is first checked with one request of its own."""
        if api_version in self._not_served and not self._served(api_version):
            raise NotServed(api_version, kind)
        try:
            with self._discovery:
                resource = self._dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            self._not_served.add(api_version)
            raise NotServed(api_version, kind) from None
        self._not_served.discard(api_version)
        return resource

    def _request(self, method: str, path: str, **params: Any) -> Any:
        return self._dynamic.request(
            method, path, serializer=_plain, _request_timeout=REQUEST_TIMEOUT, **params
        )

    def _call(
        self, verb: str, api_version: str, kind: str, subresource: str = "", **params: Any
    ) -> Any:
        """One request through the dynamic client; blocks."""
        resource = self._resource(api_version, kind)
        target = resource.subresources[subresource] if subresource else resource
        call = getattr(self._dynamic, verb)
        return call(target, serializer=_plain, _request_timeout=REQUEST_TIMEOUT, **params)

    def _get(self, api_version: str, kind: str, name: str, namespace: str) -> Any:
        try:
            return self._call("get", api_version, kind, name=name, namespace=namespace)
        except (NotServed, NotFoundError):  # a 404: the object, or its API, is not there
            return None

    def _apply(self, manifest: dict[str, Any]) -> Any:
        api_version, kind = manifest["apiVersion"], manifest["kind"]
        try:
            return self._call(
                "patch",
                api_version,
                kind,
                body=manifest,
                content_type="application/apply-patch+yaml",
                field_manager=MANAGER,
                force_conflicts=True,
            )
        except NotFoundError:  # apply creates: a 404 means the API went away since discovery
            raise NotServed(api_version, kind) from None

    async def get(
        self, api_version: str, kind: str, name: str, namespace: str
    ) -> dict[str, Any] | None:
        """The object, or None when it or its API is not there."""
        found: dict[str, Any] | None = await asyncio.to_thread(
            self._get, api_version, kind, name, namespace
        )
        return found

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply as the operator's field manager, taking over conflicting
        fields; NotServed when the manifest's API is not served."""
        applied: dict[str, Any] = await asyncio.to_thread(self._apply, manifest)
        return applied

    async def delete(self, api_version: str, kind: str, name: str, namespace: str) -> None:
        await asyncio.to_thread(
            self._call, "delete", api_version, kind, name=name, namespace=namespace
        )

    async def create(self, manifest: dict[str, Any]) -> None:
        await asyncio.to_thread(
            self._call, "create", manifest["apiVersion"], manifest["kind"], body=manifest
        )

    async def patch_status(
        self, api_version: str, kind: str, name: str, namespace: str, status: dict[str, Any]
    ) -> None:
        """A merge patch on the status subresource: only the fields given change."""
        await asyncio.to_thread(
            self._call,
            "patch",
            api_version,
            kind,
            "status",
            body={"status": status},
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
        )

    async def list_one(self, api_version: str, kind: str, namespace: str | None) -> None:
        """List at most one object, to learn whether the kind can be listed there:
        NotServed when it is not served, ApiError when listing is refused."""
        await asyncio.to_thread(self._call, "get", api_version, kind, namespace=namespace, limit=1)
