"""`/openapi.json` and `/docs`, only when `server.docs` is on: off by default, because the
schema maps every route and field for whoever asks. When on, they need a principal like
every other route but the probes (a browser reaches /docs through a gateway that sets the
credentials; tools fetch /openapi.json with a key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from rillet_runtime.api.deps import get_principal

router = APIRouter(include_in_schema=False, dependencies=[Depends(get_principal)])


@router.get("/openapi.json")
async def openapi(request: Request) -> dict[str, Any]:
    return request.app.openapi()  # type: ignore[no-any-return]


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} API")
