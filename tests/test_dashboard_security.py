"""Dashboard security and rights: CSRF, cookies, throttling, TOTP, role scoping, audit, retention."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dashboard import access, analytics, auth, retention, schema, totp
from dashboard import db as store
from dashboard.app import create_app
from dashboard.commands import send_command
from dashboard.settings import DashboardSettings
from miroir import wire
from tests._fixtures_broker import wait_until
from tests._fixtures_dashboard import (
    USER_PASSWORD,
    client,
    csrf_header,
    csrf_of,
    failed_login,
    http_login,
    login_as,
    make_settings,
    seed_org,
)


# ------------------------------------------------------------------------------ TOTP
def test_totp_matches_rfc6238_and_refuses_replays() -> None:
    import base64

    secret = base64.b32encode(b"12345678901234567890").decode()
    # RFC 6238 appendix B (SHA-1), last 6 of the 8 digits.
    for t, code in ((59, "287082"), (1111111109, "081804"), (1234567890, "005924"),
                    (2000000000, "279037")):
        assert totp.totp(secret, t) == code
    step = totp.verify(secret, "081804", 0, now_s=1111111109)
    assert step == totp.step_of(1111111109)
    assert totp.verify(secret, "081804", step, now_s=1111111109) is None  # replay
    assert totp.verify(secret, "081805", 0, now_s=1111111109) is None
    assert totp.verify(secret, "08180", 0, now_s=1111111109) is None
    assert totp.verify(secret, totp.totp(secret, 1111111109 + 30), 0, now_s=1111111109)
    assert totp.verify(secret, totp.totp(secret, 1111111109 + 90), 0, now_s=1111111109) is None
    assert totp.provisioning_uri(secret, "sup a").startswith("otpauth://totp/Miroir:sup%20a?")


def _purge_cli(settings: DashboardSettings) -> None:
    """Run the real ``miroir dashboard purge`` on ``settings``' database; it must succeed."""
    env = {**os.environ, "MIROIR_DASH_SITE": settings.site,
           "MIROIR_DASH_DB_PATH": str(settings.db_path),
           "MIROIR_DASH_ADMIN_PASSWORD_FILE": str(settings.admin_password_file)}
    r = subprocess.run([sys.executable, "-m", "miroir.cli", "dashboard", "purge"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_supervisor_needs_the_totp_code_and_the_session_rotates(org: Any) -> None:
    settings, data = org
    with client(settings) as c:
        r = c.post("/login", data={"username": "sup-a", "password": USER_PASSWORD,
                                   "csrf": csrf_of(c.get("/login").text)})
        assert r.headers["location"] == "/login/totp"
        half = c.cookies.get("__Host-miroir")
        assert c.get("/api/agents").status_code == 401
        page = c.get("/login/totp")
        r = c.post("/login/totp", data={"code": "123456", "csrf": csrf_of(page.text)})
        assert r.status_code == 401
        # Without the session's CSRF token, even the code form is refused.
        assert c.post("/login/totp", data={"code": totp.totp(data["secrets"]["sup-a"])}
                      ).status_code == 403
        login_as(c, "sup-a", data)
        assert c.cookies.get("__Host-miroir") != half
        assert c.get("/api/agents").status_code == 200
    db = store.open_db(settings.db_path)
    assert db.conn.execute("SELECT count(*) FROM sessions WHERE stage != 'ok'").fetchone()[0] == 0


# ------------------------------------------------------------------------------ CSRF
def test_every_state_change_needs_the_csrf_token(org: Any) -> None:
    settings, data = org
    with client(settings) as c:
        login_as(c, "sup-a", data)
        now = time.time()
        json_posts = [("/api/agents/agent-a1/flags", {"ts": now, "note": "x"}),
                      ("/api/agents/agent-a1/goals", {"metric": "near_speech_ratio",
                                                      "label": "ralentir"}),
                      ("/api/calls/1/outcome", {"outcome": "meeting"}),
                      ("/api/calls", {"agent": "agent-a1", "start_ts": now})]
        form_posts = [("/agents/agent-a1/flags", {"ts": str(now), "note": "x"}),
                      ("/agents/agent-a1/goals", {"metric": "near_speech_ratio", "label": "x"}),
                      ("/calls/1/outcome", {"outcome": "refusal"}),
                      ("/lang", {"lang": "en"}), ("/logout", {})]
        for path, body in json_posts:
            assert c.post(path, json=body).status_code == 403, path
            assert c.post(path, json=body, headers={"x-csrf-token": "forged"}
                          ).status_code == 403, path
        for path, body in form_posts:
            assert c.post(path, data=body).status_code == 403, path
            assert c.post(path, data={**body, "csrf": "forged"}).status_code == 403, path
        db = store.open_db(settings.db_path)
        assert db.conn.execute("SELECT count(*) FROM flags WHERE author = 'sup-a'"
                               ).fetchone()[0] == 0
        hdr = csrf_header(c)
        for path, body in json_posts:
            assert c.post(path, json=body, headers=hdr).status_code in (200, 201), path
        token = hdr["x-csrf-token"]
        for path, body in form_posts:
            assert c.post(path, data={**body, "csrf": token}).status_code == 303, path
        assert db.conn.execute("SELECT count(*) FROM flags WHERE author = 'sup-a'"
                               ).fetchone()[0] == 2
        assert c.get("/api/agents").status_code == 401  # the last form was the logout



SESSIONLESS_WRITES = {"/login", "/api/cti/call-state"}
"""State changes served without a session (the login form's own CSRF; the CTI's bearer token)."""
STAGE_WRITES = {"/login/totp", "/totp/setup"}
"""State changes of a half-logged-in session only (its second factor)."""


def _writes_of_the_app(app: Any) -> list[tuple[str, str]]:
    """Every (method, path) of the app that changes state (POST, PUT, PATCH, DELETE)."""
    def walk(routes: Any) -> Iterator[tuple[str, str]]:
        for route in routes:
            inner = getattr(route, "original_router", None)  # an included router
            if inner is not None:
                yield from walk(inner.routes)
            for method in sorted(getattr(route, "methods", None) or ()):
                if method not in auth.SAFE_METHODS:
                    yield method, route.path
    return sorted(set(walk(app.routes)))


def _tables(path: Path) -> dict[str, list[Any]]:
    """Every row of every table but the ones a request's session lookup itself writes."""
    conn = sqlite3.connect(path)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: conn.execute(f'SELECT * FROM "{n}"').fetchall() for n in names
                if n not in ("sessions", "login_attempts", "known_devices")}
    finally:
        conn.close()


def test_every_write_of_the_app_is_refused_without_a_session_or_its_own_csrf_token(
        org_server: Any) -> None:
    """Every state-changing route the app has (walked from ``app.routes``, not listed by hand:
    a new route is in it), over the real server, with a body that its user's token would get
    through: without a session it is a 401 or the login page; with team A's supervisor's
    session but no token, a wrong one, or team B's supervisor's (another session's) it is a 403;
    never a 500, and nothing in the database changes."""
    import httpx

    server, data = org_server
    writes = _writes_of_the_app(server.app)
    assert len(writes) >= 20 and ("POST", "/api/agents/{agent:id}/erase") in writes
    ids = {"{agent:id}": "agent-a1", "{call_id}": "1", "{campaign}": "camp-a", "{team:id}": "team-a"}
    body = {"ts": time.time() - 60, "note": "x", "metric": "near_speech_ratio", "label": "x",
            "outcome": "meeting", "variant": 2, "agent": "agent-a1", "start_ts": time.time() - 60,
            "campaign": "nouvelle", "name": "Nouvelle", "team": "team-a", "private": True,
            "confirm": "1", "lang": "en", "pseudonymous_default": "1"}
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        sup_a = {"cookie": "__Host-miroir="
                           f"{http_login(c, 'sup-a', USER_PASSWORD, data['secrets']['sup-a'])}"}
        sup_b = {"cookie": "__Host-miroir="
                           f"{http_login(c, 'sup-b', USER_PASSWORD, data['secrets']['sup-b'])}"}
        token_b = csrf_of(c.get("/", headers=sup_b).text)
        before = _tables(server.settings.db_path)
        answers: dict[tuple[str, str, str], int] = {}
        for method, route in writes:
            if route in SESSIONLESS_WRITES | STAGE_WRITES:
                continue
            path = route
            for param, value in ids.items():
                path = path.replace(param, value)
            for who, headers in (("none", {}), ("no token", sup_a),
                                 ("wrong token", {**sup_a, "x-csrf-token": "forged"}),
                                 ("other's token", {**sup_a, "x-csrf-token": token_b})):
                if path.startswith("/api/"):
                    r = c.request(method, path, json=body, headers=headers)
                else:
                    form = {k: str(v) for k, v in body.items()}
                    if who == "other's token":
                        form["csrf"] = token_b
                    r = c.request(method, path, data=form, headers=headers)
                answers[method, route, who] = r.status_code
        assert _tables(server.settings.db_path) == before
        token_a = csrf_of(c.get("/", headers=sup_a).text)
        own: dict[str, int] = {}  # the bodies do get through with the session's own token
        for method, route in sorted(answers and {(m, r) for m, r, _ in answers},
                                    key=lambda mr: mr[1] == "/logout"):  # the logout last
            path = route
            for param, value in ids.items():
                path = path.replace(param, value)
            r = c.request(method, path, headers={**sup_a, "x-csrf-token": token_a},
                          **({"json": body} if path.startswith("/api/") else
                             {"data": {k: str(v) for k, v in body.items()}}))
            own[route] = r.status_code
    expected = {(m, r, who): (401 if r.startswith("/api/") else 303) if who == "none" else 403
                for m, r, who in answers}
    assert answers == expected
    # past the token to the route itself: done, or refused by the route (a 404 for a role's
    # route, a 409 for a campaign closed or created by an earlier write), never the token's 403
    assert {r: s for r, s in own.items() if s == 403 or s >= 500} == {}, own
    assert own["/agents/{agent:id}/flags"] == 303 and own["/api/agents/{agent:id}/flags"] == 201


def test_the_language_switch_goes_back_to_a_local_page_with_its_pagings_only(org: Any) -> None:
    """The switch's way back (its form's ``next``) keeps a page's pagings (``calls_before``,
    ``audit_before``, ``flags_before``, whole numbers) and nothing else of an address: never
    another origin, and no other parameter a forged form would carry along."""
    settings, data = org
    with client(settings) as c:
        login_as(c, "admin", data)
        token = csrf_header(c)["x-csrf-token"]
        for sent, back in (
                ("//example.com/x", "/"), ("https://example.com/", "/"),
                ("/agents/agent-a1?calls_before=5&next=//example.com&audit_before=7&x=1",
                 "/agents/agent-a1?calls_before=5&audit_before=7"),
                ("/me?calls_before=5e3&audit_before=-1&calls_before=6", "/me?calls_before=6"),
                ("/audit?audit_before=12", "/audit?audit_before=12"),
                ("/me?flags_before=9&calls_before=5&flags_before=1e2",
                 "/me?calls_before=5&flags_before=9")):
            r = c.post("/lang", data={"lang": "en", "next": sent, "csrf": token})
            assert (r.status_code, r.headers["location"]) == (303, back), sent


def test_a_stale_form_in_a_browser_gets_the_error_page_in_its_language(org: Any) -> None:
    """A form sent with a token from before the session was renewed (a login in another tab) got
    a bare English "CSRF token missing or wrong" as text/plain, with no way back: a browser now
    gets the error page in the user's language saying why, with a link back; nothing is stored,
    and the API's answer stays JSON."""
    settings, data = org
    with client(settings) as c:
        login_as(c, "sup-a", data)
        html = {"accept": "text/html,application/xhtml+xml"}
        r = c.post("/agents/agent-a1/flags", data={"ts": str(time.time()), "note": "x",
                                                   "csrf": "stale"}, headers=html)
        assert r.status_code == 403 and r.headers["content-type"].startswith("text/html")
        assert "Accès refusé : rechargez la page et réessayez." in r.text
        assert "ce formulaire ne vaut plus pour votre session" in r.text
        assert 'href="/agents/agent-a1"' in r.text
        api = c.post("/api/agents/agent-a1/flags", json={"ts": time.time(), "note": "x"})
        assert api.status_code == 403 and api.json() == {"detail": "CSRF token missing or wrong"}
        db = store.open_db(settings.db_path)
        assert db.conn.execute("SELECT count(*) FROM flags WHERE author = 'sup-a'"
                               ).fetchone()[0] == 0

def test_security_headers_and_cookie_flags(org: Any) -> None:
    settings, _ = org
    with client(settings) as c:
        r = c.get("/login")
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert r.headers["x-content-type-options"] == "nosniff"
        r = c.post("/login", data={"username": "amina", "password": USER_PASSWORD,
                                   "csrf": csrf_of(r.text)})
        cookie = next(h for h in r.headers.get_list("set-cookie")
                      if h.startswith("__Host-miroir="))
        attrs = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"secure", "httponly", "samesite=strict", "path=/"} <= attrs
        assert not any(a.startswith(("domain", "max-age", "expires")) for a in attrs)
        assert c.get("/me").headers["content-security-policy"] == csp


