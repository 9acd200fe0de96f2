"""Users (argon2id, roles, TOTP), login throttling, server-side sessions, CSRF, middleware."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import sqlite_utils
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import db as store

log = logging.getLogger(__name__)

SESSION_MAX_AGE_S = 12 * 3600
"""Absolute lifetime of a session, whatever the activity (one shift)."""
DEVICE_MAX_AGE_S = 90 * 86400
"""A browser stays known to an account this long after its last completed login (its cookie too)."""
DEVICE_TOKENS_MAX = 4
"""Accounts one browser can be known to (one token each in its device cookie)."""
DEVICES_PER_USER_MAX = 20
"""Browsers one account can be known from (the ones with the latest logins are kept)."""
PUBLIC_PATHS = frozenset({"/login", "/healthz", "/metrics", "/api/cti/call-state"})
"""Served without a session (``/metrics`` and the CTI call state check their own bearer tokens,
see dashboard.prom and dashboard.routes.cti)."""
STAGE_PATHS = {"totp": "/login/totp", "enroll": "/totp/setup"}
"""Where a half-logged-in session (password right, TOTP pending) is sent."""
ROLES = ("admin", "supervisor", "agent", "auditor", "it")
"""``it`` is site IT: the fleet's health and alerts only, never an agent's data."""
TOTP_ROLES = frozenset({"admin", "supervisor", "it"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HEAD_AS_GET = "miroir.head"
"""Key of the ASGI scope of a GET that answers a HEAD (``dashboard.app._HeadAsGet``): a route
that sends nothing to a HEAD reads it (the live stream logs no live view; `deps.get_user` marks
the user ``head``, so `access.audit` writes no entry)."""
MAX_BODY_BYTES = 256 * 1024
"""Largest request body the dashboard reads (a form, a JSON call record): the app's body limit
(``dashboard.app``) answers 413 beyond it. A form's CSRF token is read within the same limit, so
a form too large is told so (413), never that its token is missing (403); it is not held in
memory whole."""
PUBLIC_PREFIXES = ("/static/",)
SECURITY_HEADERS = {
    "content-security-policy": ("default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                                "form-action 'self'; object-src 'none'"),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
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


def device_cookie_name(secure: bool) -> str:
    """Name of the cookie that marks a browser that completed a login (see :func:`remember_device`)."""
    return "__Host-miroir-device" if secure else "miroir-device"


def set_cookie(response: Response, name: str, value: str, secure: bool,
               max_age_s: int | None = None) -> None:
    """Set a cookie: HttpOnly, SameSite=Strict, Path=/, Secure if asked; for the browser session,
    or for ``max_age_s`` seconds (the device cookie of :func:`remember_device`)."""
    response.set_cookie(name, value, max_age=max_age_s, path="/", secure=secure, httponly=True,
                        samesite="strict")


def clear_cookie(response: Response, name: str, secure: bool) -> None:
    """Expire a cookie set by :func:`set_cookie`."""
    response.delete_cookie(name, path="/", secure=secure, httponly=True, samesite="strict")


def tokens_match(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two non-empty tokens."""
    # as bytes: compare_digest refuses str with characters outside ASCII (a hostile form field)
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


# ------------------------------------------------------------------------------ users
USERNAME_MAX_CHARS = 64
"""Longest user name the login form takes."""


def _one_account_per_agent(db: sqlite_utils.Database, agent: str, owners_sql: str,
                           *args: Any, then: str = "") -> None:
    """ValueError naming the account ``owners_sql`` finds for ``agent`` (its first parameter),
    if any: a second account would read the agent's data as the agent, unlogged."""
    owner = db.conn.execute(owners_sql, (agent, *args)).fetchone()
    if owner is not None:
        raise ValueError(f"agent {agent} has a dashboard account already ({owner[0]}): "
                         f"one account per agent{then}")


