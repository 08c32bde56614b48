"""Probes and metrics. /readyz turns false while draining so traffic moves elsewhere."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from rillet_runtime.admission import Admission
from rillet_runtime.metrics import render_latest

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    admission: Admission = request.app.state.admission
    if admission.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    return JSONResponse({"status": "ready", "active_streams": admission.active_streams})


@router.get("/metrics")
async def metrics() -> Response:
    body, content_type = render_latest()
    return Response(body, media_type=content_type)
