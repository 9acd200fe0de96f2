"""Shared route dependencies: request-scoped database, settings, templates."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

import sqlite_utils
from fastapi import Depends, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from pydantic import BeforeValidator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from miroir.numbers import WHOLE_RULE, decimal_number, whole_number

from .. import db as store
from .. import i18n
from ..access import User, load_user
from ..auth import HEAD_AS_GET
from ..settings import DashboardSettings

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))


def _datetime(ts: float | None) -> str:
    """UTC date and time of a Unix timestamp, named so (pages localise it client-side when they can).

    A stored value no calendar date can show (infinite, out of range: a database written before
    the API bounded timestamps) reads "?" rather than failing the whole page.
    """
    if ts is None:
        return "—"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
    except (OverflowError, OSError, ValueError, TypeError):
        return "?"


TEMPLATES.env.filters["datetime"] = _datetime


@pass_context
def _decimal(context: Any, value: float, fmt: str = "%.1f") -> str:
    """``value`` written by ``fmt`` with the page language's decimal mark (a comma in French)."""
    text = fmt % value
    return text if context.get("lang") == "en" else text.replace(".", ",")


TEMPLATES.env.filters["decimal"] = _decimal


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _text(raw: bytes) -> str:
    """A body echoed in a 422 as text, a byte that is not UTF-8 as U+FFFD."""
    return raw.decode("utf-8", "replace")


async def validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 answer, with a non-finite number echoed from the request (``NaN``,
    ``Infinity``: JSON has none) and a body that is not UTF-8 (a Latin-1 form sent to the JSON
    API) written as text instead of failing the answer with a 500."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    encoded = jsonable_encoder(errors, custom_encoder={bytes: _text})
    return JSONResponse(status_code=422, content={"detail": _finite(encoded)})


ERROR_KEYS = {400: "error.bad", 403: "error.forbidden", 404: "error.not_found",
              405: "error.method", 409: "error.conflict", 413: "error.too_large", 422: "error.invalid"}
"""The translated sentence of each error status a page can meet (``error.other`` otherwise)."""


def _wants_page(request: Request) -> bool:
    """A browser asking for a page or sending a page's form, not a client of the JSON API."""
    return not request.url.path.startswith("/api/") \
        and "text/html" in request.headers.get("accept", "")


def _way_back(request: Request) -> str:
    """The page a failed form was on (its action's parent, if that is a page), else home."""
    parent = request.url.path.rstrip("/").rsplit("/", 1)[0]
    if request.method != "GET" and parent:
        scope = {"type": "http", "path": parent, "method": "GET"}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.routes):
            return parent
    return "/"


def _back(request: Request) -> str:
    """The way back of an error page: :func:`_way_back`, with the pagings of the form's address
    (the agent page's forms carry them)."""
    return page_address(_way_back(request), request.url.query)


async def page_error(request: Request, exc: Exception) -> Response:
    """An error as a page in the user's language with a way back for a browser (forms and pages
    answered raw JSON), as JSON for the API."""
    if isinstance(exc, RequestValidationError):
        if not _wants_page(request):
            return await validation_error(request, exc)
        status, headers = 422, None
        detail = ", ".join(sorted({str(e["loc"][-1]) for e in exc.errors() if e.get("loc")}))
    else:
        assert isinstance(exc, StarletteHTTPException)
        if not _wants_page(request) or exc.status_code < 400:
            return await http_exception_handler(request, exc)
        status, headers = exc.status_code, exc.headers
        detail = exc.detail if isinstance(exc.detail, str) else ""
    lang = getattr(request.state, "lang", "fr") or "fr"
    response = render(request, "error.html", {"status": status,
                                              "detail": i18n.detail(lang, detail),
                                              "message": ERROR_KEYS.get(status, "error.other"),
                                              "back": _back(request)}, status)
    response.headers.update(headers or {})
    return response


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
    user = load_user(db, request.state.user)
    return replace(user, head=True) if request.scope.get(HEAD_AS_GET) else user


CurrentUser = Annotated[User, Depends(get_user)]


def require_role(user: User, *roles: str) -> None:
    """404 unless the user has one of ``roles`` (nothing to see here, not even a 403)."""
    if user.role not in roles:
        raise HTTPException(status_code=404, detail="not found")


def _plain_whole(value: Any) -> Any:
    """Text as :func:`miroir.numbers.whole_number` reads it (pydantic's own reading takes
    ``1_000``, `` 12`` and ``+12``, and JSON's ``true`` for 1); the 422 names the field by its
    place."""
    if isinstance(value, bool):
        raise ValueError(f"the value must be {WHOLE_RULE}, not true or false")
    return whole_number(value, "the value") if isinstance(value, str) else value


def _plain_decimal(value: Any) -> Any:
    """Text as :func:`miroir.numbers.decimal_number` reads it, signed (a JSON number as is)."""
    return decimal_number(value, "the value", signed=True) if isinstance(value, str) else value


PlainWhole = BeforeValidator(_plain_whole)
"""Put in the ``Annotated`` of an ``int`` query, form or JSON field: ASCII digits only."""
PlainDecimal = BeforeValidator(_plain_decimal)
"""Put in the ``Annotated`` of a ``float`` query, form or JSON field: ASCII digits, one ``.``, a
``-`` (a JSON number is one already)."""


PAGE_PARAMS = ("calls_before", "audit_before", "flags_before", "page")
"""What of a page's address its language switch keeps: where its pagings are (whole numbers):
an agent page's calls, audit and flags lists, the campaigns page's ``page``."""
_WHOLE = re.compile(r"[0-9]{1,19}")


def page_address(path: str, query: str) -> str:
    """``path`` with the first whole-number value of each of :data:`PAGE_PARAMS` in ``query``,
    nothing else of it."""
    kept: dict[str, str] = {}
    for key, value in parse_qsl(query):
        if key in PAGE_PARAMS and key not in kept and _WHOLE.fullmatch(value):
            kept[key] = value
    ordered = [(k, kept[k]) for k in PAGE_PARAMS if k in kept]
    return path + ("?" + urlencode(ordered) if ordered else "")


def _ends_in_s(request: Request) -> float | None:
    """Seconds until the request's session ends if its user does nothing more (None: no
    session, or not known)."""
    end_ts = getattr(getattr(request.state, "session", None), "end_ts", 0.0)
    return round(max(0.0, end_ts - time.time()), 1) if end_ts else None


def render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> Response:
    """Render a page with the user's language, CSRF token and navigation."""
    lang = getattr(request.state, "lang", "fr") or "fr"
    # a form's answer (a refused form, an error page) stands for the page the form was on: its
    # links and its language switch go there, never to the form's POST-only address
    path = request.url.path if request.method == "GET" else _way_back(request)
    ctx = {"lang": lang, "t": i18n.translator(lang), "csrf": getattr(request.state, "csrf", ""),
           "user": getattr(request.state, "user", None),
           "role": getattr(request.state, "role", None), "path": path,
           "here": page_address(path, request.url.query),
           "i18n_json": i18n.client_json(lang),
           "idle_s": request.app.state.settings.session_idle_s,
           "ends_in_s": _ends_in_s(request), **context}
    response = TEMPLATES.TemplateResponse(request, template, ctx, status_code=status)
    response.headers["cache-control"] = "no-store"
    return response