def test_security_headers_are_on_too_large_and_server_error_answers(org_server: Any) -> None:
    """A body over the app's limit (413, with or without a session) and a server error (500: the
    database file damaged under the running server) carry the same protective headers as every
    other answer (both came from FastAPI's outer layers, past the headers middleware: none)."""
    import httpx

    from dashboard.app import MAX_BODY_BYTES

    server, _ = org_server
    expected = dict(auth.SECURITY_HEADERS)
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        cookie = {"cookie": f"__Host-miroir={http_login(c, 'amina', USER_PASSWORD)}"}
        too_big = b'{"note": "' + b"a" * MAX_BODY_BYTES + b'"}'
        for headers in (cookie, {}):
            r = c.post("/api/agents/agent-a1/flags", content=too_big,
                       headers={**headers, "content-type": "application/json"})
            assert r.status_code == 413
            assert {k: r.headers.get(k) for k in expected} == expected
        assert c.get("/api/me", headers=cookie).json()["agent"] == "agent-a1"  # still serving
        server.settings.db_path.write_bytes(b"not a database " * 512)
        r = c.get("/api/me", headers=cookie)
        assert r.status_code == 500
        assert {k: r.headers.get(k) for k in expected} == expected


def test_a_browser_posting_a_form_over_the_limit_gets_the_error_page_in_its_language(
        org_server: Any) -> None:
    """A form over the body limit got Starlette's plain English "Content Too Large" although the
    French sentence exists: a browser (Accept: text/html) now gets the error page in the user's
    language, with a way back, whether the body says its length or comes in chunks; a client of
    the JSON API gets JSON; the protective headers stay on both."""
    import httpx

    from dashboard.app import MAX_BODY_BYTES

    server, _ = org_server
    db = store.open_db(server.settings.db_path)
    with db.conn:
        db.conn.execute("UPDATE users SET lang = 'en' WHERE username = 'amina'")
    db.conn.close()
    browser = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
               "content-type": "application/x-www-form-urlencoded"}
    form = b"pseudonymous_default=1&note=" + b"a" * MAX_BODY_BYTES
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        admin = {"cookie": f"__Host-miroir={http_login(c)}"}
        amina = {"cookie": f"__Host-miroir={http_login(c, 'amina', USER_PASSWORD)}"}
        for body in (form, iter([form[:100_000], form[100_000:]])):
            r = c.post("/admin/settings", content=body, headers={**admin, **browser})
            assert (r.status_code, r.headers["content-type"]) == (413, "text/html; charset=utf-8")
            assert '<html lang="fr"' in r.text
            assert "La demande est trop volumineuse." in r.text, r.text[:200]
            assert "contenu trop volumineux" in r.text and 'id="error-back" href="/"' in r.text
            assert r.headers["content-security-policy"] == auth.SECURITY_HEADERS[
                "content-security-policy"]
        r = c.post("/me/private", content=form, headers={**amina, **browser})
        assert r.status_code == 413 and '<html lang="en"' in r.text
        assert "The request is too large." in r.text and 'id="error-back" href="/me"' in r.text
        r = c.post("/api/agents/agent-a1/flags", content=b'{"note": "' + form + b'"}',
                   headers={**admin, "content-type": "application/json"})
        assert (r.status_code, r.json()) == (413, {"detail": "Content Too Large"})
        assert r.headers["x-content-type-options"] == "nosniff"
        assert c.get("/api/me", headers=admin).json()["role"] == "admin"  # still serving
    db = store.open_db(server.settings.db_path)
    try:  # nothing was changed by the refused forms
        assert schema.get_setting(db, "pseudonymous_default", "0") == "0"
    finally:
        db.conn.close()


def test_a_form_over_the_body_limit_is_too_large_whatever_the_limit_not_without_its_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's body limit (413) and the size of form the CSRF check reads for its token were two
    equal constants (dashboard.app.MAX_BODY_BYTES, dashboard.auth.MAX_FORM_BYTES): had the form's
    been lowered alone, a form between the two, its token right, was answered 403 "CSRF token
    missing or wrong". They are one limit now (auth.MAX_BODY_BYTES, the app's too): lowered to
    4 KiB, over the real server, an 8 KiB form with its token is 413 "trop volumineuse" and
    changes nothing, a small one goes through. At 256 KiB nothing changes."""
    import httpx

    from dashboard.app import DashboardServer

    monkeypatch.setattr(auth, "MAX_BODY_BYTES", 4096)
    settings = make_settings(tmp_path)
    seed_org(settings, seconds=5)
    browser = {"accept": "text/html", "content-type": "application/x-www-form-urlencoded"}
    with DashboardServer(settings, start_ingest=False) as server, \
            httpx.Client(base_url=server.url, timeout=10.0) as c:
        admin = {"cookie": f"__Host-miroir={http_login(c)}"}
        token = csrf_of(c.get("/", headers=admin).text)
        form = f"csrf={token}&pseudonymous_default=1&note=".encode() + b"a" * 8192
        r = c.post("/admin/settings", content=form, headers={**admin, **browser})
        assert r.status_code == 413 and "La demande est trop volumineuse." in r.text
        db = store.open_db(settings.db_path)
        try:
            assert schema.get_setting(db, "pseudonymous_default", "0") == "0"
        finally:
            db.conn.close()
        r = c.post("/admin/settings", content=form[:1024], headers={**admin, **browser})
        assert (r.status_code, r.headers["location"]) == (303, "/")


JSON_POSTS = ("/api/agents/agent-a1/flags", "/api/agents/agent-a1/goals", "/api/calls",
              "/api/calls/1/outcome", "/api/calls/1/variant", "/api/campaigns",
              "/api/campaigns/camp-a/variants", "/api/campaigns/camp-a/assign", "/api/me/private")
"""The JSON API's routes that read a body (each takes a JSON object, never a form)."""


def test_a_form_in_latin_1_posted_to_the_json_api_is_a_422_not_a_500(org_server: Any) -> None:
    """A form whose bytes are not UTF-8 (a Latin-1 client's ``note=caf\\xe9``) posted to a route
    of the JSON API answered 500 on all 9 of them: the 422 echoes the body it could not read,
    and the bytes failed the answer. It is a 422 with the body as text (the byte unreadable made
    U+FFFD), over the real server; nothing is stored."""
    import httpx

    server, data = org_server
    form = {"content-type": "application/x-www-form-urlencoded"}
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        cookie = {"cookie": "__Host-miroir="
                            f"{http_login(c, 'sup-a', USER_PASSWORD, data['secrets']['sup-a'])}"}
        token = csrf_of(c.get("/", headers=cookie).text)
        sent = b"csrf=" + token.encode() + b"&ts=1800000000&note=caf\xe9&agent=agent-a1"
        answers = {}
        for path in JSON_POSTS:
            r = c.post(path, content=sent, headers={**cookie, **form, "x-csrf-token": token})
            answers[path] = r.status_code
            if r.status_code == 422:
                assert r.json()["detail"][0]["input"] == sent.decode("utf-8", "replace"), path
        assert answers == dict.fromkeys(JSON_POSTS, 422)
        assert c.get("/api/me", headers=cookie).json()["username"] == "sup-a"  # still serving
    db = store.open_db(server.settings.db_path)
    try:
        assert db.conn.execute("SELECT count(*) FROM flags WHERE author = 'sup-a'"
                               ).fetchone()[0] == 0
    finally:
        db.conn.close()


def test_a_flag_form_shares_the_moment_with_the_team_only_when_its_box_is_ticked(
        org_server: Any) -> None:
    """The agent page's flag form sends ``shared=1`` when "share with the team" is ticked and
    nothing otherwise; any other value ("0", "off", "no": a script, a form of another tool)
    shared the agent's moment on the team board as well, as "1" does. Only "1" shares it now,
    as only "1" turns private mode or the floor's pseudonyms on; over the real server."""
    import httpx

    server, data = org_server
    sent = ("1", "0", "off", "no", "")
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        cookie = {"cookie": "__Host-miroir="
                            f"{http_login(c, 'sup-a', USER_PASSWORD, data['secrets']['sup-a'])}"}
        token = csrf_of(c.get("/", headers=cookie).text)
        for k, shared in enumerate(sent):
            r = c.post("/agents/agent-a1/flags", headers=cookie, data={
                "csrf": token, "ts": str(time.time() - 60), "note": f"moment {k}",
                "shared": shared})
            assert r.status_code == 303, r.text
    db = store.open_db(server.settings.db_path)
    try:
        stored = dict(db.conn.execute("SELECT note, shared FROM flags WHERE author = 'sup-a'"
                                      ).fetchall())
    finally:
        db.conn.close()
    assert stored == {f"moment {k}": int(shared == "1") for k, shared in enumerate(sent)}


