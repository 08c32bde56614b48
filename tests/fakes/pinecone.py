"""A local server speaking Pinecone's data-plane REST API (the subset the SDK's AsyncIndex
uses for vectors: upsert, query, fetch, delete, list, describe_index_stats), so the real
`pinecone` SDK can be tested without Pinecone's service. Exact cosine search in memory.

The wire format follows Pinecone's public API reference: camelCase JSON, the `Api-Key`
header, ids listed by prefix with a pagination token, namespaces with "" as default.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.processes import free_port

PAGE = 100


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}, "status": status}, status)


def _matches(metadata: dict[str, Any], where: dict[str, Any] | None) -> bool:
    for key, condition in (where or {}).items():
        if key == "$and":
            if not all(_matches(metadata, part) for part in condition):
                return False
            continue
        if not isinstance(condition, dict):
            condition = {"$eq": condition}
        for op, value in condition.items():
            if op == "$eq" and metadata.get(key) != value:
                return False
            if op == "$in" and metadata.get(key) not in value:
                return False
    return True


class FakePinecone:
    def __init__(self, dimension: int, api_key: str) -> None:
        self.dimension = dimension
        self.api_key = api_key
        self.namespaces: dict[str, dict[str, tuple[np.ndarray[Any, Any], dict[str, Any]]]] = {}
        self.requests: list[str] = []

    def app(self) -> Starlette:
        async def guarded(request: Request) -> JSONResponse:
            self.requests.append(request.url.path)
            if request.headers.get("api-key") != self.api_key:
                return _error(401, "UNAUTHENTICATED", "Invalid API Key")
            body = await request.json() if request.method == "POST" else {}
            handler = {
                "/vectors/upsert": self.upsert,
                "/query": self.query,
                "/vectors/fetch": self.fetch,
                "/vectors/delete": self.delete,
                "/vectors/list": self.list,
                "/describe_index_stats": self.stats,
            }[request.url.path]
            return handler(request, body)

        paths = ["/vectors/upsert", "/query", "/vectors/delete", "/describe_index_stats"]
        routes = [Route(p, guarded, methods=["POST"]) for p in paths]
        routes += [Route(p, guarded, methods=["GET"]) for p in ("/vectors/fetch", "/vectors/list")]
        return Starlette(routes=routes)

    def _space(self, namespace: str) -> dict[str, tuple[np.ndarray[Any, Any], dict[str, Any]]]:
        return self.namespaces.setdefault(namespace, {})

    def upsert(self, _: Request, body: dict[str, Any]) -> JSONResponse:
        space = self._space(body.get("namespace", ""))
        for vector in body["vectors"]:
            values = np.asarray(vector["values"], dtype=np.float64)
            if len(values) != self.dimension:
                return _error(
                    400,
                    "INVALID_ARGUMENT",
                    f"Vector dimension {len(values)} does not match the dimension of the "
                    f"index {self.dimension}",
                )
            space[vector["id"]] = (values, vector.get("metadata") or {})
        return JSONResponse({"upsertedCount": len(body["vectors"])})

    def query(self, _: Request, body: dict[str, Any]) -> JSONResponse:
        space = self._space(body.get("namespace", ""))
        query = np.asarray(body["vector"], dtype=np.float64)
        if len(query) != self.dimension:
            return _error(400, "INVALID_ARGUMENT", "query vector dimension mismatch")
        scored = []
        for id_, (values, metadata) in space.items():
            if _matches(metadata, body.get("filter")):
                cosine = float(values @ query / (np.linalg.norm(values) * np.linalg.norm(query)))
                scored.append((cosine, id_, metadata))
        scored.sort(key=lambda item: -item[0])
        matches = [
            {
                "id": id_,
                "score": score,
                "values": [],
                **({"metadata": metadata} if body.get("includeMetadata") else {}),
            }
            for score, id_, metadata in scored[: body["topK"]]
        ]
        return JSONResponse(
            {"matches": matches, "namespace": body.get("namespace", ""), "usage": {"readUnits": 5}}
        )

    def fetch(self, request: Request, _: dict[str, Any]) -> JSONResponse:
        namespace = request.query_params.get("namespace", "")
        space = self._space(namespace)
        found = {
            id_: {"id": id_, "values": space[id_][0].tolist(), "metadata": space[id_][1]}
            for id_ in request.query_params.getlist("ids")
            if id_ in space
        }
        return JSONResponse({"vectors": found, "namespace": namespace, "usage": {"readUnits": 1}})

    def delete(self, _: Request, body: dict[str, Any]) -> JSONResponse:
        space = self._space(body.get("namespace", ""))
        if body.get("deleteAll"):
            space.clear()
        for id_ in body.get("ids", []):
            space.pop(id_, None)
        return JSONResponse({})

    def list(self, request: Request, _: dict[str, Any]) -> JSONResponse:
        namespace = request.query_params.get("namespace", "")
        prefix = request.query_params.get("prefix", "")
        limit = int(request.query_params.get("limit") or PAGE)
        start = int(request.query_params.get("paginationToken") or 0)
        ids = sorted(i for i in self._space(namespace) if i.startswith(prefix))
        page = ids[start : start + limit]
        more = start + limit < len(ids)
        return JSONResponse(
            {
                "vectors": [{"id": i} for i in page],
                "pagination": {"next": str(start + limit)} if more else None,
                "namespace": namespace,
                "usage": {"readUnits": 1},
            }
        )

    def stats(self, _: Request, __: dict[str, Any]) -> JSONResponse:
        namespaces = {
            (name or "__default__"): {"vectorCount": len(space)}
            for name, space in self.namespaces.items()
        }
        return JSONResponse(
            {
                "namespaces": namespaces,
                "dimension": self.dimension,
                "indexFullness": 0.0,
                "totalVectorCount": sum(len(s) for s in self.namespaces.values()),
            }
        )


@contextlib.contextmanager
def fake_pinecone(
    dimension: int, api_key: str = "pc-test-key"
) -> Iterator[tuple[str, FakePinecone]]:
    """(host URL, state) of a fake index served on a loopback port for the block's length."""
    fake = FakePinecone(dimension, api_key)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(fake.app(), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the fake Pinecone server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)
