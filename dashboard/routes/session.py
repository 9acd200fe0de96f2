"""Login (password, then TOTP for admins and supervisors), logout, language switch, and the
session's time left as the open pages read it."""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from .. import auth, i18n, totp
from .deps import Db, Settings, page_address, render

router = APIRouter(tags=["session"])


def _login_page(request: Request, secure: bool, error: str | None, status: int,
                ended: bool = False) -> Response:
    csrf = secrets.token_urlsafe(32)
    request.state.csrf = csrf
    response = render(request, "login.html", {"error": error, "ended": ended, "bare": True},
                      status)
    auth.set_cookie(response, auth.csrf_cookie_name(secure), csrf, secure)
    return response


def _client(request: Request, settings: Settings) -> str:
    return auth.client_address(request.client.host if request.client else None,
                               request.headers.get("x-forwarded-for"), settings.trusted_proxies)


def _reserve(request: Request, db: Db, settings: Settings, username: str, addr: str,
             kind: str = "password") -> int | None:
    """Record the attempt before its check (None: throttled), see :func:`auth.reserve_attempt`."""
    device = request.cookies.get(auth.device_cookie_name(settings.secure_cookies))
    return auth.reserve_attempt(
        db, username, addr, window_s=settings.login_window_s,
        max_account=settings.login_max_failures_account,
        max_addr=settings.login_max_failures_addr,
        max_account_total=settings.login_max_failures_account_total,
        known_device=auth.known_device(db, username, device) is not None,
        max_codes=settings.login_max_failures_account if kind == "code" else None, kind=kind)


def _start(response: Response, request: Request, db: Db, settings: Settings, username: str,
           stage: str = "ok", pending: str | None = None) -> Response:
    """Rotate: end the old session (if any) and set a brand-new session cookie."""
    secure = settings.secure_cookies
    auth.delete_session(db, request.cookies.get(auth.session_cookie_name(secure)))
    token, _ = auth.create_session(db, username, settings.session_idle_s, stage=stage,
                                   pending_secret=pending)
    auth.set_cookie(response, auth.session_cookie_name(secure), token, secure)
    auth.clear_cookie(response, auth.csrf_cookie_name(secure), secure)
    if stage == "ok":  # a completed login: this browser is known to the account (again)
        device = request.cookies.get(auth.device_cookie_name(secure))
        auth.set_cookie(response, auth.device_cookie_name(secure),
                        auth.remember_device(db, username, device), secure, int(auth.DEVICE_MAX_AGE_S))
    return response


@router.get("/login", include_in_schema=False)
def login_form(request: Request, settings: Settings) -> Response:
    """The login form, with a fresh double-submit CSRF token; with ``?ended=1`` (a page or a
    script of the dashboard found its session over) it says the session ended."""
    return _login_page(request, settings.secure_cookies, None, 200,
                       ended=request.query_params.get("ended") == "1")


