"""The floor page: one seat per box, updated live."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .deps import TEMPLATES, Settings

router = APIRouter(tags=["floor"])


@router.get("/", include_in_schema=False)
def floor(request: Request, settings: Settings) -> Response:
    """Render the floor page (data arrives from /api/stream)."""
    response = TEMPLATES.TemplateResponse(
        request, "floor.html",
        {"site": settings.site, "user": request.state.user, "csrf": request.state.csrf})
    response.headers["cache-control"] = "no-store"
    return response