def test_no_answer_to_a_logged_in_request_may_be_cached(org_server: Any) -> None:
    """The JSON API's answers and the CSV and JSON exports carried no Cache-Control (the pages
    did: no-store): an agent's metrics, calls and whole export could stay in a shared proxy's
    cache or the browser's disk cache. Every answer to a logged-in request, errors included, is
    now no-store, over the real server; the public static files stay cacheable."""
    import httpx

    server, data = org_server
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        admin = {"cookie": f"__Host-miroir={http_login(c)}"}
        sup = {"cookie": "__Host-miroir="
                         f"{http_login(c, 'sup-a', USER_PASSWORD, data['secrets']['sup-a'])}"}
        answers = {}
        for who, paths in ((admin, ("/api/me", "/api/agents", "/api/agents/agent-a1",
                                    "/api/agents/agent-a1/metrics", "/api/agents/agent-a1/calls",
                                    "/api/agents/agent-a1/audit", "/api/agents/agent-a1/export.csv",
                                    "/api/agents/agent-a1/export.json", "/api/audit",
                                    "/api/aggregates", "/api/campaigns/camp-a/comparison",
                                    "/api/agents/nobody", "/agents/agent-a1", "/audit")),
                           (sup, ("/api/teams/team-a/board", "/api/teams/team-a/export.csv",
                                  "/api/floor", "/api/boxes", "/api/ingest/stats"))):
            for path in paths:
                r = c.get(path, headers=who)
                answers[path] = (r.status_code, r.headers.get("cache-control"))
        # the errors answered before the routes: the body limit's 413 (with a session or not)
        # and a state change refused for its CSRF token had no Cache-Control
        from dashboard.app import MAX_BODY_BYTES

        too_big = b'{"note": "' + b"a" * MAX_BODY_BYTES + b'"}'
        for name, who in (("413 with a session", admin), ("413 without", {})):
            r = c.post("/api/agents/agent-a1/flags", content=too_big,
                       headers={**who, "content-type": "application/json"})
            answers[name] = (r.status_code, r.headers.get("cache-control"))
        r = c.post("/api/agents/agent-a1/flags", json={}, headers=admin)
        answers["403 CSRF"] = (r.status_code, r.headers.get("cache-control"))
        assert {p: a for p, a in answers.items() if a[1] != "no-store"} == {}
        assert answers["/api/agents/nobody"][0] == 404
        assert answers["413 with a session"][0] == answers["413 without"][0] == 413
        assert answers["403 CSRF"][0] == 403
        assert answers["/api/agents/agent-a1/export.json"][0] == 200
        assert c.get("/static/style.css").headers.get("cache-control") is None


# ------------------------------------------------------------------------ throttling
def test_ten_failed_logins_are_throttled_per_account_and_per_address(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, trusted_proxies=["10.0.0.0/8"])
    seed_org(settings)
    with client(settings) as c:
        for _ in range(10):
            r = c.post("/login", data={"username": "amina", "password": "wrong",
                                       "csrf": csrf_of(c.get("/login").text)})
            assert r.status_code in (401, 429)
        assert r.status_code == 429
        # Even the right password is refused while throttled.
        r = c.post("/login", data={"username": "amina", "password": USER_PASSWORD,
                                   "csrf": csrf_of(c.get("/login").text)})
        assert r.status_code == 429 and "retry-after" in r.headers
    db = store.open_db(settings.db_path)
    limits = {"window_s": 900, "max_account": 5, "max_addr": 20, "max_account_total": 50}
    assert auth.login_throttled(db, "amina", "testclient", **limits)
    assert not auth.login_throttled(db, "amina", "testclient", **limits, now=time.time() + 901)
    # the account's owner, at another address, is not locked out by them
    assert not auth.login_throttled(db, "amina", "198.51.100.7", **limits)
    # Per address: many accounts from one address.
    for i in range(20):
        failed_login(db, f"user-{i}", "203.0.113.9")
    assert auth.login_throttled(db, "bilal", "203.0.113.9", **limits)
    assert not auth.login_throttled(db, "bilal", "203.0.113.10", **limits)
    # X-Forwarded-For is believed only from a trusted proxy, walked from the right.
    nets = ["10.0.0.0/8"]
    assert auth.client_address("203.0.113.5", "1.2.3.4", nets) == "203.0.113.5"
    assert auth.client_address("10.1.2.3", "1.2.3.4", nets) == "1.2.3.4"
    assert auth.client_address("10.1.2.3", "6.6.6.6, 1.2.3.4, 10.9.9.9", nets) == "1.2.3.4"
    assert auth.client_address("10.1.2.3", "garbage", nets) == "10.1.2.3"


def test_a_stranger_cannot_lock_a_supervisor_out(tmp_path: Path) -> None:
    """Failures from other addresses do not throttle the account's owner; a guess spread over many
    addresses throttles the account, but not in a browser that completed a login to it before."""
    settings = make_settings(tmp_path)
    data = seed_org(settings)
    db = store.open_db(settings.db_path)
    cookie = auth.device_cookie_name(settings.secure_cookies)

    def log_in(c: TestClient, user: str = "amina") -> int:
        return c.post("/login", data={"username": user, "password": USER_PASSWORD,
                                      "csrf": csrf_of(c.get("/login").text)}).status_code

    with client(settings) as known:
        r = known.post("/login", data={"username": "amina", "password": USER_PASSWORD,
                                       "csrf": csrf_of(known.get("/login").text)})
        assert r.status_code == 303
        [set_cookie] = [h for h in r.headers.get_list("set-cookie") if h.startswith(cookie + "=")]
        attrs = {a.strip().lower() for a in set_cookie.split(";")}
        assert {"secure", "httponly", "samesite=strict", "path=/", "max-age=7776000"} <= attrs
        device = known.cookies.get(cookie)
        assert device and log_in(known) == 303
        # a known browser keeps its token (renewed, not replaced)...
        assert known.cookies.get(cookie) == device
        # ...and can be known to a second account
        assert log_in(known, "bilal") == 303
        device = known.cookies.get(cookie)
        assert len(auth.device_tokens(device)) == 2
        assert auth.known_device(db, "amina", device) and auth.known_device(db, "bilal", device)
    # a stranger: 5 wrong passwords from each of 4 addresses, then 10 from each of 5 more
    for i in range(4):
        for _ in range(5):
            failed_login(db, "amina", f"198.51.100.{i}")
    with client(settings) as fresh:
        assert log_in(fresh) == 303  # 20 failures from elsewhere: the owner logs in as usual
    for i in range(4, 9):  # (the owner's login cleared the first 20)
        for _ in range(10):
            failed_login(db, "amina", f"198.51.100.{i}")
            failed_login(db, "sup-b", f"198.51.100.{i}")
    with client(settings) as fresh:  # 50 failures on the account since its last login
        r = fresh.post("/login", data={"username": "amina", "password": USER_PASSWORD,
                                       "csrf": csrf_of(fresh.get("/login").text)})
        assert r.status_code == 429 and "retry-after" in r.headers
    with client(settings, cookies={cookie: "forged-" + "x" * 40}) as forged:
        assert log_in(forged) == 429
    with client(settings, cookies={cookie: device}) as known:
        assert log_in(known, "sup-b") == 429  # a mark counts for its own account only
        assert log_in(known, "amína") == 401  # a name outside ASCII is a wrong login, not a 500
        assert log_in(known) == 303  # the browser that logged in before still gets in
    # logins without the cookie (a private window, a script) do not grow the table without end
    for _ in range(auth.DEVICES_PER_USER_MAX + 5):
        auth.remember_device(db, "amina", None)
    rows = db.conn.execute("SELECT count(*) FROM known_devices WHERE username = 'amina'").fetchone()
    assert rows[0] == auth.DEVICES_PER_USER_MAX
    # a mark lasts 90 days from the browser's last login to the account, not its first
    t0 = time.time()
    assert auth.known_device(db, "bilal", device, now=t0 + 91 * 86400) is None
    auth.remember_device(db, "bilal", device, now=t0 + 89 * 86400)  # bilal logs in on day 89
    assert auth.known_device(db, "bilal", device, now=t0 + 120 * 86400) is not None
    # one-time codes: 5 wrong ones on the account, whatever the addresses, throttle its code step
    # (only someone with the password gets there, so the owner's browser is not spared)
    for i in range(5):
        failed_login(db, "sup-a", f"203.0.113.{i}", kind="code")
    secret = data["secrets"]["sup-a"]
    with client(settings) as c:
        assert log_in(c, "sup-a") == 303
        r = c.post("/login/totp", data={"code": totp.hotp(secret, totp.step_of(time.time())),
                                        "csrf": csrf_of(c.get("/login/totp").text)})
        assert r.status_code == 429
    db.conn.close()


def test_a_dashboard_that_ran_migration_3_gets_migration_4(tmp_path: Path) -> None:
    """A database at version 3 (known browsers dated by their first login, no attempt kinds)
    is brought to version 4 and keeps its known browsers."""
    db = store.open_db(tmp_path / "v3.db")
    assert schema.ensure_schema(db, schema.MIGRATIONS[:3]) == 3
    token = "t" * 43
    with db.conn:
        db.conn.execute("INSERT INTO known_devices (token_hash, username, created_ts) VALUES (?, ?, ?)",
                        (auth._token_hash(token), "chef", time.time()))
        db.conn.execute("INSERT INTO login_attempts (ts, username, addr, ok) VALUES (?, ?, ?, 0)",
                        (time.time(), "chef", "198.51.100.1"))
    assert schema.ensure_schema(db) == len(schema.MIGRATIONS) == 13
    assert auth.known_device(db, "chef", token) == token
    assert db.conn.execute("SELECT kind FROM login_attempts").fetchone()[0] == "password"
    failed_login(db, "chef", "198.51.100.1", kind="code")
    assert not auth.codes_throttled(db, "chef", window_s=900, max_codes=2)
    failed_login(db, "chef", "198.51.100.2", kind="code")
    assert auth.codes_throttled(db, "chef", window_s=900, max_codes=2)
    db.conn.close()


