"""Shared route dependencies: request-scoped database, settings, templates."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import sqlite_utils
from fastapi import Depends, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.templating import Jinja2Templates

from .. import db as store
from .. import i18n
from ..access import User, load_user
from ..settings import DashboardSettings

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))


def _datetime(ts: float | None) -> str:
    """UTC date and time of a Unix timestamp (pages localise it client-side when they can).

    A stored value no calendar date can show (infinite, out of range: a database written before
    the API bounded timestamps) reads "?" rather than failing the whole page.
    """
    if ts is None:
        return "—"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))
    except (OverflowError, OSError, ValueError, TypeError):
        return "?"


TEMPLATES.env.filters["datetime"] = _datetime


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


async def validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 answer, with a non-finite number echoed from the request (``NaN``,
    ``Infinity``: JSON has none) written as text instead of failing the answer with a 500."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse(status_code=422, content={"detail": _finite(jsonable_encoder(errors))})


def get_settings(request: Request) -> DashboardSettings:
    """The app's settings."""
    settings: DashboardSettings = request.app.state.settings
    return settings


def get_db(request: Request) -> Iterator[sqlite_utils.Database]:
    """A database connection for the duration of one request."""
    db = store.open_db(request.app.state.settings.db_path)
    try:
        yield db
    finally:
        db.conn.close()


Db = Annotated[sqlite_utils.Database, Depends(get_db)]
Settings = Annotated[DashboardSettings, Depends(get_settings)]


def get_user(request: Request, db: Db) -> User:
    """The logged-in user with the scope of its role."""
    return load_user(db, request.state.user)


CurrentUser = Annotated[User, Depends(get_user)]


def require_role(user: User, *roles: str) -> None:
    """404 unless the user has one of ``roles`` (nothing to see here, not even a 403)."""
    if user.role not in roles:
        raise HTTPException(status_code=404, detail="not found")


def render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> Response:
    """Render a page with the user's language, CSRF token and navigation."""
    lang = getattr(request.state, "lang", "fr") or "fr"
    ctx = {"lang": lang, "t": i18n.translator(lang), "csrf": getattr(request.state, "csrf", ""),
           "user": getattr(request.state, "user", None),
           "role": getattr(request.state, "role", None), "path": request.url.path,
           "i18n_json": i18n.client_json(lang), **context}
    response = TEMPLATES.TemplateResponse(request, template, ctx, status_code=status)
    response.headers["cache-control"] = "no-store"
    return response