@router.post("/login", include_in_schema=False)
def login(
    request: Request,
    settings: Settings,
    db: Db,
    username: Annotated[str, Form(max_length=auth.USERNAME_MAX_CHARS)],
    password: Annotated[str, Form(max_length=1024)],
    csrf: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """CSRF, throttling, credentials; then a new session (TOTP pending for admins/supervisors)."""
    secure = settings.secure_cookies
    tr = i18n.translator("fr")
    if not auth.tokens_match(csrf, request.cookies.get(auth.csrf_cookie_name(secure))):
        return _login_page(request, secure, tr("login.expired"), 403)
    addr = _client(request, settings)
    attempt = _reserve(request, db, settings, username, addr)
    if attempt is None:
        r = _login_page(request, secure, tr("login.throttled"), 429)
        r.headers["retry-after"] = str(int(settings.login_window_s))
        return r
    gate: auth.CheckGate = request.app.state.password_checks
    with gate.turn() as checking:
        role = auth.authenticate(db, username, password) if checking else None
    if not checking:  # nothing was checked: the attempt does not count
        auth.cancel_attempt(db, attempt)
        r = _login_page(request, secure, tr("login.busy"), 503)
        r.headers["retry-after"] = "1"
        return r
    code_next = role is not None and settings.totp_required and role in auth.TOTP_ROLES
    auth.settle_attempt(db, attempt, username, role is not None, clear=not code_next)
    if role is None:
        return _login_page(request, secure, tr("login.wrong"), 401)
    if settings.totp_required and role in auth.TOTP_ROLES:
        row = db.conn.execute("SELECT totp_secret FROM users WHERE username = ?",
                              (username,)).fetchone()
        if row and row[0]:
            return _start(RedirectResponse("/login/totp", status_code=303), request, db,
                          settings, username, stage="totp")
        return _start(RedirectResponse("/totp/setup", status_code=303), request, db, settings,
                      username, stage="enroll", pending=totp.new_secret())
    return _start(RedirectResponse("/", status_code=303), request, db, settings, username)


def _past_second_factor(request: Request) -> Response | None:
    """Home for a session already past its second factor (the browser's Back after enrolling, a
    bookmark): its pages showed an enrolment with an empty key, or the code form, for nothing."""
    if request.state.session.stage == "ok":
        return RedirectResponse("/", status_code=303)
    return None


@router.get("/login/totp", include_in_schema=False)
def totp_form(request: Request) -> Response:
    """Second step: the one-time code."""
    if (home := _past_second_factor(request)) is not None:
        return home
    return render(request, "totp.html", {"bare": True, "setup": False, "error": None})


def _check_code(request: Request, db: Db, settings: Settings, secret: str, code: str,
                enrol: bool) -> Response:
    username = request.state.user
    addr = _client(request, settings)
    tr = i18n.translator(request.state.lang)
    ctx = {"bare": True, "setup": enrol, "secret": secret,
           "uri": totp.provisioning_uri(secret, username) if enrol else None}
    attempt = _reserve(request, db, settings, username, addr, kind="code")
    if attempt is None:
        return render(request, "totp.html", {**ctx, "error": tr("login.throttled")}, 429)
    last = db.conn.execute("SELECT totp_last_step FROM users WHERE username = ?",
                           (username,)).fetchone()[0]
    step = totp.verify(secret, code, int(last or 0)) if secret else None
    if step is not None:
        # One UPDATE decides, whatever ran since the checks above: an enrolment stores its secret
        # only on an account still without one (a stale enrolment session must not replace the
        # owner's second factor); a code is taken only if its step is newer than the last one
        # taken with the same secret (the same code sent twice at once opens one session).
        with db.conn:
            if enrol:
                taken = db.conn.execute(
                    "UPDATE users SET totp_secret = ?, totp_last_step = ? "
                    "WHERE username = ? AND totp_secret IS NULL", (secret, step, username)).rowcount
                if taken:  # the account's other enrolment sessions hold secrets of no use now
                    db.conn.execute("DELETE FROM sessions WHERE username = ? AND stage = 'enroll'",
                                    (username,))
            else:
                taken = db.conn.execute(
                    "UPDATE users SET totp_last_step = ? WHERE username = ? AND totp_secret = ? "
                    "AND coalesce(totp_last_step, 0) < ?", (step, username, secret, step)).rowcount
        if not taken and enrol:
            auth.cancel_attempt(db, attempt)
            return _end(_login_page(request, settings.secure_cookies, tr("totp.enrolled"), 409),
                        request, db, settings)
        if not taken:
            step = None
    auth.settle_attempt(db, attempt, username, step is not None)
    if step is None:
        return render(request, "totp.html", {**ctx, "error": tr("totp.wrong")}, 401)
    return _start(RedirectResponse("/", status_code=303), request, db, settings, username)


@router.post("/login/totp", include_in_schema=False)
def totp_submit(request: Request, db: Db, settings: Settings,
                code: Annotated[str, Form(max_length=16)] = "") -> Response:
    """Check the code; on success rotate to a full session."""
    if (home := _past_second_factor(request)) is not None:
        return home
    row = db.conn.execute("SELECT totp_secret FROM users WHERE username = ?",
                          (request.state.user,)).fetchone()
    return _check_code(request, db, settings, row[0] or "", code, enrol=False)


@router.get("/totp/setup", include_in_schema=False)
def totp_setup_form(request: Request) -> Response:
    """Enrolment: the secret to add to an authenticator app, then one code to confirm."""
    if (home := _past_second_factor(request)) is not None:
        return home
    secret = request.state.session.pending_secret or ""
    return render(request, "totp.html", {
        "bare": True,
        "setup": True, "secret": secret, "error": None,
        "uri": totp.provisioning_uri(secret, request.state.user)})


@router.post("/totp/setup", include_in_schema=False)
def totp_setup_submit(request: Request, db: Db, settings: Settings,
                      code: Annotated[str, Form(max_length=16)] = "") -> Response:
    """Confirm enrolment with a first code; store the secret; rotate to a full session."""
    if (home := _past_second_factor(request)) is not None:
        return home
    secret = request.state.session.pending_secret or ""
    return _check_code(request, db, settings, secret, code, enrol=True)


def _end(response: Response, request: Request, db: Db, settings: Settings) -> Response:
    """End the request's session and clear its cookie."""
    secure = settings.secure_cookies
    auth.delete_session(db, request.cookies.get(auth.session_cookie_name(secure)))
    auth.clear_cookie(response, auth.session_cookie_name(secure), secure)
    return response


@router.post("/logout", include_in_schema=False)
def logout(request: Request, settings: Settings, db: Db) -> Response:
    """End the session (the middleware checked the session's CSRF token)."""
    return _end(RedirectResponse("/login", status_code=303), request, db, settings)


def safe_next(target: str | None, default: str = "/") -> str:
    """A local path to go back to (never another origin)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


@router.post("/lang", include_in_schema=False)
def set_lang(request: Request, db: Db, lang: Annotated[str, Form(max_length=4)],
             next: Annotated[str, Form(max_length=512)] = "/") -> Response:
    """Switch the user's interface language (fr or en), back to the page with its pagings."""
    if lang in i18n.LANGS:
        with db.conn:
            db.conn.execute("UPDATE users SET lang = ? WHERE username = ?",
                            (lang, request.state.user))
    path, _, query = safe_next(next).partition("?")
    return RedirectResponse(page_address(path, query.partition("#")[0]), status_code=303)


@router.get("/api/session", tags=["session"])
def session_left(request: Request, db: Db, settings: Settings) -> dict[str, Any]:
    """When the session ends if its user does nothing more (``ends_in_s``: its idle timeout
    ``MIROIR_DASH_SESSION_IDLE_S``, or its 12 h lifetime if sooner); a read, so not an act that
    extends it. An open page asks it to go to the login page once its session is over."""
    token = request.cookies.get(auth.session_cookie_name(settings.secure_cookies))
    end_ts = auth.session_end_ts(db, token, settings.session_idle_s)
    left_s = 0.0 if end_ts is None else max(0.0, end_ts - time.time())
    return {"ends_in_s": round(left_s, 1), "idle_s": settings.session_idle_s}


@router.post("/api/session/activity", status_code=204, tags=["session"])
def session_activity() -> Response:
    """A key or a click on an open page (its script reports them, at most once a minute): a
    state change, so the session's idle timer starts again (the middleware did it)."""
    return Response(status_code=204)