def test_throttling_uses_the_forwarded_address_only_behind_a_trusted_proxy(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        make_settings(tmp_path, trusted_proxies=["not-an-address"])
    settings = make_settings(tmp_path, trusted_proxies=["127.0.0.0/8"],
                             login_max_failures_account=100, login_max_failures_addr=3)
    seed_org(settings)
    # TestClient's peer is "testclient", not an IP, so it is never a trusted proxy: the
    # forged header does not let an attacker rotate addresses.
    with client(settings) as c:
        for i in range(3):
            c.post("/login", data={"username": f"x{i}", "password": "bad",
                                   "csrf": csrf_of(c.get("/login").text)},
                   headers={"x-forwarded-for": f"192.0.2.{i}"})
        r = c.post("/login", data={"username": "amina", "password": USER_PASSWORD,
                                   "csrf": csrf_of(c.get("/login").text)},
                   headers={"x-forwarded-for": "192.0.2.200"})
        assert r.status_code == 429


# ------------------------------------------------------------------------ role scope
def _team_b_urls(ids: dict[str, Any]) -> list[tuple[str, str]]:
    """Every route with an id parameter, filled with each id of team B."""
    from dashboard.routes import api, boxes, pages

    values = {"agent": ids["agents"], "team": [ids["team"]], "flag_id": ids["flags"],
              "goal_id": ids["goals"], "call_id": ids["calls"], "campaign": ids["campaigns"],
              "box": ids["boxes"]}
    urls = []
    for route in [*api.router.routes, *pages.router.routes, *boxes.router.routes]:
        params = re.findall(r"{(\w+)(?::\w+)?}", getattr(route, "path", ""))
        if not params or not set(params) <= set(values):
            continue
        for method in sorted(route.methods or ()):
            if method == "HEAD":
                continue
            [param] = params
            for v in values[param]:
                url = re.sub("{" + param + r"(?::\w+)?}", str(v), route.path)
                urls.append((method, url + (f"?ts={time.time()}" if url.endswith("/moment")
                                            else "")))
    return urls


def test_supervisor_of_team_a_gets_404_for_every_object_of_team_b(org: Any) -> None:
    settings, data = org
    app = create_app(settings, start_ingest=False)
    urls = _team_b_urls(data["team_b"])
    assert len(urls) >= 25
    # Closing a campaign comes last: the other campaign writes need it open.
    urls.sort(key=lambda mu: mu[1].endswith("/close"))
    bodies = {"flags": {"ts": time.time(), "note": "x"},
              "goals": {"metric": "near_speech_ratio", "label": "x"},
              "outcome": {"outcome": "meeting"},
              "/variants": {"name": "Nouvelle accroche", "text": "x"},
              "/variant": {"variant": 3},
              "/assign": {"agent": "agent-b1", "variant": 3},
              "/close": {"confirm": "1"}}
    got: dict[str, dict[tuple[str, str], int]] = {}
    for user in ("sup-a", "sup-b"):
        with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
            login_as(c, user, data)
            hdr = csrf_header(c)
            got[user] = {}
            for method, url in urls:
                if url.endswith("/erase"):
                    continue  # admin-only; checked below
                body = next((b for k, b in bodies.items() if url.endswith(k)), None)
                if body and "name" in body:  # variant names are unique per campaign
                    body = {**body, "name": f"{body['name']} {url[:5]}"}
                r = c.request(method, url, headers=hdr,
                              json=body if url.startswith("/api") else None,
                              data=None if url.startswith("/api") else
                              {k: str(v) for k, v in (body or {}).items()})
                got[user][(method, url)] = r.status_code
    refused = {k: v for k, v in got["sup-a"].items() if v != 404}
    assert refused == {}, f"team A's supervisor reached team B objects: {refused}"
    # The same URLs do work for team B's own supervisor (so the walk tests real objects).
    ok = [k for k, v in got["sup-b"].items() if v in (200, 201, 303)]
    assert len(ok) >= len(got["sup-b"]) - 2, got["sup-b"]
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        login_as(c, "sup-a", data)
        assert c.post("/api/agents/agent-b1/erase", headers=csrf_header(c)).status_code == 404
        boxes = [b["box"] for b in c.get("/api/boxes").json()["boxes"]]
        assert "box-b1" not in boxes and "box-a1" in boxes
        seats = [s["box"] for s in c.get("/api/floor").json()["seats"]]
        assert sorted(seats) == ["box-a1", "box-a2"]
        assert [a["agent"] for a in c.get("/api/agents").json()["agents"]] == [
            "agent-a1", "agent-a2"]


def test_a_variant_of_another_teams_campaign_answers_as_one_that_does_not_exist(
        org_server: Any) -> None:
    """Team B's variant 3 named on a call of team A's supervisor answered "campaign not found"
    (404) where a variant that does not exist answered "variant not found", and as a new call's
    variant 404 where one that does not exist answered 422: team A's supervisor could tell
    which variant ids team B's campaigns hold. Both now answer alike, over the real server;
    nothing is written."""
    import httpx

    server, data = org_server
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        cookie = {"cookie": "__Host-miroir="
                            f"{http_login(c, 'sup-a', USER_PASSWORD, data['secrets']['sup-a'])}"}
        hdr = {**cookie, "x-csrf-token": csrf_of(c.get("/", headers=cookie).text)}
        answers = {}
        for variant in (3, 999_999):  # team B's, and none
            r = c.post("/api/calls/1/variant", json={"variant": variant}, headers=hdr)
            answers["tag", variant] = (r.status_code, r.json()["detail"])
            r = c.post("/api/calls", json={"agent": "agent-a1", "start_ts": time.time(),
                                           "variant": variant}, headers=hdr)
            answers["call", variant] = (r.status_code, r.json()["detail"])
    assert answers["tag", 3] == answers["tag", 999_999], answers
    assert answers["call", 3] == answers["call", 999_999], answers
    assert answers["tag", 3][0] == 404 and answers["call", 3][0] == 422
    db = store.open_db(server.settings.db_path)
    try:
        assert db.conn.execute("SELECT count(*) FROM calls WHERE variant = 3 AND agent != "
                               "'agent-b1' OR created_by = 'sup-a'").fetchone()[0] == 0
    finally:
        db.conn.close()


def test_an_agent_gets_only_their_own_data_and_the_auditor_only_aggregates(org: Any) -> None:
    settings, data = org
    with client(settings) as c:
        login_as(c, "amina", data)
        assert c.get("/").headers["location"] == "/me"
        assert c.get("/me").status_code == 200
        own = c.get("/api/agents/agent-a1/metrics").json()
        assert len(own["rows"]) == 240 and own["cues"] and own["metrics"]
        for other in ("agent-a2", "agent-b1"):
            for suffix in ("", "/metrics", "/flags", "/goals", "/calls", "/audit", "/export.csv"):
                assert c.get(f"/api/agents/{other}{suffix}").status_code == 404, (other, suffix)
        assert [a["agent"] for a in c.get("/api/agents").json()["agents"]] == ["agent-a1"]
        assert [b["box"] for b in c.get("/api/boxes").json()["boxes"]] == ["box-a1"]
        assert c.get("/api/boxes/box-a2/metrics").status_code == 404
        for path in ("/api/floor", "/api/audit", "/api/aggregates", "/api/teams/team-a/board",
                     "/agents/agent-a1", "/teams/team-a", "/audit", "/api/campaigns/camp-a/comparison"):
            assert c.get(path).status_code == 404, path
        calls = c.get("/api/agents/agent-a1/calls").json()["calls"]
        hdr = csrf_header(c)
        assert c.post(f"/api/calls/{calls[0]['id']}/outcome", json={"outcome": "callback"},
                      headers=hdr).status_code == 200
        assert c.post("/api/agents/agent-a1/flags", json={"ts": time.time()}, headers=hdr
                      ).status_code == 404  # agents do not flag
    with client(settings) as c:
        login_as(c, "auditrice", data)
        assert c.get("/").headers["location"] == "/audit"
        assert c.get("/audit").status_code == 200
        assert c.get("/api/audit").status_code == 200
        agg = c.get("/api/aggregates").json()["aggregates"]
        assert {a["team"] for a in agg} == {"team-a", "team-b"}
        assert all(set(a) == {"team", "metric", "mean", "agents", "withheld"} for a in agg)
        for agent in ("agent-a1", "agent-b1"):
            for suffix in ("", "/metrics", "/flags", "/calls", "/export.csv", "/moment?ts=1"):
                assert c.get(f"/api/agents/{agent}{suffix}").status_code == 404
        assert c.get("/api/boxes").status_code == 404
        assert c.get("/api/floor").status_code == 404
        assert c.get("/api/agents").json()["agents"] == []


def test_a_supervisor_typing_agents_or_teams_is_sent_to_the_page_that_lists_them(
        org: Any) -> None:
    """/agents and /teams, which a supervisor may type (the agent pages live under /agents/…,
    the boards under /teams/…), answered 404. A supervisor of one team goes to its board (its
    agents listed), an admin to the floor (every seat, a link to each team's board); an
    agent and the auditor still get the 404 of a page that is not theirs, and the answer is
    only a redirect: nothing read, nothing audited."""
    settings, data = org
    for user, to in (("sup-a", "/teams/team-a"), ("admin", "/")):
        with client(settings) as c:
            login_as(c, user, data)
            for path in ("/agents", "/teams"):
                r = c.get(path)
                assert (r.status_code, r.headers.get("location")) == (303, to), (user, path)
            assert c.get(to).status_code == 200
    for user in ("amina", "auditrice"):
        with client(settings) as c:
            login_as(c, user, data)
            for path in ("/agents", "/teams"):
                assert c.get(path).status_code == 404, (user, path)
    db = store.open_db(settings.db_path)
    try:
        audited = db.conn.execute("SELECT actor, count(*) FROM audit_log WHERE action = "
                                  "'team_board' GROUP BY actor").fetchall()
    finally:
        db.conn.close()
    assert audited == [("sup-a", 2)]  # the board opened (its two agents), not the redirects


def test_password_hashes_are_argon2id(org: Any) -> None:
    settings, _ = org
    db = store.open_db(settings.db_path)
    hashes = [r[0] for r in db.conn.execute("SELECT password_hash FROM users")]
    assert len(hashes) == 6
    assert all(h.startswith("$argon2id$v=19$") for h in hashes)
    assert auth.verify_password(hashes[1], USER_PASSWORD)


# ------------------------------------------------------------------------------ audit
def test_supervisor_reads_are_audited_and_the_audit_log_is_append_only(org: Any) -> None:
    settings, data = org
    with client(settings) as c:
        login_as(c, "sup-b", data)
        assert c.get("/agents/agent-b1").status_code == 200
        assert c.get("/api/agents/agent-b1/metrics").status_code == 200
        assert c.get("/api/agents/agent-b1/audit").status_code == 404  # not the supervisor's
    with client(settings) as c:
        login_as(c, "bilal", data)
        entries = c.get("/api/agents/agent-b1/audit").json()["entries"]
        assert [(e["actor"], e["action"]) for e in entries][:2] == [
            ("sup-b", "read_metrics"), ("sup-b", "view_agent")]
        page = c.get("/me").text
        assert "sup-b" in page and "débit élevé" in page
        c.get("/api/agents/agent-b1/metrics")  # the agent's own reads are not supervision
    db = store.open_db(settings.db_path)
    assert db.conn.execute("SELECT count(*) FROM audit_log WHERE actor = 'bilal'"
                           ).fetchone()[0] == 0
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.conn.execute("UPDATE audit_log SET actor = 'nobody'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.conn.execute("DELETE FROM audit_log")


# -------------------------------------------------------------------------- retention
def test_retention_purge_with_a_controlled_clock(org: Any) -> None:
    settings, _ = org
    db = store.open_db(settings.db_path)
    now = time.time()
    user = access.User("sup-b", "supervisor", None, frozenset({"team-b"}))
    for days in (400, 100, 40, 10, 1):
        access.audit(db, user, "view_agent", "agent-b1", now=now - days * 86400)
    with db.conn:
        for days in (400, 40, 2):
            db.conn.execute("INSERT INTO metrics (box, seq, ts, ingested_ts, near_speech_ratio, "
                            "far_speech_ratio, talk_state) VALUES ('box-a1', ?, ?, ?, 0.5, 0.1, "
                            "'agent')", (100_000 + days, now - days * 86400, now))
            db.conn.execute("INSERT INTO calls (agent, start_ts) VALUES ('agent-a1', ?)",
                            (now - days * 86400,))
            db.conn.execute("INSERT INTO flags (agent, ts, author, created_ts) VALUES "
                            "('agent-a1', ?, 'sup-a', ?)", (now - days * 86400, now))
            failed_login(db, "amina", "192.0.2.1", now=now - days * 86400)
    before = db["metrics"].count
    # The clock moves 31 days on: every per-second row of the seed is now past 30 days.
    later = now + 31 * 86400
    out = retention.purge(db, metrics_days=30, aggregates_days=365, audit_days=180, now=later)
    assert out["metrics"] == before and out["calls"] == 1 and out["flags"] == 1
    limits = {"metrics": ("ts", 30), "events": ("ts", 30), "calls": ("start_ts", 365),
              "flags": ("ts", 365), "audit_log": ("ts", 180), "login_attempts": ("ts", 180)}
    for table, (col, days) in limits.items():
        oldest = db.conn.execute(f"SELECT min({col}) FROM {table}").fetchone()[0]
        assert oldest is None or oldest >= later - days * 86400, table
    assert db.conn.execute("SELECT count(*) FROM audit_log").fetchone()[0] == 4
    # Day-level means survive the per-second purge (for goals and the team board).
    assert db.conn.execute("SELECT count(*) FROM daily_aggregates WHERE agent = 'agent-a1'"
                           ).fetchone()[0] > 0
    assert analytics.daily_means(db, "agent-a1", "near_speech_ratio", 60, now=later)
    # The purge runs again without finding anything more.
    again = retention.purge(db, metrics_days=30, aggregates_days=365, audit_days=180, now=later)
    assert sum(again.values()) == 0
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.conn.execute("DELETE FROM audit_log")


# ---------------------------------------------------------------- export, erasure, more
def test_the_purge_forgets_old_browser_marks_and_sessions_without_waiting_for_a_login(
        org: Any) -> None:
    """A browser last used to log in 100 days ago (a mark lasts 90, the README says) and a
    session from 400 days ago, then nobody logs in: the real ``miroir dashboard purge`` deletes
    both. They were deleted only when someone completed a login or opened a session, so a
    quiet dashboard kept them (the username and when) however long; a recent mark and a live
    session stay."""

    settings, _ = org
    now = time.time()
    db = store.open_db(settings.db_path)
    with db.conn:
        for token, days in (("old", 100.0), ("recent", 10.0)):
            db.conn.execute("INSERT INTO known_devices (token_hash, username, last_login_ts) "
                            "VALUES (?, 'amina', ?)", (token, now - days * 86400))
        for token, age_s in (("old", 400 * 86400.0), ("live", 60.0)):
            db.conn.execute("INSERT INTO sessions (token_hash, username, csrf, created_ts, "
                            "last_seen_ts) VALUES (?, 'amina', 'c', ?, ?)",
                            (token, now - age_s, now - age_s))
    db.conn.close()
    _purge_cli(settings)
    db = store.open_db(settings.db_path)
    try:
        marks = [t for (t,) in db.conn.execute("SELECT token_hash FROM known_devices")]
        sessions = [t for (t,) in db.conn.execute("SELECT token_hash FROM sessions")]
    finally:
        db.conn.close()
    assert marks == ["recent"] and sessions == ["live"]


def test_agent_export_and_erasure(org: Any) -> None:
    settings, data = org
    with client(settings) as c:
        login_as(c, "amina", data)
        r = c.get("/api/agents/agent-a1/export.csv")
        lines = r.text.splitlines()
        assert r.headers["content-type"].startswith("text/csv")
        assert lines[0].startswith("agent,box,seq,time_utc,ts,talk_state,near_speech_ratio")
        assert len(lines) == 241 and all(line.startswith("agent-a1,box-a1,") for line in lines[1:])
        full = c.get("/api/agents/agent-a1/export.json").json()
        assert len(full["metrics"]) == 240 and full["calls"] and full["agent"][0]["name"]
    db = store.open_db(settings.db_path)
    marked = "SELECT count(*) FROM known_devices WHERE username = 'amina'"
    assert db.conn.execute(marked).fetchone()[0] == 1  # the browser she logged in from
    out = retention.erase_agent(db, "agent-a1")
    assert db.conn.execute(marked).fetchone()[0] == 0
    assert out["metrics"] == 240 and out["users"] == 1 and out["agents"] == 1
    assert db.conn.execute("SELECT count(*) FROM metrics WHERE box = 'box-a1'").fetchone()[0] == 0
    assert db.conn.execute("SELECT count(*) FROM metrics WHERE box = 'box-a2'").fetchone()[0] == 240
    assert db.conn.execute("SELECT count(*) FROM users WHERE username = 'amina'").fetchone()[0] == 0
    assert db.conn.execute("SELECT count(*) FROM calls WHERE agent = 'agent-a1'").fetchone()[0] == 0


def test_erasure_leaves_nothing_that_names_the_agent_but_the_audit_log(org: Any) -> None:
    """amina logs in, someone tries her password from 10.0.0.7, a supervisor reads and flags
    her, then the admin erases her through the API: once the purge loop has deleted her rows
    (``GET /api/erasures``), no table but the audit log (kept, as docs/privacy.md says) still holds
    her agent id or username. Her login attempts, each with its time and address, stayed for the
    audit retention (365 days) before. (The check right after the answer raced the loop: a fresh
    clone's run found her 240 metrics rows left, the app closed before the loop had run.)"""
    settings, data = org
    with client(settings) as c:
        login_as(c, "amina", data)
    with client(settings) as c:
        login_as(c, "sup-a", data)
        assert c.get("/api/agents/agent-a1/metrics").status_code == 200
        assert c.post("/api/agents/agent-a1/flags", headers=csrf_header(c),
                      json={"ts": time.time() - 30, "note": "rythme"}).status_code == 201
    db = store.open_db(settings.db_path)
    failed_login(db, "amina", "10.0.0.7")
    db.conn.close()
    with client(settings) as c:
        login_as(c, "admin", data)
        r = c.post("/api/agents/agent-a1/erase", headers=csrf_header(c))
        assert r.status_code == 200 and r.json()["deleted"]["login_attempts"] == 2
        # her per-second rows go after the answer, in the purge loop, which stops with the app
        wait_until(lambda: c.get("/api/erasures").json()["left"] == {"metrics": 0, "events": 0},
                   "the erasure's rows deleted")
    db = store.open_db(settings.db_path)
    left = {}
    for (table,) in db.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        cols = [r[1] for r in db.conn.execute(f"PRAGMA table_info({table})")]
        where = " OR ".join(f"CAST({c} AS TEXT) IN ('agent-a1', 'amina')" for c in cols)
        n = db.conn.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]
        if n:
            left[table] = n
    assert db.conn.execute("SELECT count(*) FROM metrics WHERE box = 'box-a1'").fetchone()[0] == 0
    db.conn.close()
    # sup-a's read of her metrics, sup-a's flag about her, and the erasure itself
    assert left == {"audit_log": 3}


def test_erased_and_purged_rows_are_not_left_readable_in_the_database_files(org: Any) -> None:
    """While the dashboard runs (a connection stays open, as the ingest's does), an erasure
    deleted amina's rows in the write-ahead log only: her name was still in dashboard.db, her
    flag's note in dashboard.db-wal, both readable with a text editor until a checkpoint
    (1,000 pages of later writes). The same held for rows the retention purge deleted. Now the
    erasure and the purge copy the deletion into the file (deleted content zeroed: secure_delete)
    and empty the log; the audit log's entries about her stay (docs/privacy.md)."""
    settings, data = org
    files = [settings.db_path, Path(f"{settings.db_path}-wal")]

    def readable(text: str) -> int:
        return sum(f.read_bytes().count(text.encode()) for f in files if f.exists())

    now = time.time()
    ingest = store.open_db(settings.db_path)  # the running dashboard's own connection
    try:
        def flag(agent: str, note: str, ts: float) -> None:
            with ingest.conn:
                ingest.conn.execute("INSERT INTO flags (agent, ts, note, author, created_ts) "
                                    "VALUES (?, ?, ?, 'sup-a', ?)", (agent, ts, note, ts))

        flag("agent-a1", "note-zebra-quartz", now)
        assert readable("Amina Diallo") and readable("note-zebra-quartz")
        with client(settings) as c:
            login_as(c, "admin", data)
            r = c.post("/api/agents/agent-a1/erase", headers=csrf_header(c))
            assert r.status_code == 200, r.text
        assert (readable("Amina Diallo"), readable("note-zebra-quartz")) == (0, 0)
        flag("agent-b1", "note-old-walrus", now - 400 * 86400)  # past every retention
        assert readable("note-old-walrus") == 1
        _purge_cli(settings)
        assert readable("note-old-walrus") == 0
        assert ingest.conn.execute("SELECT count(*) FROM audit_log WHERE agent = 'agent-a1' "
                                   "AND action = 'erase'").fetchone()[0] == 1
    finally:
        ingest.conn.close()


def test_an_erasure_deletes_the_agents_rows_in_batches_each_its_own_transaction(
        org: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Erasing an agent deleted a month of their per-second rows in one transaction: on a copy
    of a month of 6 boxes (633,600 metrics and 411,840 events of one agent) it held the database
    28.6 s while 60 boxes published, their rows waited up to 26 s and an agent page answered 500
    "database is locked". Now one transaction deletes everything else and notes the agent's
    seat windows, then their rows go a batch per transaction. Fails before the fix: one DELETE
    of all 240 rows, in the transaction that deleted the agent."""
    settings, _ = org
    monkeypatch.setattr(retention, "PURGE_BATCH_ROWS", 25)
    monkeypatch.setattr(retention, "PURGE_PAUSE_S", 0.0)
    db = store.open_db(settings.db_path)
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    try:
        out = retention.erase_agent(db, "agent-a1")
    finally:
        db.conn.set_trace_callback(None)
    assert (out["metrics"], out["events"], out["agents"]) == (240, 3, 1)
    deletes = [i for i, s in enumerate(statements) if s.startswith("DELETE FROM metrics")]
    commits = [i for i, s in enumerate(statements) if s == "COMMIT"]
    assert len(deletes) == 240 // 25 + 1, len(deletes)
    agent_row = next(i for i, s in enumerate(statements) if s.startswith("DELETE FROM agents"))
    assert any(agent_row < c < deletes[0] for c in commits)  # the agent went first, alone
    assert all(any(a < c < b for c in commits) for a, b in itertools.pairwise(deletes))
    counts = dict(db.conn.execute("SELECT box, count(*) FROM metrics GROUP BY box").fetchall())
    assert "box-a1" not in counts and counts["box-a2"] == 240
    assert db.conn.execute("SELECT count(*) FROM erasures").fetchone()[0] == 0


def test_an_erasure_stopped_half_way_is_unreachable_and_finished_by_the_next_purge(
        org: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server stops between two batches of an erasure, which the purge loop deletes after
    the request answered (here: the pause between them raises): the erasure is audited,
    nothing of the agent can be read any more, and the next retention purge (at the next
    start, here the real `miroir dashboard purge`) deletes the rest of their rows and only
    theirs: the row the box sent for the agent seated after them stays. Fails before the fix:
    the erasure had no batches to stop between."""
    import threading
    import types

    stopped = threading.Event()

    def stop(_s: float) -> None:
        stopped.set()
        raise RuntimeError("the server stopped")

    settings, data = org
    monkeypatch.setattr(retention, "PURGE_BATCH_ROWS", 25)
    monkeypatch.setattr(retention, "time", types.SimpleNamespace(
        time=time.time, gmtime=time.gmtime, strftime=time.strftime, sleep=stop))
    with client(settings, raise_server_exceptions=False) as c:
        login_as(c, "admin", data)
        r = c.post("/api/agents/agent-a1/erase", headers=csrf_header(c))
        assert r.status_code == 200 and r.json()["left"]["metrics"] == 240
        wait_until(stopped.is_set, "the purge loop stopped between two batches")
        for url in ("/api/agents/agent-a1/metrics", "/api/agents/agent-a1/export.json",
                    "/agents/agent-a1"):
            assert c.get(url).status_code == 404, url
        board = c.get("/api/teams/team-a/board").json()
        assert [a["agent"] for a in board["agents"]] == ["agent-a2"]
    monkeypatch.undo()
    db = store.open_db(settings.db_path)
    assert db.conn.execute("SELECT count(*) FROM audit_log WHERE action = 'erase' "
                           "AND agent = 'agent-a1'").fetchone()[0] == 1
    left = "SELECT count(*) FROM metrics WHERE box = 'box-a1'"
    assert db.conn.execute(left).fetchone()[0] == 240 - 25
    assert db.conn.execute("SELECT count(*) FROM erasures").fetchone()[0] == 1
    after = time.time() + 1
    schema.import_inventory(db, [{"box": "box-a1", "agent": "agent-a9", "team": "team-a"}],
                            site=settings.site, now=after)
    store.insert_metrics(db, {"v": wire.SCHEMA_VERSION, "site": settings.site, "box": "box-a1",
                              "seq": 5000, "ts": after + 1, "window_s": 1.0,
                              "talk_state": "agent"}, after + 1)
    db.conn.close()
    _purge_cli(settings)
    db = store.open_db(settings.db_path)
    try:
        assert db.conn.execute("SELECT seq FROM metrics WHERE box = 'box-a1'").fetchall() == \
            [(5000,)]
        assert db.conn.execute("SELECT count(*) FROM events WHERE box = 'box-a1'"
                               ).fetchone()[0] == 0
        assert db.conn.execute("SELECT count(*) FROM erasures").fetchone()[0] == 0
        assert db.conn.execute("SELECT count(*) FROM metrics WHERE box = 'box-a2'"
                               ).fetchone()[0] == 240
    finally:
        db.conn.close()


def test_an_erasure_answers_once_the_agent_is_unreachable_and_its_rows_go_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the real server, the erase request deleted every per-second row of the agent before
    it answered: 72.9 s for 4,800,240 rows of one agent (8.1 s for 600,240), nothing said
    meanwhile, and a proxy's 60 s read timeout answers 504. It now answers once nothing of the
    agent is reachable (their rows held back here until the test lets them go: before the fix
    the request waits for them and times out), with the rows deleted and the 240 per-second
    rows left; every page and API then answers as if she never was, and the dashboard's purge
    loop deletes her rows, followed by ``GET /api/erasures``."""
    import threading

    import httpx

    from dashboard.app import DashboardServer

    settings = make_settings(tmp_path)
    seed_org(settings)
    let_go = threading.Event()
    delete_window_rows = retention._delete_window_rows

    def held(*args: Any) -> int:
        let_go.wait()
        return delete_window_rows(*args)

    monkeypatch.setattr(retention, "_delete_window_rows", held)
    monkeypatch.setattr(retention, "PURGE_BATCH_ROWS", 25)
    agent_urls = ["/agents/agent-a1", "/api/agents/agent-a1", "/api/agents/agent-a1/metrics",
                  "/api/agents/agent-a1/calls", "/api/agents/agent-a1/flags",
                  "/api/agents/agent-a1/goals", "/api/agents/agent-a1/export.json",
                  "/api/agents/agent-a1/export.csv"]
    lists = ["/teams/team-a", "/campaigns/camp-a", "/api/agents", "/api/floor", "/api/teams/team-a/board"]
    with DashboardServer(settings, start_ingest=False) as server, \
            httpx.Client(base_url=server.url, timeout=10.0) as c:
        try:
            amina = {"cookie": f"__Host-miroir={http_login(c, 'amina', USER_PASSWORD)}"}
            admin = {"cookie": f"__Host-miroir={http_login(c)}"}
            auditor = {"cookie": f"__Host-miroir={http_login(c, 'auditrice', USER_PASSWORD)}"}
            assert c.get("/api/me", headers=amina).status_code == 200
            assert all(c.get(u, headers=admin).status_code == 200 for u in agent_urls)
            assert all("agent-a1" in c.get(u, headers=admin).text for u in lists)
            token = csrf_of(c.get("/", headers=admin).text)
            r = c.post("/api/agents/agent-a1/erase", headers={**admin, "x-csrf-token": token})
            assert r.status_code == 200, r.text
            assert r.json()["left"] == {"metrics": 240, "events": 3}
            deleted = r.json()["deleted"]
            assert (deleted["agents"], deleted["users"], deleted["seat_history"]) == (1, 1, 1)
            assert c.get("/api/erasures", headers=admin).json() == \
                {"left": {"metrics": 240, "events": 3}}
            assert c.get("/api/erasures", headers=auditor).status_code == 404  # admins only
            assert [c.get(u, headers=admin).status_code for u in agent_urls] == \
                [404] * len(agent_urls)
            for u in lists:
                page = c.get(u, headers=admin)
                assert page.status_code == 200 and "agent-a1" not in page.text, u
                assert "Amina" not in page.text, u
            assert c.get("/api/me", headers=amina).status_code == 401
            assert c.get("/api/erasures", headers=amina).status_code == 401
        finally:
            let_go.set()
        wait_until(lambda: c.get("/api/erasures", headers=admin).json()["left"] ==
                   {"metrics": 0, "events": 0}, "the erasure's rows deleted")
    db = store.open_db(settings.db_path)
    try:
        counts = dict(db.conn.execute("SELECT box, count(*) FROM metrics GROUP BY box").fetchall())
        assert "box-a1" not in counts and counts["box-a2"] == 240
        assert db.conn.execute("SELECT count(*) FROM events WHERE box = 'box-a1'"
                               ).fetchone()[0] == 0
        assert db.conn.execute("SELECT count(*) FROM audit_log WHERE action = 'erase' "
                               "AND agent = 'agent-a1' AND actor = 'admin'"
                               ).fetchone()[0] == 1
    finally:
        db.conn.close()


def test_migrations_keep_data_and_run_once(tmp_path: Path) -> None:
    db = store.open_db(tmp_path / "old.db")
    store.ensure_schema(db)  # a database from before the versioned migrations
    with db.conn:
        db.conn.execute("INSERT INTO users (username, password_hash, role, created_ts) "
                        "VALUES ('chef', ?, 'admin', 1.0)", (auth.hash_password("x" * 12),))
        db.conn.execute("INSERT INTO metrics (box, seq, ts, ingested_ts, talk_state) "
                        "VALUES ('box-a', 1, 1.0, 1.0, 'agent')")
    assert schema.schema_version(db) == 0
    assert schema.ensure_schema(db) == len(schema.MIGRATIONS)
    assert db.conn.execute("SELECT lang, disabled FROM users").fetchone() == ("fr", 0)
    assert db["metrics"].count == 1
    calls: list[int] = []

    def m_next(d: Any) -> None:
        """Add a column."""
        calls.append(1)
        d.conn.execute("ALTER TABLE agents ADD COLUMN nickname TEXT")

    steps = [*schema.MIGRATIONS, m_next]
    assert schema.ensure_schema(db, steps) == len(steps)
    assert schema.ensure_schema(db, steps) == len(steps)
    assert calls == [1] and db["metrics"].count == 1
    assert "nickname" in {c.name for c in db["agents"].columns}


def test_backup_and_restore(org: Any, tmp_path: Path) -> None:
    settings, _ = org
    dest = retention.backup(settings.db_path, tmp_path / "bk" / "dash.db")
    assert oct(dest.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(FileExistsError):
        retention.backup(settings.db_path, dest)
    db = store.open_db(settings.db_path)
    n = db["metrics"].count
    with db.conn:
        db.conn.execute("DELETE FROM metrics")
    db.conn.close()
    retention.restore(dest, settings.db_path)
    assert store.open_db(settings.db_path)["metrics"].count == n


def test_import_inventory_is_idempotent_and_keeps_seat_history(tmp_path: Path) -> None:
    db = store.open_db(tmp_path / "d.db")
    schema.ensure_schema(db)
    rows = [{"box": "box-1", "seat": "P1", "agent": "ag-1", "team": "t1"},
            {"box": "box-2", "seat": "P2", "agent": "ag-2", "team": "t1"}]
    assert schema.import_inventory(db, rows, site="s", now=100.0) == 2
    assert schema.import_inventory(db, rows, site="s", now=200.0) == 2
    assert db["seat_history"].count == 2
    # ag-1 moves to box-2 (ag-2 left): the history closes both old windows.
    schema.import_inventory(db, [{"box": "box-2", "agent": "ag-1", "seat": "P2"}], now=300.0)
    hist = list(db.query("SELECT box, agent, from_ts, to_ts FROM seat_history ORDER BY id"))
    assert hist == [{"box": "box-1", "agent": "ag-1", "from_ts": 100.0, "to_ts": 300.0},
                    {"box": "box-2", "agent": "ag-2", "from_ts": 100.0, "to_ts": 300.0},
                    {"box": "box-2", "agent": "ag-1", "from_ts": 300.0, "to_ts": None}]
    assert db.conn.execute("SELECT agent FROM seats WHERE box = 'box-1'").fetchone()[0] is None
    with pytest.raises(ValueError):
        schema.import_inventory(db, [{"box": "Bad Box"}])


def test_wilson_interval_and_variant_comparison(org: Any) -> None:
    p, lo, hi = analytics.wilson(9, 30)
    assert p == pytest.approx(0.3) and lo == pytest.approx(0.1666, abs=1e-3)
    assert hi == pytest.approx(0.4788, abs=1e-3)
    assert analytics.wilson(0, 0) == (0.0, 0.0, 0.0)
    assert analytics.wilson(0, 10)[1] == 0.0
    settings, data = org
    with client(settings) as c:
        login_as(c, "sup-a", data)
        comp = c.get("/api/campaigns/camp-a/comparison").json()
        by = {v["name"]: v for v in comp["variants"]}
        assert by["Question ouverte"]["calls"] == 30
        assert by["Question ouverte"]["outcomes"]["meeting"] == 9
        assert by["Bénéfice direct"]["rate"] == pytest.approx(0.1)
        page = c.get("/campaigns/camp-a").text
        assert "Question ouverte" in page and "30.0" not in page and "30,0 %" in page


def test_openapi_describes_the_json_api(org: Any) -> None:
    settings, data = org
    with client(settings) as c:
        login_as(c, "amina", data)
        spec = c.get("/api/openapi.json").json()
    paths = set(spec["paths"])
    for p in ("/api/floor", "/api/agents/{agent}/metrics", "/api/agents/{agent}/flags",
              "/api/campaigns/{campaign}/comparison", "/api/audit", "/api/me/private",
              "/api/agents/{agent}/export.csv", "/api/teams/{team}/board"):
        assert p in paths, p
    assert not any(p in paths for p in ("/login", "/", "/me"))


def test_send_command_uses_the_ingest_publish_cmd(org: Any) -> None:
    """The switch's wiring, with a stand-in ingest (the real MQTT path to a real box is
    ``tests/test_private_box.py``); a switch that could not be sent says so on the page."""
    settings, data = org
    sent: list[tuple[str, str]] = []
    reachable = [True]

    class FakeIngest:
        def publish_cmd(self, box: str, action: str, **extra: Any) -> bool:
            wire.cmd_message(settings.site, box, action, 1.0, **extra)  # a valid command
            sent.append((box, action))
            return reachable[0]

    app = create_app(settings, start_ingest=False)
    assert send_command(app, "box-a1", "private_on") is False  # no ingest
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        app.state.ingest = FakeIngest()
        login_as(c, "amina", data)
        r = c.post("/api/me/private", json={"private": True}, headers=csrf_header(c))
        assert r.json() == {"private": True, "sent": True, "unsent": None}
        assert "Mode privé actif" in c.get("/me").text
        seats = store.open_db(settings.db_path).conn.execute(
            "SELECT private FROM agents WHERE agent = 'agent-a1'").fetchone()
        assert seats[0] == 1
        assert 'id="private-state"' in c.get("/me").text
        r = c.post("/me/private", data={"private": "0", "csrf": csrf_of(c.get("/me").text)})
        assert r.status_code == 303
        assert re.fullmatch(r"/me\?sent=off&at=[0-9.]+#private", r.headers["location"])
        assert 'id="private-state"' not in c.get(r.headers["location"]).text
        reachable[0] = False  # the box cannot be reached: the page must not claim privacy
        r = c.post("/me/private", data={"private": "1", "csrf": csrf_of(c.get("/me").text)})
        assert r.status_code == 303 and r.headers["location"] == "/me?sent=0#private"
        page = c.get("/me?sent=0").text
        assert 'id="private-unsent"' in page and 'id="private-state"' not in page
    assert sent == [("box-a1", "private_on"), ("box-a1", "private_off"), ("box-a1", "private_on")]


def test_the_cti_call_state_needs_its_own_token_and_a_broker(tmp_path: Path) -> None:
    """Without a configured CTI token every call state is refused, whoever sends it (a session
    is no way in either); with one, a broker out of reach is a 503 the server can retry, and a
    token too short to be safe stops the dashboard at start."""
    bearer = {"authorization": "Bearer " + "c" * 32}
    body = {"box": "box-a1", "state": "hold"}
    settings = make_settings(tmp_path)
    data = seed_org(settings, seconds=30)
    with client(settings) as c:
        assert c.post("/api/cti/call-state", json=body, headers=bearer).status_code == 401
        login_as(c, "sup-a", data)  # a session, CSRF token and all
        assert c.post("/api/cti/call-state", json=body, headers=csrf_header(c)).status_code == 401
    (tmp_path / "cti").write_text("c" * 32)
    settings = make_settings(tmp_path, cti_token_file=tmp_path / "cti")
    with TestClient(create_app(settings, start_ingest=False), base_url="https://testserver") as c:
        r = c.post("/api/cti/call-state", json=body, headers=bearer)
        assert r.status_code == 503 and "send it again" in r.json()["detail"]
    (tmp_path / "cti").write_text("short")
    with pytest.raises(ValueError, match=r"CTI token in .* is shorter than 16 characters"):
        create_app(settings, start_ingest=False)


def test_dashboard_cli_user_import_purge_backup_restore(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    settings = make_settings(tmp_path)
    env = dict(os.environ, MIROIR_DASH_SITE="site-1", MIROIR_DASH_DB_PATH=str(settings.db_path))
    inv = tmp_path / "inventory.csv"
    inv.write_text("box,seat,agent,team\nbox-1,P1,ag-1,t1\nbox-2,P2,ag-2,t1\n")
    pw = tmp_path / "pw"
    pw.write_text("a long password here\n")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "miroir", "dashboard", *args], env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    assert run("import", str(inv)).stdout.strip() == "imported 2 seats"
    r = run("user", "add", "chef", "--role", "supervisor", "--team", "t1",
            "--password-file", str(pw))
    assert r.returncode == 0, r.stderr
    assert run("user", "add", "chef", "--role", "supervisor", "--password-file", str(pw)
               ).returncode != 0
    r = run("purge")
    assert r.returncode == 0 and '"metrics": 0' in r.stdout
    assert run("backup", str(tmp_path / "b.db")).returncode == 0
    assert run("backup", str(tmp_path / "b.db")).returncode != 0
    db = store.open_db(settings.db_path)
    with db.conn:
        db.conn.execute("DELETE FROM agents")
    db.conn.close()
    assert run("restore", str(tmp_path / "b.db")).returncode == 0
    db = store.open_db(settings.db_path)
    assert [r[0] for r in db.conn.execute("SELECT agent FROM agents ORDER BY agent")] == [
        "ag-1", "ag-2"]
    assert db.conn.execute("SELECT team FROM user_teams WHERE username = 'chef'").fetchone() == (
        "t1",)


def test_a_user_is_added_only_with_a_name_the_login_form_takes(tmp_path: Path) -> None:
    """`miroir dashboard user add` took a name of 65 characters or one with a space at its end
    ("chef "), and printed "added": the login form takes 64 characters at most (a 422 page
    instead), and a name typed without its space is someone else, so that user could never log
    in. Such a name is refused now, with why (exit 2, as any refused command; nothing added);
    a name of 64 characters logs in over the real server."""
    import os
    import subprocess
    import sys

    import httpx

    settings = make_settings(tmp_path)
    db = store.open_db(settings.db_path)
    try:
        schema.ensure_schema(db)
        auth.ensure_admin(db, settings.admin_user, settings.admin_password_file)
    finally:
        db.conn.close()
    env = dict(os.environ, MIROIR_DASH_SITE="site-1", MIROIR_DASH_DB_PATH=str(settings.db_path))
    pw = tmp_path / "pw"
    pw.write_text(USER_PASSWORD + "\n")
    longest = "a" * 64

    def add(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "miroir", "dashboard", "user", "add", name,
                               "--role", "auditor", "--password-file", str(pw)], env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    refused = {name: add(name) for name in ("a" * 65, "chef ", " chef")}
    assert {n: r.returncode for n, r in refused.items()} == dict.fromkeys(refused, 2)
    assert all("64 characters" in r.stderr for r in refused.values()), refused
    assert add(longest).returncode == 0
    db = store.open_db(settings.db_path)
    try:
        assert [r[0] for r in db.conn.execute("SELECT username FROM users ORDER BY username")
                ] == [longest, "admin"]
    finally:
        db.conn.close()
    from dashboard.app import DashboardServer

    with DashboardServer(settings, start_ingest=False) as server, \
            httpx.Client(base_url=server.url, timeout=10.0) as c:
        assert http_login(c, longest, USER_PASSWORD)


def test_dashboard_restore_of_a_bad_file_or_onto_a_new_server_is_one_line(tmp_path: Path) -> None:
    """``miroir dashboard restore`` of a file that is no database, of a backup cut short, of another
    program's SQLite file: one line, exit 2, the current database untouched. Onto a new server,
    before the dashboard ever ran (its folder not made yet), the restore makes the folder. The
    backup is private (0600) from its first byte, whatever the umask."""
    import os
    import stat
    import subprocess
    import sys

    settings = make_settings(tmp_path)
    env = dict(os.environ, MIROIR_DASH_SITE="site-1", MIROIR_DASH_DB_PATH=str(settings.db_path))

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "miroir", "dashboard", *args],
                              env={**env, **extra}, capture_output=True, text=True, timeout=60,
                              check=False)

    pw = tmp_path / "pw"
    pw.write_text("a long password here\n")
    assert run("user", "add", "chef", "--role", "admin", "--password-file", str(pw)).returncode == 0
    good = tmp_path / "b.db"
    assert run("backup", str(good)).returncode == 0
    junk = tmp_path / "junk.db"
    junk.write_bytes(bytes(range(256)) * 20)
    cut = tmp_path / "cut.db"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE notes (t TEXT)").connection.commit()
    before = settings.db_path.read_bytes()
    for bad, says in ((junk, "not a dashboard backup"), (cut, "not a dashboard backup"),
                      (other, "not a dashboard backup")):
        r = run("restore", str(bad))
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert says in r.stderr and str(bad) in r.stderr, r.stderr
        assert settings.db_path.read_bytes() == before
    fresh = tmp_path / "new-server" / "var" / "dashboard.sqlite"
    r = run("restore", str(good), MIROIR_DASH_DB_PATH=str(fresh))
    assert r.returncode == 0, r.stderr
    assert sqlite3.connect(fresh).execute("SELECT count(*) FROM users WHERE username = 'chef'"
                                          ).fetchone() == (1,)
    r = run("restore", str(good), MIROIR_DASH_DB_PATH=str(tmp_path))  # a folder, not a file
    assert r.returncode == 2 and "Traceback" not in r.stderr and str(tmp_path) in r.stderr, r.stderr
    # private from the first byte: SQLite writes into the file the backup made with mode 0600
    r = subprocess.run([sys.executable, "-c",
                        "import os, sys; os.umask(0o022); from dashboard import retention\n"
                        "import sqlite3, stat; real = sqlite3.connect\n"
                        "def spy(path, *a, **k):\n"
                        "    if str(path).endswith('c.db'):\n"
                        "        print(oct(stat.S_IMODE(os.stat(path).st_mode)))\n"
                        "    return real(path, *a, **k)\n"
                        "sqlite3.connect = spy\n"
                        f"retention.backup({str(settings.db_path)!r}, {str(tmp_path / 'c.db')!r})"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and r.stdout.split() == ["0o600"], (r.stdout, r.stderr)
    assert stat.S_IMODE((tmp_path / "c.db").stat().st_mode) == 0o600


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` read-only while the block runs: a read-only bind mount as root (who ignores
    modes), mode 0555 otherwise."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_backup_on_a_read_only_medium_is_restored(tmp_path: Path) -> None:
    """A dashboard backup kept on read-only media (a USB key mounted read-only, a snapshot, a
    backup server's read-only export) was refused as "not a dashboard backup (unable to open
    database file)": the copy was a WAL-mode database, which SQLite cannot read without writing
    its shared-memory file beside it. Backups are now written as one plain file, and the restore
    reads any backup, older ones too, without writing next to it."""
    live = tmp_path / "live.sqlite"
    db = store.open_db(live)
    schema.ensure_schema(db)
    db.conn.close()
    media = tmp_path / "usb"
    media.mkdir()
    made = retention.backup(live, media / "new.sqlite")
    older = media / "older.sqlite"  # as the backups of earlier versions were: WAL mode
    older.write_bytes(made.read_bytes())
    sqlite3.connect(older).execute("PRAGMA journal_mode=WAL").connection.close()
    with read_only(media):
        for backup in (made, older):
            r = subprocess.run([sys.executable, "-m", "miroir", "dashboard", "restore",
                                str(backup)],
                               env=dict(os.environ, MIROIR_DASH_SITE="site-1",
                                        MIROIR_DASH_DB_PATH=str(tmp_path / f"{backup.stem}.db")),
                               capture_output=True, text=True, timeout=60, check=False)
            assert r.returncode == 0, (backup.name, r.stderr)
    assert sorted(p.name for p in media.iterdir()) == ["new.sqlite", "older.sqlite"]


def test_a_restore_while_the_dashboard_runs_is_refused(dashboard_server: Any,
                                                       tmp_path: Path) -> None:
    """`miroir dashboard restore` run while the dashboard served (the guide says to stop it; the
    command did not check) said "restored": its ingest, going on with the sequence numbers it
    had, never asked the boxes for what the backup lacked (20 of 60 messages lost, 0 resend
    requests, still lost after a restart). It now refuses while the database is open elsewhere,
    saying to stop the dashboard, and changes nothing."""
    settings = dashboard_server.settings
    env = dict(os.environ, MIROIR_DASH_SITE=settings.site,
               MIROIR_DASH_DB_PATH=str(settings.db_path))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "miroir", "dashboard", *args], env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    assert run("backup", str(tmp_path / "b.sqlite")).returncode == 0
    pw = tmp_path / "pw"
    pw.write_text("a long password here\n")
    assert run("user", "add", "later", "--role", "it", "--password-file", str(pw)).returncode == 0
    r = run("restore", str(tmp_path / "b.sqlite"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "stop the dashboard" in r.stderr and str(settings.db_path) in r.stderr, r.stderr
    with sqlite3.connect(settings.db_path) as con:
        assert con.execute("SELECT count(*) FROM users WHERE username = 'later'").fetchone() == (1,)


def test_the_it_guides_backup_cron_line_backs_up_and_keeps_the_newest(tmp_path: Path) -> None:
    """The IT guide kept the dashboard's backups on the server whose death they are for, said
    neither how often to take them nor how to test one: it now gives a cron line. Run as cron
    runs it (``\\%`` read as ``%``, by sh), it writes a backup and deletes the older ones."""
    guide = (Path(__file__).resolve().parents[1] / "docs" / "it-guide.md").read_text()
    line = next(ln for ln in guide.splitlines() if ln.startswith("0 */6 * * * root "))
    settings = make_settings(tmp_path)
    db = store.open_db(settings.db_path)
    schema.ensure_schema(db)
    db.conn.close()
    env_file, kept = tmp_path / "dashboard.env", tmp_path / "backups"
    env_file.write_text(f"MIROIR_DASH_SITE=site-1\nMIROIR_DASH_DB_PATH={settings.db_path}\n")
    kept.mkdir()
    old = kept / "dashboard-2026-11-01-00.sqlite"
    old.write_bytes(b"")
    os.utime(old, (time.time() - 6 * 3600,) * 2)  # the one before
    command = (line.split(" root ", 1)[1].replace("\\%", "%")
               .replace("/var/lib/miroir-site/dashboard.env", str(env_file))
               .replace("/var/backups/miroir", str(kept))
               .replace("exec miroir", f"exec {sys.executable} -m miroir"))
    r = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr
    made = [p.name for p in kept.iterdir()]
    assert made == [time.strftime("dashboard-%Y-%m-%d-%H.sqlite")], made
    retention.check_backup(kept / made[0])


def test_a_backup_of_no_database_is_refused_not_written_empty(tmp_path: Path) -> None:
    """`miroir dashboard backup` with MIROIR_DASH_DB_PATH naming no database (a typo, a moved
    database, a server whose dashboard never ran) made an empty database there and wrote a 4 KB
    "backup" of it (exit 0, "backup written"): every nightly backup empty, found out only when the
    restore refused it. It now says there is no database, and writes nothing anywhere."""
    settings = make_settings(tmp_path)
    missing = tmp_path / "dashbaord.sqlite"
    dest = tmp_path / "b.sqlite"
    r = subprocess.run([sys.executable, "-m", "miroir", "dashboard", "backup", str(dest)],
                       env=dict(os.environ, MIROIR_DASH_SITE="site-1",
                                MIROIR_DASH_DB_PATH=str(missing)),
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert str(missing) in r.stderr and "no dashboard database" in r.stderr, r.stderr
    assert not dest.exists() and not missing.exists()
    other = tmp_path / "other.sqlite"  # another program's database: not backed up either
    sqlite3.connect(other).execute("CREATE TABLE notes (t TEXT)").connection.commit()
    with pytest.raises(ValueError, match="not a dashboard database"):
        retention.backup(other, dest)
    assert not dest.exists()
    db = store.open_db(settings.db_path)
    schema.ensure_schema(db)
    db.conn.close()
    assert retention.backup(settings.db_path, dest) == dest


def test_a_backup_of_a_newer_dashboard_is_refused_and_an_older_one_upgraded(
        tmp_path: Path) -> None:
    """A site rebuilt with the Miroir of the install medium, older than the dashboard that made
    the backup: `miroir dashboard restore` said "restored" (exit 0) and left this dashboard on a
    schema it does not know (11 of its 10 migrations). It now refuses, in one line, the database
    untouched; a backup of an older dashboard is upgraded."""
    def made_with(path: Path, steps: list[Any]) -> Path:
        db = store.open_db(path)
        schema.ensure_schema(db, steps)
        db.conn.close()
        return path

    def newer(d: Any) -> None:
        """A later Miroir's table."""
        d.conn.execute("CREATE TABLE agent_consents (agent TEXT PRIMARY KEY, signed_ts REAL)")

    live = made_with(tmp_path / "live.sqlite", schema.MIGRATIONS)
    env = dict(os.environ, MIROIR_DASH_SITE="site-1", MIROIR_DASH_DB_PATH=str(live))

    def restore(source: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "miroir", "dashboard", "restore", str(source)],
                              env=env, capture_output=True, text=True, timeout=60, check=False)

    before = live.read_bytes()
    r = restore(made_with(tmp_path / "newer.sqlite", [*schema.MIGRATIONS, newer]))
    known = len(schema.MIGRATIONS)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"schema {known + 1}" in r.stderr and f"up to {known}" in r.stderr, r.stderr
    assert live.read_bytes() == before
    r = restore(made_with(tmp_path / "older.sqlite", schema.MIGRATIONS[:5]))
    assert r.returncode == 0, r.stderr
    assert schema.schema_version(store.open_db(live)) == known