def create_user(db: sqlite_utils.Database, username: str, password: str,
                role: str = "admin", *, agent: str | None = None, teams: Iterable[str] = (),
                lang: str = "fr", totp_secret: str | None = None,
                actor: str | None = None) -> None:
    """Add a user with an argon2id password hash (fails if the name exists, or for an agent
    who has an account: a second one would read the agent's data as the agent, unlogged).

    Args:
        db: The open database (schema ensured).
        username: Login name.
        password: Clear password (only its argon2id hash is stored).
        role: One of :data:`ROLES`.
        agent: For an agent user, the agent id whose data it may see.
        teams: For a supervisor, the teams it supervises.
        lang: Interface language, ``fr`` or ``en``.
        totp_secret: A base32 TOTP secret already enrolled (else enrolment at first login).
        actor: Who adds it (site IT's command line): audited, about the agent for an agent's
            account. None adds it unaudited (set-up, tests).
    """
    if not username or not password:
        raise ValueError("username and password must be non-empty")
    if len(username) > USERNAME_MAX_CHARS or username != username.strip():
        raise ValueError(f"a user name is 1 to {USERNAME_MAX_CHARS} characters, with no space at "
                         "either end (the login form takes no other)")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if role == "agent" and not agent:
        raise ValueError("an agent user needs the agent id it belongs to")
    hashed = hash_password(password)  # 0.1 s of argon2id: outside the write lock
    now = time.time()
    with db.conn:
        db.conn.execute("BEGIN IMMEDIATE")  # the check and the insert as one
        if role == "agent":
            _one_account_per_agent(db, str(agent), "SELECT username FROM users WHERE "
                                   "role = 'agent' AND agent = ?")
        db.conn.execute(
            "INSERT INTO users (username, password_hash, role, created_ts, agent, lang, "
            "totp_secret) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (username, hashed, role, now, agent, lang, totp_secret))
        if actor is not None:
            _audit_it(db, actor, "user_add", {"user": username, "role": role}, now,
                      agent if role == "agent" else None)
        for team in teams:
            db.conn.execute("INSERT OR IGNORE INTO user_teams (username, team) VALUES (?, ?)",
                            (username, team))


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


def _audit_it(db: sqlite_utils.Database, actor: str, action: str, detail: dict[str, Any],
              now: float, agent: str | None = None) -> None:
    """One audit entry of site IT's command line (inside the caller's transaction), about
    ``agent`` when it is an act on that agent's own account."""
    db.conn.execute("INSERT INTO audit_log (ts, actor, actor_role, agent, action, detail) "
                    "VALUES (?, ?, 'it', ?, ?, ?)",
                    (now, actor, agent, action,
                     json.dumps(detail, separators=(",", ":"), sort_keys=True)))


def _account(db: sqlite_utils.Database, username: str) -> tuple[str, int, str | None]:
    """The role and disabled flag of ``username``, and the agent whose own account it is (None for
    any other role: site IT's acts on an agent's account are entries about that agent, read on
    their page; whoever had a reset password would read it as the agent, which nothing else
    logs); KeyError when there is no such user."""
    row = db.conn.execute("SELECT role, disabled, agent FROM users WHERE username = ?",
                          (username,)).fetchone()
    if row is None:
        raise KeyError(username)
    agent = str(row[2]) if row[0] == "agent" and row[2] is not None else None
    return str(row[0]), int(row[1]), agent


def _cut_off(db: sqlite_utils.Database, username: str) -> int:
    """End every session of ``username`` and forget its browsers; return the sessions ended."""
    ended = db.conn.execute("DELETE FROM sessions WHERE username = ?", (username,)).rowcount
    db.conn.execute("DELETE FROM known_devices WHERE username = ?", (username,))
    return int(ended)


def set_disabled(db: sqlite_utils.Database, username: str, disabled: bool, actor: str,
                 now: float | None = None) -> dict[str, Any]:
    """Disable a user (their sessions end at once, their browsers are forgotten, their login is
    refused) or enable them again; audited when it changes anything.

    Args:
        db: The open database (schema ensured).
        username: The user.
        disabled: True to disable, False to enable.
        actor: Who runs the command (site IT's login name).
        now: Wall-clock seconds (defaults to the current time).

    Returns:
        ``changed`` (False when the user already was so), ``role`` and ``sessions_ended``.

    Raises:
        KeyError: no such user.
        ValueError: enabling an agent's account while another of the agent's is active (an
            older database's second account, see :func:`shared_agent_accounts`); nothing changed.
    """
    now = time.time() if now is None else now
    with db.conn:
        db.conn.execute("BEGIN IMMEDIATE")  # the check and the update as one
        role, was, agent = _account(db, username)
        ended = _cut_off(db, username) if disabled else 0
        if bool(was) == disabled:
            return {"changed": False, "role": role, "sessions_ended": ended}
        if not disabled and agent is not None:
            _one_account_per_agent(db, agent, "SELECT username FROM users WHERE role = 'agent' "
                                   "AND agent = ? AND NOT disabled AND username != ?", username,
                                   then="; nothing changed")
        db.conn.execute("UPDATE users SET disabled = ? WHERE username = ?",
                        (int(disabled), username))
        _audit_it(db, actor, "user_disable" if disabled else "user_enable",
                  {"user": username, "role": role, "sessions_ended": ended}, now, agent)
    log.info("user %s %s by %s", username, "disabled" if disabled else "enabled", actor)
    return {"changed": True, "role": role, "sessions_ended": ended}


def reset_credentials(db: sqlite_utils.Database, username: str, password: str, actor: str,
                      now: float | None = None) -> dict[str, Any]:
    """Give a user a new password and take away their authenticator (a lost phone, a leak): the
    second factor is enrolled again at the next login, every session ends; audited.

    Args:
        db: The open database (schema ensured).
        username: The user.
        password: The new clear password (only its argon2id hash is stored).
        actor: Who runs the command (site IT's login name).
        now: Wall-clock seconds (defaults to the current time).

    Returns:
        ``role``, ``disabled`` (a reset does not enable a disabled user) and ``sessions_ended``.

    Raises:
        KeyError: no such user.
    """
    now = time.time() if now is None else now
    hashed = hash_password(password)  # 0.1 s of argon2id: outside the write lock
    with db.conn:
        role, disabled, agent = _account(db, username)
        db.conn.execute("UPDATE users SET password_hash = ?, totp_secret = NULL, totp_last_step = 0 "
                        "WHERE username = ?", (hashed, username))
        ended = _cut_off(db, username)
        _audit_it(db, actor, "user_reset", {"user": username, "role": role,
                                            "sessions_ended": ended}, now, agent)
    log.info("user %s: password and authenticator reset by %s", username, actor)
    return {"role": role, "disabled": bool(disabled), "sessions_ended": ended}


def list_users(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every user: name, role, agent, teams, whether disabled and whether a second factor is
    enrolled, by name."""
    rows = db.conn.execute(
        "SELECT u.username, u.role, u.agent, u.disabled, u.totp_secret IS NOT NULL, "
        "(SELECT group_concat(team, ',') FROM (SELECT team FROM user_teams t "
        " WHERE t.username = u.username ORDER BY team)) FROM users u ORDER BY u.username"
    ).fetchall()
    return [{"username": r[0], "role": r[1], "agent": r[2], "disabled": bool(r[3]),
             "totp_enrolled": bool(r[4]), "teams": r[5].split(",") if r[5] else []}
            for r in rows]


def shared_agent_accounts(db: sqlite_utils.Database) -> list[str]:
    """One line per agent with more than one active account (a database made before the
    dashboard refused them, :func:`create_user`), naming the accounts: each one's reads of the
    agent's data count as the agent's own, never logged."""
    rows = db.conn.execute(
        "SELECT agent, group_concat(username, ', ') FROM (SELECT agent, username FROM users "
        "WHERE role = 'agent' AND agent IS NOT NULL AND NOT disabled ORDER BY agent, username) "
        "GROUP BY agent HAVING count(*) > 1 ORDER BY agent").fetchall()
    return [f"agent {agent} has {len(names.split(', '))} active dashboard accounts ({names}): "
            "each one's reads of the agent's data count as the agent's own, never logged; "
            "disable all but one (`miroir dashboard user disable NAME`)" for agent, names in rows]


class CheckGate:
    """At most ``limit`` password checks at once: an argon2id check holds 64 MiB and a core for
    about 0.1 s, so a burst of logins must not run them all together. A request waits at most
    ``wait_s`` for its turn, then is turned away (no unbounded queue of waiting checks)."""

    def __init__(self, limit: int, wait_s: float = 1.0) -> None:
        self._slots = threading.BoundedSemaphore(limit)
        self.wait_s = wait_s

    @contextmanager
    def turn(self) -> Iterator[bool]:
        """Yield True holding a slot, or False if none came free within ``wait_s``."""
        got = self._slots.acquire(timeout=self.wait_s)
        try:
            yield got
        finally:
            if got:
                self._slots.release()


class RateLimit:
    """A token bucket per client key: ``burst`` requests at once, then ``rate_per_s`` a second.
    At most :attr:`MAX_KEYS` clients are remembered (the least recently seen are forgotten)."""

    MAX_KEYS = 4096

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, monotonic s)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one request of ``key``'s allowance: 0.0 if it may go, else the seconds until
        it may (nothing spent)."""
        with self._lock:
            now = time.monotonic()
            tokens, then = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate_per_s)
            wait_s = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate_per_s
            self._buckets[key] = (tokens - 1.0 if wait_s == 0.0 else tokens, now)
            while len(self._buckets) > self.MAX_KEYS:  # oldest first: insertion order
                del self._buckets[next(iter(self._buckets))]
            return wait_s


def authenticate(db: sqlite_utils.Database, username: str, password: str) -> str | None:
    """Return the user's role if the credentials are right, else None (constant-ish time)."""
    row = db.conn.execute("SELECT password_hash, role, disabled FROM users WHERE username = ?",
                          (username,)).fetchone()
    if row is None:
        verify_password(_dummy_hash(), password)  # same cost as a real check
        return None
    ok = verify_password(row[0], password)
    return str(row[1]) if ok and not row[2] else None


# -------------------------------------------------------------------------- throttling
def _networks(proxies: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(p, strict=False) for p in proxies]


def _in(addr: str, nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in n for n in nets)


def client_address(peer: str | None, forwarded_for: str | None,
                   trusted_proxies: Iterable[str]) -> str:
    """The client's address: the peer, or, from a trusted proxy only, X-Forwarded-For.

    The header is walked from the right (the hop our proxy added) past trusted proxies; the
    first untrusted address is the client. A header sent by anyone else is ignored.
    """
    peer = peer or "unknown"
    nets = _networks(trusted_proxies)
    if not forwarded_for or not _in(peer, nets):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, nets):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return peer


