"""Probes (and LangGraph's `/ok`), the only routes that need no principal. /readyz turns
false while draining so traffic moves elsewhere. /metrics is not here: gunicorn's master
serves it on a port of its own (serving/gunicorn_conf.py), so the API's port exposes no
metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from rillet_runtime.admission import Admission

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ok")
async def ok() -> dict[str, bool]:
    """LangGraph's liveness probe, for its clients and UIs."""
    return {"ok": True}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    admission: Admission = request.app.state.admission
    if admission.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    return JSONResponse({"status": "ready", "active_streams": admission.active_streams})
