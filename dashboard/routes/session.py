"""Login and logout (form posts protected by CSRF tokens)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from .. import auth
from .deps import TEMPLATES, Db, Settings

router = APIRouter(tags=["session"])


def _login_page(request: Request, secure: bool, error: str | None, status: int) -> Response:
    csrf = secrets.token_urlsafe(32)
    response = TEMPLATES.TemplateResponse(
        request, "login.html", {"csrf": csrf, "error": error}, status_code=status)
    auth.set_cookie(response, auth.csrf_cookie_name(secure), csrf, secure)
    response.headers["cache-control"] = "no-store"
    return response


@router.get("/login", include_in_schema=False)
def login_form(request: Request, settings: Settings) -> Response:
    """The login form, with a fresh double-submit CSRF token."""
    return _login_page(request, settings.secure_cookies, None, 200)


@router.post("/login", include_in_schema=False)
def login(
    request: Request,
    settings: Settings,
    db: Db,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    csrf: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """Check the CSRF token and the credentials; on success start a session and go to /."""
    secure = settings.secure_cookies
    if not auth.tokens_match(csrf, request.cookies.get(auth.csrf_cookie_name(secure))):
        return _login_page(request, secure, "Session expirée, veuillez réessayer.", 403)
    role = auth.authenticate(db, username, password)
    if role is None:
        return _login_page(request, secure, "Identifiant ou mot de passe incorrect.", 401)
    token, _ = auth.create_session(db, username, settings.session_idle_s)
    response = RedirectResponse("/", status_code=303)
    auth.set_cookie(response, auth.session_cookie_name(secure), token, secure)
    auth.clear_cookie(response, auth.csrf_cookie_name(secure), secure)
    return response


@router.post("/logout", include_in_schema=False)
def logout(
    request: Request,
    settings: Settings,
    db: Db,
    csrf: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """End the session (needs the session's CSRF token)."""
    secure = settings.secure_cookies
    if not auth.tokens_match(csrf, getattr(request.state, "csrf", None)):
        return Response("CSRF token missing or wrong", status_code=403, media_type="text/plain")
    auth.delete_session(db, request.cookies.get(auth.session_cookie_name(secure)))
    response = RedirectResponse("/login", status_code=303)
    auth.clear_cookie(response, auth.session_cookie_name(secure), secure)
    return response
