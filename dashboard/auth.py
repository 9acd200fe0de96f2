"""Users (argon2id), server-side sessions, CSRF tokens and the deny-by-default middleware."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import db as store

log = logging.getLogger(__name__)

SESSION_MAX_AGE_S = 12 * 3600
"""Absolute lifetime of a session, whatever the activity (one shift)."""
PUBLIC_PATHS = frozenset({"/login", "/healthz"})
PUBLIC_PREFIXES = ("/static/",)
SECURITY_HEADERS = {
    "content-security-policy": ("default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                                "form-action 'self'; object-src 'none'"),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}

_hasher: Any = None


def _ph() -> Any:
    global _hasher
    if _hasher is None:
        from argon2 import PasswordHasher  # argon2id by default

        _hasher = PasswordHasher()
    return _hasher


def hash_password(password: str) -> str:
    """Argon2id hash of ``password`` (PHC string)."""
    return str(_ph().hash(password))


def verify_password(password_hash: str, password: str) -> bool:
    """True if ``password`` matches ``password_hash``."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return bool(_ph().verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False


_DUMMY_HASH: str | None = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
    return _DUMMY_HASH


def session_cookie_name(secure: bool) -> str:
    """``__Host-miroir`` with Secure cookies; browsers refuse that prefix without Secure."""
    return "__Host-miroir" if secure else "miroir"


def csrf_cookie_name(secure: bool) -> str:
    """Name of the pre-login double-submit CSRF cookie."""
    return "__Host-miroir-csrf" if secure else "miroir-csrf"


def set_cookie(response: Response, name: str, value: str, secure: bool) -> None:
    """Set a session-lifetime cookie: HttpOnly, SameSite=Strict, Path=/, Secure if asked."""
    response.set_cookie(name, value, path="/", secure=secure, httponly=True, samesite="strict")


def clear_cookie(response: Response, name: str, secure: bool) -> None:
    """Expire a cookie set by :func:`set_cookie`."""
    response.delete_cookie(name, path="/", secure=secure, httponly=True, samesite="strict")


def tokens_match(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two non-empty tokens."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


# ------------------------------------------------------------------------------ users
def create_user(db: sqlite_utils.Database, username: str, password: str,
                role: str = "admin") -> None:
    """Add a user with an argon2id password hash (fails if the name exists)."""
    if not username or not password:
        raise ValueError("username and password must be non-empty")
    with db.conn:
        db.conn.execute(
            "INSERT INTO users (username, password_hash, role, created_ts) VALUES (?, ?, ?, ?)",
            (username, hash_password(password), role, time.time()))


def ensure_admin(db: sqlite_utils.Database, username: str, password_file: Path | None) -> bool:
    """Create the admin from ``password_file`` if there is no user yet; return True if created.

    Raises:
        ValueError: no user exists and no usable password file was given (fail closed).
    """
    if db["users"].count > 0:
        return False
    if password_file is None:
        raise ValueError("the users table is empty and no admin_password_file is set")
    password = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
    if len(password) < 8:
        raise ValueError(f"admin password in {password_file} is shorter than 8 characters")
    create_user(db, username, password, role="admin")
    log.info("created the initial admin user %r", username)
    return True


def authenticate(db: sqlite_utils.Database, username: str, password: str) -> str | None:
    """Return the user's role if the credentials are right, else None (constant-ish time)."""
    row = db.conn.execute("SELECT password_hash, role FROM users WHERE username = ?",
                          (username,)).fetchone()
    if row is None:
        verify_password(_dummy_hash(), password)  # same cost as a real check
        return None
    return str(row[1]) if verify_password(row[0], password) else None


# --------------------------------------------------------------------------- sessions
@dataclass(frozen=True)
class Session:
    """A logged-in user's server-side session."""

    username: str
    csrf: str


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_session(db: sqlite_utils.Database, username: str, idle_s: float,
                   now: float | None = None) -> tuple[str, Session]:
    """Start a session; return the cookie token (only its hash is stored) and the session.

    Args:
        db: The open database.
        username: Who logged in.
        idle_s: Idle expiry in seconds, used here to purge expired sessions.
        now: Wall-clock seconds (defaults to the current time).
    """
    now = time.time() if now is None else now
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    with db.conn:
        db.conn.execute("DELETE FROM sessions WHERE last_seen_ts < ? OR created_ts < ?",
                        (now - idle_s, now - SESSION_MAX_AGE_S))
        db.conn.execute(
            "INSERT INTO sessions (token_hash, username, csrf, created_ts, last_seen_ts) "
            "VALUES (?, ?, ?, ?, ?)", (_token_hash(token), username, csrf, now, now))
    return token, Session(username, csrf)


def lookup_session(db: sqlite_utils.Database, token: str | None, idle_s: float,
                   now: float | None = None) -> Session | None:
    """Return the live session of ``token`` and refresh its idle timer, or None."""
    if not token:
        return None
    now = time.time() if now is None else now
    th = _token_hash(token)
    row = db.conn.execute(
        "SELECT username, csrf, created_ts, last_seen_ts FROM sessions WHERE token_hash = ?",
        (th,)).fetchone()
    if row is None:
        return None
    username, csrf, created_ts, last_seen_ts = row
    with db.conn:
        if last_seen_ts < now - idle_s or created_ts < now - SESSION_MAX_AGE_S:
            db.conn.execute("DELETE FROM sessions WHERE token_hash = ?", (th,))
            return None
        db.conn.execute("UPDATE sessions SET last_seen_ts = ? WHERE token_hash = ?", (now, th))
    return Session(username, csrf)


def delete_session(db: sqlite_utils.Database, token: str | None) -> None:
    """End the session of ``token`` (no-op if unknown)."""
    if token:
        with db.conn:
            db.conn.execute("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(token),))


# ------------------------------------------------------------------------- middleware
def is_public(path: str) -> bool:
    """True for the few paths served without a session."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class AuthMiddleware:
    """Deny by default: pages redirect (303) to /login, /api answers 401, without a session."""

    def __init__(self, app: ASGIApp, db_path: Path, idle_s: float, secure: bool) -> None:
        self.app = app
        self.db_path = db_path
        self.idle_s = idle_s
        self.cookie = session_cookie_name(secure)

    def _lookup(self, token: str | None) -> Session | None:
        db = store.open_db(self.db_path)
        try:
            return lookup_session(db, token, self.idle_s)
        finally:
            db.conn.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        token = conn.cookies.get(self.cookie)
        session = await run_in_threadpool(self._lookup, token) if token else None
        if session is None:
            response: Response
            if scope["path"].startswith("/api/") or scope["path"] == "/api":
                response = JSONResponse({"detail": "not authenticated"}, status_code=401)
            else:
                response = RedirectResponse("/login", status_code=303)
            await response(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["user"] = session.username
        state["csrf"] = session.csrf
        await self.app(scope, receive, send)


class SecurityHeadersMiddleware:
    """Add the CSP and other protective headers to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
