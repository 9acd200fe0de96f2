"""Dashboard login under pressure: concurrent guesses, bounded password checks, shared addresses,
enrolment races, hostile one-time codes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dashboard import auth, totp
from dashboard import db as store
from dashboard.app import create_app
from dashboard.settings import DashboardSettings
from tests._fixtures_dashboard import (
    USER_PASSWORD,
    csrf_of,
    make_settings,
    secret_of,
    seed_org,
    totp_code,
)


@pytest.fixture
def org(tmp_path: Path) -> tuple[DashboardSettings, dict[str, Any]]:
    settings = make_settings(tmp_path, login_max_failures_account=3, login_max_failures_addr=5)
    return settings, seed_org(settings, seconds=5)


def _client(app: FastAPI, addr: str) -> httpx.AsyncClient:
    """An async client on the app itself: sync routes run concurrently in its thread pool."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(addr, 4000)),
                             base_url="https://testserver")


T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a thread of its own: a browser test's Playwright may hold this thread's
    event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _login_form(c: httpx.AsyncClient) -> str:
    token = csrf_of((await c.get("/login")).text)
    c.cookies.set(auth.csrf_cookie_name(True), token)
    return token


async def _burst_logins(app: FastAPI, logins: list[tuple[str, str, str]]) -> list[httpx.Response]:
    """POST /login for each (address, username, password), all at once."""
    clients = {addr: _client(app, addr) for addr, _, _ in logins}
    try:
        tokens = {addr: await _login_form(c) for addr, c in clients.items()}
        return list(await asyncio.gather(*(
            clients[addr].post("/login", data={"username": user, "password": pw,
                                               "csrf": tokens[addr]})
            for addr, user, pw in logins)))
    finally:
        for c in clients.values():
            await c.aclose()


class _CountingChecks:
    """Wraps auth.verify_password: counts the checks and the most running at once."""

    def __init__(self, real: Any, hold_s: float = 0.0) -> None:
        self.real, self.hold_s = real, hold_s
        self.lock = threading.Lock()
        self.running = self.peak = self.calls = 0

    def __call__(self, password_hash: str, password: str) -> bool:
        with self.lock:
            self.running += 1
            self.calls += 1
            self.peak = max(self.peak, self.running)
        try:
            time.sleep(self.hold_s)
            return bool(self.real(password_hash, password))
        finally:
            with self.lock:
                self.running -= 1