IPV6_PREFIX_BITS = 64
"""An IPv6 client is counted by its /64: one host or home usually holds the whole prefix."""


def throttle_key(addr: str) -> str:
    """What failed logins from ``addr`` are counted under: an IPv4 address (also when mapped in
    IPv6), the /64 of an IPv6 address (``2001:db8:1:2::/64``), or the peer name as is."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        host_bits = 128 - IPV6_PREFIX_BITS
        return str(ipaddress.IPv6Network((int(ip) >> host_bits << host_bits, IPV6_PREFIX_BITS)))
    return str(ip)


def login_throttled(db: sqlite_utils.Database, username: str, addr: str, *, window_s: float,
                    max_account: int, max_addr: int, max_account_total: int,
                    known_device: bool = False, now: float | None = None) -> bool:
    """True if this login must wait: too many recent failures on the account from this address
    (``max_account``), from this address on any account (``max_addr``), or on the account from
    all addresses (``max_account_total``, a guess spread over many addresses); an address counts
    as its :func:`throttle_key`, an IPv6 one as its /64. A browser that completed a login to the
    account before (``known_device``) is spared the last two: a stranger elsewhere cannot lock its
    owner out, nor can someone behind the same address (a floor's NAT) by failing on other
    accounts. It stays held to the account's limit at its address.
    """
    now = time.time() if now is None else now
    since = now - window_s
    addr = throttle_key(addr)
    by_pair, by_user = db.conn.execute(
        "SELECT coalesce(sum(addr = ?), 0), count(*) FROM login_attempts "
        "WHERE ok = 0 AND ts >= ? AND username = ?", (addr, since, username[:64])).fetchone()
    by_addr = db.conn.execute(
        "SELECT count(*) FROM login_attempts WHERE ok = 0 AND ts >= ? AND addr = ?",
        (since, addr)).fetchone()[0]
    return bool(by_pair >= max_account
                or (not known_device and (by_addr >= max_addr or by_user >= max_account_total)))


def codes_throttled(db: sqlite_utils.Database, username: str, *, window_s: float, max_codes: int,
                    now: float | None = None) -> bool:
    """True if the account has too many recent wrong one-time codes, from all addresses: only
    someone with the password gets that far, so no stranger can lock the owner out this way."""
    now = time.time() if now is None else now
    wrong = db.conn.execute(
        "SELECT count(*) FROM login_attempts WHERE ok = 0 AND kind = 'code' AND ts >= ? "
        "AND username = ?", (now - window_s, username[:64])).fetchone()[0]
    return bool(wrong >= max_codes)


def reserve_attempt(db: sqlite_utils.Database, username: str, addr: str, *, window_s: float,
                    max_account: int, max_addr: int, max_account_total: int,
                    known_device: bool = False, max_codes: int | None = None,
                    kind: str = "password", now: float | None = None) -> int | None:
    """Before a password or one-time code is checked: None if the login is throttled (see
    :func:`login_throttled`, and :func:`codes_throttled` with ``max_codes``), else record the
    attempt as a failure and return its id for :func:`settle_attempt`.

    The count and the record are one write transaction: concurrent attempts queue on SQLite's
    write lock, and each sees the ones before it, so a burst gets no more checks than the limits
    (reading the count, checking, then recording let every request of a burst through).
    """
    now = time.time() if now is None else now
    with store.write_transaction(db):
        if login_throttled(db, username, addr, window_s=window_s, max_account=max_account,
                           max_addr=max_addr, max_account_total=max_account_total,
                           known_device=known_device, now=now):
            return None
        if max_codes is not None and codes_throttled(db, username, window_s=window_s,
                                                     max_codes=max_codes, now=now):
            return None
        cur = db.conn.execute("INSERT INTO login_attempts (ts, username, addr, ok, kind) "
                              "VALUES (?, ?, ?, 0, ?)",
                              (now, username[:64], throttle_key(addr), kind))
    return int(cur.lastrowid or 0)


def settle_attempt(db: sqlite_utils.Database, attempt: int, username: str, ok: bool,
                   clear: bool = True) -> None:
    """The outcome of a reserved attempt: a failure stays recorded; a success is marked so and,
    if complete (``clear``; not a right password before a one-time code), clears the account's
    failures recorded before it."""
    if not ok:
        return
    with db.conn:
        if clear:
            db.conn.execute("DELETE FROM login_attempts WHERE username = ? AND ok = 0 AND id < ?",
                            (username[:64], attempt))
        db.conn.execute("UPDATE login_attempts SET ok = 1 WHERE id = ?", (attempt,))


def cancel_attempt(db: sqlite_utils.Database, attempt: int) -> None:
    """Forget a reserved attempt that checked nothing (turned away by the :class:`CheckGate`)."""
    with db.conn:
        db.conn.execute("DELETE FROM login_attempts WHERE id = ?", (attempt,))


def device_tokens(cookie: str | None) -> list[str]:
    """The tokens a device cookie holds, one per account the browser logged in to, newest first."""
    if not cookie or len(cookie) > 80 * DEVICE_TOKENS_MAX:
        return []
    return [t for t in cookie.split(".") if 0 < len(t) <= 64][:DEVICE_TOKENS_MAX]


def known_device(db: sqlite_utils.Database, username: str, cookie: str | None,
                 now: float | None = None) -> str | None:
    """The token of the device cookie ``cookie`` that marks a browser whose last completed login
    to ``username`` is under :data:`DEVICE_MAX_AGE_S` old, or None."""
    now = time.time() if now is None else now
    for token in device_tokens(cookie):
        row = db.conn.execute("SELECT username FROM known_devices WHERE token_hash = ? "
                              "AND last_login_ts >= ?", (_token_hash(token), now - DEVICE_MAX_AGE_S)
                              ).fetchone()
        if row is not None and tokens_match(row[0], username):
            return token
    return None


def remember_device(db: sqlite_utils.Database, username: str, cookie: str | None,
                    now: float | None = None) -> str:
    """Mark the browser of the device cookie ``cookie`` (None: a new one) after a completed login
    to ``username``, or mark it again; return the cookie's new value (only hashes are stored)."""
    now = time.time() if now is None else now
    token = known_device(db, username, cookie, now)
    with db.conn:
        db.conn.execute("DELETE FROM known_devices WHERE last_login_ts < ?", (now - DEVICE_MAX_AGE_S,))
        if token is not None:
            db.conn.execute("UPDATE known_devices SET last_login_ts = ? WHERE token_hash = ?",
                            (now, _token_hash(token)))
        else:
            token = secrets.token_urlsafe(32)
            db.conn.execute("INSERT INTO known_devices (token_hash, username, last_login_ts) "
                            "VALUES (?, ?, ?)", (_token_hash(token), username, now))
            # logins without the cookie (private windows, a script) must not grow the table
            db.conn.execute("DELETE FROM known_devices WHERE username = ? AND token_hash NOT IN "
                            "(SELECT token_hash FROM known_devices WHERE username = ? "
                            "ORDER BY last_login_ts DESC LIMIT ?)",
                            (username, username, DEVICES_PER_USER_MAX))
    others = [t for t in device_tokens(cookie) if t != token]
    return ".".join([token, *others][:DEVICE_TOKENS_MAX])


# --------------------------------------------------------------------------- sessions
@dataclass(frozen=True)
class Session:
    """A logged-in user's server-side session."""

    username: str
    csrf: str
    stage: str = "ok"
    role: str = "admin"
    lang: str = "fr"
    pending_secret: str | None = None
    end_ts: float = 0.0
    """When it ends if its user does nothing more (as of the lookup; 0: not known)."""


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_session(db: sqlite_utils.Database, username: str, idle_s: float,
                   now: float | None = None, *, stage: str = "ok",
                   pending_secret: str | None = None) -> tuple[str, Session]:
    """Start a session; return the cookie token (only its hash is stored) and the session.

    Args:
        db: The open database.
        username: Who logged in.
        idle_s: Idle expiry in seconds, used here to purge expired sessions.
        now: Wall-clock seconds (defaults to the current time).
        stage: ``ok``, or ``totp`` / ``enroll`` while the second factor is pending.
        pending_secret: The TOTP secret being enrolled (stage ``enroll``).
    """
    now = time.time() if now is None else now
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    with db.conn:
        db.conn.execute("DELETE FROM sessions WHERE last_seen_ts < ? OR created_ts < ?",
                        (now - idle_s, now - SESSION_MAX_AGE_S))
        db.conn.execute(
            "INSERT INTO sessions (token_hash, username, csrf, created_ts, last_seen_ts, stage, "
            "pending_secret) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (_token_hash(token), username, csrf, now, now, stage, pending_secret))
    return token, Session(username, csrf, stage, pending_secret=pending_secret)


def lookup_session(db: sqlite_utils.Database, token: str | None, idle_s: float,
                   now: float | None = None, *, touch: bool = True) -> Session | None:
    """Return the live session of ``token``, or None; with ``touch`` (an act of its user, see
    :func:`is_activity`) its idle timer starts again."""
    if not token:
        return None
    now = time.time() if now is None else now
    th = _token_hash(token)
    row = db.conn.execute(
        "SELECT s.username, s.csrf, s.created_ts, s.last_seen_ts, s.stage, s.pending_secret, "
        "u.role, u.lang, u.disabled FROM sessions s JOIN users u ON u.username = s.username "
        "WHERE s.token_hash = ?", (th,)).fetchone()
    if row is None:
        return None
    username, csrf, created_ts, last_seen_ts, stage, pending, role, lang, disabled = row
    with db.conn:
        if disabled or last_seen_ts < now - idle_s or created_ts < now - SESSION_MAX_AGE_S:
            db.conn.execute("DELETE FROM sessions WHERE token_hash = ?", (th,))
            return None
        if touch:
            db.conn.execute("UPDATE sessions SET last_seen_ts = ? WHERE token_hash = ?", (now, th))
            last_seen_ts = now
    end_ts = min(float(last_seen_ts) + idle_s, float(created_ts) + SESSION_MAX_AGE_S)
    return Session(username, csrf, stage or "ok", role, lang or "fr", pending, end_ts)


def session_end_ts(db: sqlite_utils.Database, token: str | None, idle_s: float) -> float | None:
    """When the session of ``token`` ends if its user does nothing more (its idle timeout, or its
    absolute lifetime if sooner), or None without such a session."""
    if not token:
        return None
    row = db.conn.execute("SELECT created_ts, last_seen_ts FROM sessions WHERE token_hash = ?",
                          (_token_hash(token),)).fetchone()
    if row is None:
        return None
    return min(float(row[1]) + idle_s, float(row[0]) + SESSION_MAX_AGE_S)


def is_activity(method: str, path: str, fetch_mode: str | None, fetch_user: str | None) -> bool:
    """Whether a request is its user's act, which starts the session's idle timer again: a
    state change (a form, a switch, the activity a page reports on a key or a click), or a page
    navigated to. Not the pages' background traffic: reads of ``/api`` (the live stream, the
    periodic fetches) nor a reload a page makes by itself (the browser then says
    ``Sec-Fetch-Mode: navigate`` without ``Sec-Fetch-User: ?1``): an unattended screen locks at the
    idle timeout, not at the 12 h cap."""
    if method not in SAFE_METHODS:
        return True
    if path.startswith("/api/") or path == "/api":
        return False
    return not (fetch_mode == "navigate" and fetch_user != "?1")


def delete_session(db: sqlite_utils.Database, token: str | None) -> None:
    """End the session of ``token`` (no-op if unknown)."""
    if token:
        with db.conn:
            db.conn.execute("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(token),))


# ------------------------------------------------------------------------- middleware
def is_public(path: str) -> bool:
    """True for the few paths served without a session, and for them with trailing slashes
    (no route takes those: the router redirects them to the path without, see dashboard.app)."""
    return path.rstrip("/") in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


class AuthMiddleware:
    """Deny by default, then CSRF on every state change; only a user's acts
    (:func:`is_activity`) start a session's idle timer again.

    Without a session, pages redirect (303) to /login (``/login?ended=1`` when the browser sent a
    session cookie that no longer opens one: the login page says the session ended) and /api
    answers 401. A session whose
    second factor is pending reaches only its TOTP page. Every POST, PUT, PATCH or DELETE must
    carry the session's CSRF token, in an ``X-CSRF-Token`` header or a ``csrf`` form field. Every
    answer to a logged-in request, and every refusal of this middleware, is
    ``Cache-Control: no-store`` (:data:`NO_STORE`).
    """

    def __init__(self, app: ASGIApp, db_path: Path, idle_s: float, secure: bool) -> None:
        self.app = app
        self.db_path = db_path
        self.idle_s = idle_s
        self.cookie = session_cookie_name(secure)

    def _lookup(self, token: str | None, touch: bool) -> Session | None:
        db = store.open_db(self.db_path)
        try:
            return lookup_session(db, token, self.idle_s, touch=touch)
        finally:
            db.conn.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        send = no_store(send)  # this middleware's own refusals as much as the app's answers
        conn = HTTPConnection(scope)
        path = scope["path"]
        is_api = path.startswith("/api/") or path == "/api"
        token = conn.cookies.get(self.cookie)
        touch = scope["type"] == "http" and is_activity(
            scope["method"], path, conn.headers.get("sec-fetch-mode"),
            conn.headers.get("sec-fetch-user"))
        changes = scope["type"] == "http" and scope["method"] not in SAFE_METHODS
        # a state change is its user's act only once its CSRF token matched (below)
        session = (await run_in_threadpool(self._lookup, token, touch and not changes)
                   if token else None)
        response: Response
        if session is None:
            if is_api:
                response = JSONResponse({"detail": "not authenticated"}, status_code=401)
            else:
                response = RedirectResponse("/login?ended=1" if token else "/login",
                                            status_code=303)
            await response(scope, receive, send)
            return
        if session.stage != "ok" and path not in (STAGE_PATHS.get(session.stage), "/logout"):
            if is_api:
                response = JSONResponse({"detail": "second factor required"}, status_code=401)
            else:
                response = RedirectResponse(STAGE_PATHS.get(session.stage, "/login"),
                                            status_code=303)
            await response(scope, receive, send)
            return
        state = scope.setdefault("state", {})  # before the body is read: a 413 page's language
        state["user"] = session.username
        state["csrf"] = session.csrf
        state["role"] = session.role
        state["lang"] = session.lang
        state["session"] = session
        if changes:
            sent = conn.headers.get("x-csrf-token")
            ctype = conn.headers.get("content-type", "")
            if sent is None and ctype.startswith("application/x-www-form-urlencoded"):
                body = await _read_body(receive, MAX_BODY_BYTES)
                if body is not None:
                    values = parse_qs(body.decode("latin-1")).get("csrf")
                    sent = values[0] if values else None
                    receive = _replay(body)
            if not tokens_match(sent, session.csrf):
                if is_api:
                    response = JSONResponse({"detail": CSRF_REFUSED}, status_code=403)
                else:  # a form from before the session was renewed: the error page, with a way back
                    from .routes.deps import page_error  # (the routes import this module)

                    response = await page_error(Request(scope, receive),
                                                StarletteHTTPException(403, CSRF_REFUSED))
                await response(scope, receive, send)
                return
            if touch:  # the page it answers with ends with the session's new end
                state["session"] = await run_in_threadpool(self._lookup, token, True) or session
        await self.app(scope, receive, send)


CSRF_REFUSED = "CSRF token missing or wrong"
"""The ``detail`` of a state-changing request without its session's CSRF token."""

NO_STORE = (b"cache-control", b"no-store")
"""On every answer to a logged-in request (pages, JSON, exports, errors): it holds personal data
that no shared proxy cache nor the browser's disk cache may keep."""


def no_store(send: Send) -> Send:
    """``send`` with ``Cache-Control: no-store`` on a response that sets no Cache-Control."""
    async def send_no_store(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            if not any(k.lower() == b"cache-control" for k, _ in headers):
                message = {**message, "headers": [*headers, NO_STORE]}
        await send(message)

    return send_no_store


class SecurityHeadersMiddleware:
    """Add the CSP, HSTS, nosniff and other protective headers to every HTTP response."""

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