def test_a_box_read_returns_only_the_rows_of_agents_the_reader_may_see(org: Any) -> None:
    """A seat changes hands: agent-a1 (team A) moves to box-b1, where agent-b1 (team B) sat.
    Reading box-b1 gives neither the agent nor team A's supervisor agent-b1's rows, and a
    supervisor's read is in the audit log."""
    settings, data = org
    now = time.time()
    db = store.open_db(settings.db_path)
    with db.conn:
        schema.assign_seat(db, "box-b1", "agent-a1", now)
    before_rows = db.conn.execute("SELECT count(*) FROM metrics WHERE box = 'box-b1' AND ts < ?",
                                  (now,)).fetchone()[0]
    db.conn.close()
    assert before_rows > 0
    for user in ("amina", "sup-a"):
        with client(settings) as c:
            login_as(c, user, data)
            audited = _count(settings, "audit_log")
            r = c.get("/api/boxes/box-b1/metrics", params={"limit": 5000})
            assert r.status_code == 200
            assert not [m for m in r.json()["metrics"] if m["ts"] < now], user
            if user == "sup-a":
                assert _count(settings, "audit_log") == audited + 1


def _count(settings: DashboardSettings, table: str) -> int:
    db = store.open_db(settings.db_path)
    try:
        return int(db.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        db.conn.close()


def test_the_right_password_does_not_reset_the_count_of_wrong_codes(org: Any) -> None:
    """An attacker with a supervisor's password logs in again and again, four code guesses each
    time: the failures add up and the account is throttled (a right password cleared them)."""
    settings, data = org
    secret = data["secrets"]["sup-a"]
    valid = {totp.hotp(secret, totp.step_of(time.time()) + d) for d in (-1, 0, 1)}
    guesses = (f"{i:06d}" for i in range(10**6) if f"{i:06d}" not in valid)
    statuses: list[int] = []
    with client(settings) as c:
        for _ in range(5):
            r = c.post("/login", data={"username": "sup-a", "password": USER_PASSWORD,
                                       "csrf": csrf_of(c.get("/login").text)})
            statuses.append(r.status_code)
            if r.status_code != 303:
                break
            token = csrf_of(c.get("/login/totp").text)
            statuses += [c.post("/login/totp", data={"code": next(guesses), "csrf": token}).status_code
                         for _ in range(4)]
    assert 429 in statuses and statuses.count(401) < 12, statuses


def test_an_open_stream_ends_with_its_session_and_stats_need_a_role(org: Any) -> None:
    """The live stream re-checks its session: after a logout (or a disabled user) it ends; an
    agent gets no ingest statistics; a body over the limit is refused before it is read."""
    from fastapi import HTTPException

    from dashboard.routes.stream import _scope

    settings, data = org
    with client(settings) as c:
        login_as(c, "sup-a", data)
        token = c.cookies.get(auth.session_cookie_name(settings.secure_cookies))
        assert _scope(settings.db_path, "sup-a", token, settings.session_idle_s)
        header = csrf_header(c)
        c.post("/logout", headers=header, data={"csrf": header["x-csrf-token"]})
        with pytest.raises(HTTPException):
            _scope(settings.db_path, "sup-a", token, settings.session_idle_s)
    with client(settings) as c:
        login_as(c, "amina", data)
        assert c.get("/api/ingest/stats").status_code == 404
    with client(settings) as c:
        login_as(c, "sup-a", data)
        big = {"agent": "agent-a1", "start_ts": time.time(),
               "summary": {f"k{i}": "x" * 1000 for i in range(400)}}
        assert c.post("/api/calls", json=big, headers=csrf_header(c)).status_code == 413
        long_box = {"agent": "agent-a1", "start_ts": time.time(), "box": "y" * 1000}
        assert c.post("/api/calls", json=long_box, headers=csrf_header(c)).status_code == 422


def test_the_flush_after_a_purge_does_not_hold_writers_while_an_export_keeps_the_old_rows(
        org: Any) -> None:
    """The flush after a purge or an erasure (flush_deleted) ran SQLite's TRUNCATE checkpoint,
    which holds the write lock while it copies the log and then waits up to FLUSH_WAIT_MS for
    the readers: while an export's read still saw the deleted rows, it could not finish, and
    every write waited for it (0.33 s, median of 3, with 6 MB or 83 MB in the log; with no
    reader, 0.054 s while it copied 83 MB). It now copies what it can without the write lock
    first (a PASSIVE checkpoint, which never holds writers), and truncates only when that copied
    the whole log, so a flush a reader keeps from finishing leaves it to the next purge at once;
    without the reader it still empties the log."""
    settings, _ = org
    db = store.open_db(settings.db_path)
    with db.conn:
        db.conn.execute("INSERT INTO flags (agent, ts, note, author, created_ts) VALUES "
                        "('agent-b1', ?, 'note-old-walrus', 'sup-a', ?)", (1.0, 1.0))
    export = store.open_db(settings.db_path)  # an export started before the purge
    export.conn.execute("BEGIN")
    assert export.conn.execute("SELECT count(*) FROM flags WHERE note = 'note-old-walrus'"
                               ).fetchone()[0] == 1
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    try:
        out = retention.purge(db, metrics_days=30, aggregates_days=365, audit_days=365)
        assert out["flags"] == 1
        blocking = [s for s in statements if s.startswith("PRAGMA wal_checkpoint")
                    and "PASSIVE" not in s]
        assert blocking == [], blocking  # nothing held the writers for a flush bound to fail
        export.conn.rollback()  # the export ends
        statements.clear()
        assert retention.flush_deleted(db)
    finally:
        db.conn.set_trace_callback(None)
        export.conn.close()
    assert any("TRUNCATE" in s for s in statements)
    wal = Path(f"{settings.db_path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    assert b"note-old-walrus" not in Path(settings.db_path).read_bytes()
    db.conn.close()