def test_a_burst_of_guesses_gets_no_more_checks_than_the_throttle_allows(
        org: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """30 wrong passwords sent at once from one address, 3 allowed per account and address: 3 are
    checked (401), 27 refused (429) before any check. The throttle used to read the count, check
    the password (argon2id, ~0.1 s) and only then record the failure, so all 30 were checked."""
    settings, _ = org
    app = create_app(settings, start_ingest=False)
    checks = _CountingChecks(auth.verify_password, hold_s=0.05)
    monkeypatch.setattr(auth, "verify_password", checks)
    answers = _run(_burst_logins(
        app, [("198.51.100.7", "sup-a", f"guess-{i}") for i in range(30)]))
    codes = [r.status_code for r in answers]
    assert sorted(codes) == [401] * 3 + [429] * 27, codes
    assert checks.calls == 3
    assert all("retry-after" in r.headers for r in answers if r.status_code == 429)


def test_password_checks_run_a_few_at_a_time_and_the_rest_are_refused(
        org: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guesses from many addresses on many names pass the throttle, but at most
    ``login_max_concurrent_checks`` argon2id checks (64 MiB each) run at once; a request that
    waits longer than the gate allows gets 503 with Retry-After, and its attempt is not counted."""
    settings, _ = org
    app = create_app(settings, start_ingest=False)
    app.state.password_checks = auth.CheckGate(2, wait_s=0.1)  # 2 slots, a short wait
    checks = _CountingChecks(auth.verify_password, hold_s=0.5)
    monkeypatch.setattr(auth, "verify_password", checks)
    answers = _run(_burst_logins(
        app, [(f"198.51.100.{i}", f"nobody-{i}", "guess") for i in range(12)]))
    codes = [r.status_code for r in answers]
    assert checks.peak <= 2 and checks.calls == codes.count(401) >= 2, (checks.peak, codes)
    assert codes.count(503) >= 6 and set(codes) <= {401, 503}, codes
    assert all(r.headers.get("retry-after") == "1" for r in answers if r.status_code == 503)
    db = store.open_db(settings.db_path)
    try:  # the refused requests checked nothing: only the checked guesses count as failures
        failures = db.conn.execute("SELECT count(*) FROM login_attempts WHERE ok = 0").fetchone()[0]
    finally:
        db.conn.close()
    assert failures == codes.count(401)


def test_a_burst_of_one_time_codes_gets_no_more_checks_than_the_throttle_allows(
        org: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone with a supervisor's password sends 20 code guesses at once: 3 are checked, the
    rest refused, and the right code is refused too once the step is throttled."""
    settings, data = org
    app = create_app(settings, start_ingest=False)
    real_verify = totp.verify
    verified: list[str] = []

    def slow_verify(secret: str, code: str, last_step: int = 0, now_s: float | None = None) -> Any:
        verified.append(code)
        time.sleep(0.05)  # widen the check-then-record window the race used
        return real_verify(secret, code, last_step, now_s)

    monkeypatch.setattr(totp, "verify", slow_verify)
    secret = data["secrets"]["sup-a"]
    valid = {totp.hotp(secret, totp.step_of(time.time()) + d) for d in (-1, 0, 1, 2)}
    guesses = [g for g in (f"{i:06d}" for i in range(100)) if g not in valid][:20]

    async def run() -> tuple[list[int], int]:
        async with _client(app, "198.51.100.7") as c:
            token = await _login_form(c)
            r = await c.post("/login", data={"username": "sup-a", "password": USER_PASSWORD,
                                             "csrf": token})
            assert r.status_code == 303 and r.headers["location"] == "/login/totp"
            token = csrf_of((await c.get("/login/totp")).text)
            answers = await asyncio.gather(*(c.post("/login/totp",
                                                    data={"code": g, "csrf": token})
                                             for g in guesses))
            right = await c.post("/login/totp", data={"code": totp.totp(secret), "csrf": token})
            return [a.status_code for a in answers], right.status_code

    codes, right = _run(run())
    assert sorted(codes) == [401] * 3 + [429] * 17, codes
    assert len(verified) == 3 and right == 429


def _log_in(c: TestClient, user: str, password: str = USER_PASSWORD) -> int:
    page = c.get("/login")
    return c.post("/login", data={"username": user, "password": password,
                                  "csrf": csrf_of(page.text)}).status_code


def test_a_known_browser_behind_a_throttled_floor_address_still_logs_in(org: Any) -> None:
    """A floor reaches the dashboard through one NAT address. Someone there makes 5 failed logins
    on made-up names (the per-address limit): unknown browsers at that address are refused, the
    right password included, but a browser that logged in to the account before still gets in
    (it used to be refused too: the whole floor was locked out for the window)."""
    settings, _ = org
    app = create_app(settings, start_ingest=False)
    nat = "203.0.113.10"
    with TestClient(app, base_url="https://testserver", client=(nat, 1111),
                    follow_redirects=False) as amina:
        assert _log_in(amina, "amina") == 303
        amina.cookies.delete(auth.session_cookie_name(True))  # logged out; the device cookie stays
        with TestClient(app, base_url="https://testserver", client=(nat, 2222),
                        follow_redirects=False) as prankster:
            assert [_log_in(prankster, f"x{i}", "wrong") for i in range(5)] == [401] * 5
            assert _log_in(prankster, "bilal") == 429  # an unknown browser, the right password
        assert _log_in(amina, "bilal") == 429  # the mark counts for its own account only
        assert _log_in(amina, "amina") == 303
        amina.cookies.delete(auth.session_cookie_name(True))
        # the known browser is still held to its own account's limit at that address
        assert [_log_in(amina, "amina", "wrong") for _ in range(4)] == [401] * 3 + [429]


def _start_enrolment(app: FastAPI, user: str, password: str) -> tuple[TestClient, str, str]:
    c = TestClient(app, base_url="https://testserver", follow_redirects=False)
    r = c.post("/login", data={"username": user, "password": password,
                               "csrf": csrf_of(c.get("/login").text)})
    assert r.headers["location"] == "/totp/setup"
    page = c.get("/totp/setup").text
    return c, secret_of(page), csrf_of(page)


def _stored_secret(settings: DashboardSettings, user: str) -> str | None:
    db = store.open_db(settings.db_path)
    try:
        row = db.conn.execute("SELECT totp_secret FROM users WHERE username = ?", (user,)).fetchone()
        return None if row[0] is None else str(row[0])
    finally:
        db.conn.close()


def test_an_enrolment_confirms_only_an_account_not_yet_enrolled(org: Any) -> None:
    """Someone with a new supervisor's initial password starts an enrolment and waits; the owner
    enrols. The waiting session used to confirm its own secret afterwards, replacing the owner's
    second factor and logging in. Completing an enrolment now ends the account's other enrolment
    sessions, and a confirmation that comes too late anyway (a race) is refused with 409."""
    settings, _ = org
    db = store.open_db(settings.db_path)
    auth.create_user(db, "sup-new", "initial password 123", "supervisor", teams=["team-a"])
    db.conn.close()
    app = create_app(settings, start_ingest=False)
    intruder, s_int, csrf_int = _start_enrolment(app, "sup-new", "initial password 123")
    owner, s_own, csrf_own = _start_enrolment(app, "sup-new", "initial password 123")
    assert s_int != s_own
    r = owner.post("/totp/setup", data={"code": totp_code(s_own), "csrf": csrf_own})
    assert r.status_code == 303 and r.headers["location"] == "/"
    # (a code of the next step: the server refuses steps up to the last one it accepted)
    next_code = totp.hotp(s_int, totp.step_of(time.time()) + 1)
    r = intruder.post("/totp/setup", data={"code": next_code, "csrf": csrf_int})
    assert r.status_code == 303 and r.headers["location"] == "/login?ended=1"  # session gone
    assert intruder.get("/api/me").status_code == 401
    assert _stored_secret(settings, "sup-new") == s_own
    # an enrolment session that outlives the enrolment (opened as it completed)
    db = store.open_db(settings.db_path)
    token, _ = auth.create_session(db, "sup-new", settings.session_idle_s, stage="enroll",
                                   pending_secret=s_int)
    db.conn.close()
    late = TestClient(app, base_url="https://testserver", follow_redirects=False,
                      cookies={auth.session_cookie_name(True): token})
    page = late.get("/totp/setup").text
    r = late.post("/totp/setup", data={"code": next_code, "csrf": csrf_of(page)})
    assert r.status_code == 409 and "déjà" in r.text
    assert late.get("/api/me").status_code == 401  # that session is ended
    assert _stored_secret(settings, "sup-new") == s_own
    assert owner.get("/api/me").json()["username"] == "sup-new"


def test_one_code_sent_twice_at_once_opens_one_session(
        org: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay check read the last accepted step, checked the code, then stored its step: the
    same code sent three times at once opened three sessions. Now the step is stored only if it is
    newer than the stored one (and the secret unchanged), in one UPDATE."""
    settings, data = org
    app = create_app(settings, start_ingest=False)
    real_verify = totp.verify

    def slow_verify(secret: str, code: str, last_step: int = 0, now_s: float | None = None) -> Any:
        time.sleep(0.1)
        return real_verify(secret, code, last_step, now_s)

    monkeypatch.setattr(totp, "verify", slow_verify)
    secret = data["secrets"]["sup-a"]

    async def run() -> list[int]:
        async with _client(app, "198.51.100.7") as c:
            token = await _login_form(c)
            r = await c.post("/login", data={"username": "sup-a", "password": USER_PASSWORD,
                                             "csrf": token})
            assert r.headers["location"] == "/login/totp"
            token = csrf_of((await c.get("/login/totp")).text)
            code = totp_code(secret)
            answers = await asyncio.gather(*(c.post("/login/totp", data={"code": code,
                                                                         "csrf": token})
                                             for _ in range(3)))
            return [a.status_code for a in answers]

    assert sorted(_run(run())) == [303, 401, 401]


def test_an_ipv6_client_is_throttled_by_its_64_prefix(org: Any) -> None:
    """One IPv6 client holds a whole /64: failures were counted per exact address, so changing the
    last bits gave a fresh budget each time (20 guesses on one account, 1 per address, all 401)."""
    settings, _ = org  # 3 per account and address, 5 per address
    app = create_app(settings, start_ingest=False)

    def attempt(addr: str, user: str, password: str = "wrong") -> int:
        with TestClient(app, base_url="https://testserver", client=(addr, 5000),
                        follow_redirects=False) as c:
            return _log_in(c, user, password)

    rotated = [attempt(f"2001:db8:1:2::{i + 100:x}", "sup-b") for i in range(4)]
    assert rotated == [401, 401, 401, 429]
    spray = [attempt(f"2001:db8:1:2:{i:x}::1", f"name-{i}") for i in range(3)]
    assert spray == [401, 401, 429]  # 5 from the /64 on any names
    assert attempt("2001:db8:1:3::1", "amina", USER_PASSWORD) == 303  # the next /64 is not
    assert auth.throttle_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == "2001:db8:1:2::/64"
    assert auth.throttle_key("::ffff:198.51.100.7") == "198.51.100.7"
    assert auth.throttle_key("198.51.100.7") == "198.51.100.7"
    assert auth.throttle_key("fe80::1%eth0") == "fe80::/64"
    assert auth.throttle_key("testclient") == "testclient"


def test_a_code_in_other_digits_is_a_wrong_code_not_a_server_error(org: Any) -> None:
    """'١٢٣٤٥٦' (Arabic-Indic digits) passed str.isdigit, then compare_digest refused the non-ASCII
    str: 500. Only ASCII digits are a code; anything else is the usual wrong-code answer."""
    settings, data = org
    secret = data["secrets"]["sup-a"]
    for code in ("١٢٣٤٥٦", "１２３４５６", "۱۲۳۴۵۶", "¹²³⁴⁵⁶"):
        assert totp.verify(secret, code) is None
    app = create_app(settings, start_ingest=False)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        assert _log_in(c, "sup-a") == 303
        token = csrf_of(c.get("/login/totp").text)
        r = c.post("/login/totp", data={"code": "١٢٣٤٥٦", "csrf": token})
        assert r.status_code == 401 and "Code incorrect" in r.text
        r = c.post("/login/totp", data={"code": totp_code(secret), "csrf": token})
        assert r.status_code == 303 and r.headers["location"] == "/"


def test_the_second_factor_pages_of_a_session_past_them_lead_home(org: Any) -> None:
    """A supervisor past the second factor who goes back to its pages (the browser's Back after
    enrolling, a bookmark) was shown an enrolment page with an empty key (otpauth://...?secret=),
    whose codes were all refused, or the code form again: each now leads home, and a code posted
    there changes nothing."""
    from tests._fixtures_dashboard import client_login

    settings, data = org
    with TestClient(create_app(settings, start_ingest=False), base_url="https://testserver",
                    follow_redirects=False) as c:
        r = client_login(c, "sup-a", USER_PASSWORD, data["secrets"]["sup-a"])
        assert (r.status_code, r.headers["location"]) == (303, "/")
        for path in ("/totp/setup", "/login/totp"):
            page = c.get(path)
            assert (page.status_code, page.headers.get("location")) == (303, "/"), path
        csrf = csrf_of(c.get("/campaigns").text)
        posted = c.post("/totp/setup", data={"code": "123456", "csrf": csrf})
        assert (posted.status_code, posted.headers.get("location")) == (303, "/")
        assert c.get("/").status_code == 200  # still logged in
