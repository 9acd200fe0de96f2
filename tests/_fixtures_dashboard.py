"""Fixtures for the dashboard: settings on a real SQLite file, a served dashboard, a browser."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashboard.app import DashboardServer
from dashboard.settings import DashboardSettings

ADMIN_USER = "admin"
ADMIN_PASSWORD = "correct horse battery staple"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
SECRET_RE = re.compile(r'id="totp-secret"[^>]*>([A-Z2-7]+)<')
_last_step: dict[str, int] = {}


def totp_code(secret: str) -> str:
    """A TOTP code for ``secret`` never used before in this process (the server refuses replays)."""
    from dashboard import totp

    step = max(totp.step_of(time.time()), _last_step.get(secret, 0) + 1)
    _last_step[secret] = step
    return totp.hotp(secret, step)


def secret_of(html: str) -> str:
    """The TOTP secret shown on the enrolment page."""
    m = SECRET_RE.search(html)
    assert m, "no TOTP secret in the page"
    return m.group(1)


def client_login(c: Any, user: str = ADMIN_USER, password: str = ADMIN_PASSWORD,
                 secret: str | None = None) -> Any:
    """Log a TestClient in through the real forms, enrolling or entering TOTP when asked.

    Returns the last response (a 303 to / on success).
    """
    r = c.get("/login")
    r = c.post("/login", data={"username": user, "password": password, "csrf": csrf_of(r.text)})
    if r.status_code != 303 or r.headers["location"] == "/":
        return r
    page = c.get(r.headers["location"])
    if r.headers["location"] == "/totp/setup":
        secret = secret_of(page.text)
        return c.post("/totp/setup", data={"code": totp_code(secret), "csrf": csrf_of(page.text)})
    assert secret, "this user needs a TOTP secret"
    return c.post("/login/totp", data={"code": totp_code(secret), "csrf": csrf_of(page.text)})


def make_settings(tmp: Path, site: str = "site-1", **overrides: Any) -> DashboardSettings:
    """Dashboard settings with a fresh SQLite file and an admin password file under ``tmp``."""
    pw = tmp / "admin_password"
    pw.write_text(ADMIN_PASSWORD + "\n")
    pw.chmod(0o600)
    values: dict[str, Any] = {
        "site": site, "db_path": tmp / "dashboard.db", "admin_user": ADMIN_USER,
        "admin_password_file": pw, "http_port": 0,
    }
    values.update(overrides)
    return DashboardSettings(**values)


def csrf_of(html: str) -> str:
    """The CSRF token of the first form in ``html``."""
    m = CSRF_RE.search(html)
    assert m, "no csrf field in the page"
    return m.group(1)


@pytest.fixture
def dash_settings(tmp_path: Path) -> DashboardSettings:
    """Settings for an HTTP-only dashboard (no broker) on a fresh database."""
    return make_settings(tmp_path)


RESTART_GRACE_S = 45.0
"""The planned restart's grace of :func:`restart_server` (not the default 120 s: the pages must
show the dashboard's own setting)."""


@pytest.fixture
def dashboard_server(site: Any, broker: Any, tmp_path: Path) -> Iterator[DashboardServer]:
    """The dashboard served on a free port, its ingest subscribed to the real site broker."""
    yield from _served(site, broker, tmp_path)


@pytest.fixture
def restart_server(site: Any, broker: Any, tmp_path: Path) -> Iterator[DashboardServer]:
    """:func:`dashboard_server` whose ``MIROIR_DASH_RESTART_GRACE_S`` is :data:`RESTART_GRACE_S`."""
    yield from _served(site, broker, tmp_path, restart_grace_s=RESTART_GRACE_S)


def _served(site: Any, broker: Any, tmp_path: Path, **overrides: Any) -> Iterator[DashboardServer]:
    """The dashboard with ``overrides`` to its settings, served and connected to ``broker``."""
    settings = make_settings(
        tmp_path, site=site.site, mqtt_host="localhost", mqtt_port=broker.port,
        mqtt_ca=site.ca_cert, mqtt_cert=site.dashboard.cert, mqtt_key=site.dashboard.key,
        **overrides)
    server = DashboardServer(settings)
    server.start()
    try:
        assert server.ingest is not None and server.ingest.wait_connected(10.0), \
            "dashboard ingest did not connect to the broker"
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Debian's chromium driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(chromium: Any) -> Iterator[Any]:
    """A fresh page in its own browser context (own cookies), closed after the test."""
    context = chromium.new_context(viewport={"width": 1280, "height": 800}, locale="fr-FR")
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def browser_login(page: Any, base_url: str, user: str = ADMIN_USER,
                  password: str = ADMIN_PASSWORD, secret: str | None = None,
                  landing: str = "/") -> None:
    """Log in through the real forms (TOTP enrolment or code when asked) and wait for the page.

    Args:
        page: A Playwright page.
        base_url: The dashboard's URL.
        user: Login name.
        password: Password.
        secret: The user's TOTP secret, if already enrolled.
        landing: Where the role lands (``/`` floor, ``/me`` agent, ``/audit`` auditor).
    """
    page.goto(base_url + "/")
    page.wait_for_url("**/login")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    if page.url.endswith("/totp/setup"):
        secret = page.locator("#totp-secret").inner_text().strip()
    if page.url.endswith(("/totp/setup", "/login/totp")):
        assert secret, "this user needs a TOTP secret"
        page.fill("#code", totp_code(secret))
        page.click("button[type=submit]")
    page.wait_for_url(base_url + landing)
    if landing == "/":
        page.wait_for_selector("body[data-stream-ready='1']", timeout=10_000)


@pytest.fixture
def logged_in_page(browser_page: Any, dashboard_server: DashboardServer) -> Any:
    """The floor page of ``dashboard_server``, logged in as the admin and streaming."""
    browser_login(browser_page, dashboard_server.url)
    return browser_page


# ------------------------------------------------------------------ an organised site
USER_PASSWORD = "a long password for tests"
INVENTORY: list[dict[str, Any]] = [
    {"box": "box-a1", "seat": "A1", "agent": "agent-a1", "team": "team-a", "row": 1, "col": 1,
     "agent_name": "Amina Diallo"},
    {"box": "box-a2", "seat": "A2", "agent": "agent-a2", "team": "team-a", "row": 1, "col": 2,
     "agent_name": "Yanis Benali"},
    {"box": "box-b1", "seat": "B1", "agent": "agent-b1", "team": "team-b", "row": 2, "col": 1,
     "agent_name": "Bilal Haddad"},
]


def metric_row(site: str, box: str, seq: int, ts: float) -> dict[str, Any]:
    """One second of ``box``'s metrics message at ``ts``, its talk state cycling with ``seq``."""
    import math

    from miroir import wire

    phase = seq % 12
    state = ("agent", "agent", "agent", "silence", "prospect", "prospect", "overlap", "agent",
             "agent", "silence", "prospect", "agent")[phase]
    near = 0.35 + 0.3 * math.sin(seq / 9.0) ** 2
    return {"v": wire.SCHEMA_VERSION, "site": site, "box": box, "ts": ts, "seq": seq,
            "t_start": float(seq), "window_s": 1.0, "near_speech_ratio": round(near, 3),
            "far_speech_ratio": round(0.8 - near, 3), "near_talking": state in ("agent", "overlap"),
            "far_talking": state in ("prospect", "overlap"), "talk_state": state}


def seed_org(settings: DashboardSettings, now: float | None = None,
             seconds: int = 240) -> dict[str, Any]:
    """Two teams on one site: inventory, users of every role, metrics, cues, calls, coaching.

    Returns the ids of every object of team B (for the scoping walk) and the users' secrets.
    """
    from dashboard import auth, schema, totp
    from dashboard import db as store
    from miroir import wire

    now = time.time() if now is None else now
    # Fresh secrets per database: the server refuses a code's replay, per user and database.
    secrets = {"sup-a": totp.new_secret(), "sup-b": totp.new_secret()}
    db = store.open_db(settings.db_path)
    try:
        schema.ensure_schema(db)
        auth.ensure_admin(db, settings.admin_user, settings.admin_password_file)
        schema.import_inventory(db, INVENTORY, site=settings.site, now=now - seconds - 60)
        users = [("sup-a", "supervisor", None, ["team-a"], secrets["sup-a"]),
                 ("sup-b", "supervisor", None, ["team-b"], secrets["sup-b"]),
                 ("amina", "agent", "agent-a1", [], None),
                 ("bilal", "agent", "agent-b1", [], None),
                 ("auditrice", "auditor", None, [], None)]
        for name, role, agent, teams, secret in users:
            auth.create_user(db, name, USER_PASSWORD, role, agent=agent, teams=teams,
                             totp_secret=secret)
        for i, row in enumerate(INVENTORY):
            for k in range(seconds):
                store.insert_metrics(db, metric_row(settings.site, row["box"], k + 1,
                                                     now - seconds + k), now)
            for j, cue in enumerate(("too_fast", "monotone", "talking_over")):
                ts = now - seconds + 40 + 60 * j + i
                event = {"v": wire.SCHEMA_VERSION, "site": settings.site, "box": row["box"],
                         "ts": ts, "seq": 10_000 + j, "name": "cue_on", "channel": "near",
                         "t_audio_s": 40.0 + 60 * j, "cue": cue, "severity": "medium",
                         "evidence_value": 1.4, "evidence_threshold": 1.3, "evidence_unit": "ratio"}
                store.insert_event(db, wire.decode("event", wire.encode("event", event)), now)
        with db.conn:
            db.conn.execute("INSERT INTO campaigns (campaign, name, team, created_ts) VALUES "
                            "('camp-a', 'Salon Lyon', 'team-a', ?), "
                            "('camp-b', 'Mutuelle', 'team-b', ?)", (now, now))
            db.conn.execute("INSERT INTO variants (id, campaign, name, text) VALUES "
                            "(1, 'camp-a', 'Question ouverte', 'Comment gérez-vous ... ?'), "
                            "(2, 'camp-a', 'Bénéfice direct', 'Nous faisons gagner ...'), "
                            "(3, 'camp-b', 'Standard', 'Bonjour ...')")
            db.conn.execute("UPDATE agents SET campaign = 'camp-a' WHERE team = 'team-a'")
            db.conn.execute("UPDATE agents SET campaign = 'camp-b' WHERE team = 'team-b'")
            outcomes = {1: ["meeting"] * 9 + ["callback"] * 6 + ["refusal"] * 10 + ["no_answer"] * 5,
                        2: ["meeting"] * 3 + ["callback"] * 4 + ["refusal"] * 15 + ["no_answer"] * 8}
            for variant, outs in outcomes.items():
                for k, outcome in enumerate(outs):
                    agent = "agent-a1" if k % 2 else "agent-a2"
                    start = now - 86000 + k * 300 + variant * 10
                    db.conn.execute(
                        "INSERT INTO calls (agent, box, start_ts, end_ts, campaign, variant, "
                        "outcome, outcome_by) VALUES (?, ?, ?, ?, 'camp-a', ?, ?, 'seed')",
                        (agent, agent.replace("agent", "box"), start, start + 180, variant,
                         outcome))
            cur = db.conn.execute(
                "INSERT INTO calls (agent, box, start_ts, end_ts, campaign, variant) "
                "VALUES ('agent-b1', 'box-b1', ?, ?, 'camp-b', 3)", (now - 200, now - 20))
            b_call = cur.lastrowid
            cur = db.conn.execute(
                "INSERT INTO flags (agent, box, ts, note, author, created_ts) VALUES "
                "('agent-b1', 'box-b1', ?, 'débit élevé', 'sup-b', ?)", (now - 100, now))
            b_flag = cur.lastrowid
            cur = db.conn.execute(
                "INSERT INTO goals (agent, metric, label, direction, author, created_ts) VALUES "
                "('agent-b1', 'near_speech_ratio', 'laisser respirer', 'down', 'sup-b', ?)",
                (now,))
            b_goal = cur.lastrowid
    finally:
        db.conn.close()
    return {"team_b": {"team": "team-b", "agents": ["agent-b1"], "boxes": ["box-b1"],
                       "calls": [b_call], "flags": [b_flag], "goals": [b_goal],
                       "campaigns": ["camp-b"]},
            "secrets": secrets}


def seat_unchecked(db: Any, box: str, agent: str, team: str, now: float | None = None,
                   name: str | None = None, seat: str | None = None) -> None:
    """Seat ``agent`` (named ``name``) of ``team`` at ``box`` (seat ``seat``) as an import before
    the id rule did (an id with a ``/``, a ``#``, a quote, a formula): the rows the import
    writes, without its check."""
    from dashboard import schema

    now = time.time() if now is None else now
    with db.conn:
        db.conn.execute("INSERT OR IGNORE INTO teams (team, name) VALUES (?, ?)", (team, team))
        db.conn.execute("INSERT INTO agents (agent, name, team, created_ts) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(agent) DO NOTHING", (agent, name or agent, team, now))
        db.conn.execute("INSERT OR IGNORE INTO seats (box, label) VALUES (?, ?)",
                        (box, seat or box))
        schema.assign_seat(db, box, agent, now)


def http_login(c: Any, user: str = ADMIN_USER, password: str = ADMIN_PASSWORD,
               secret: str | None = None) -> str:
    """Log an ``httpx.Client`` in over plain http; return the session cookie's value.

    The cookies are Secure (``__Host-``), which httpx does not send back over http (chromium
    does, for 127.0.0.1), so they are carried by hand. TOTP enrolment or codes are handled.
    """
    page = c.get("/login")
    token = csrf_of(page.text)
    r = c.post("/login", data={"username": user, "password": password, "csrf": token},
               headers={"cookie": f"__Host-miroir-csrf={token}"})
    assert r.status_code == 303, r.text
    session = r.cookies["__Host-miroir"]
    where = r.headers["location"]
    c.cookies.clear()
    if where == "/":
        return str(session)
    cookie = {"cookie": f"__Host-miroir={session}"}
    page = c.get(where, headers=cookie)
    if where == "/totp/setup":
        secret = secret_of(page.text)
    assert secret, "this user needs a TOTP secret"
    r = c.post(where, data={"code": totp_code(secret), "csrf": csrf_of(page.text)},
               headers=cookie)
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    c.cookies.clear()
    return str(r.cookies["__Host-miroir"])


# ------------------------------------------------------------------ an org behind the app itself
@pytest.fixture
def org(tmp_path: Path) -> tuple[DashboardSettings, dict[str, Any]]:
    """Settings of a fresh dashboard and its seeded org (:func:`seed_org`)."""
    settings = make_settings(tmp_path)
    return settings, seed_org(settings)


def client(settings: DashboardSettings, **kw: Any) -> Any:
    """A TestClient on the app (no ingest), over https, redirects not followed."""
    from fastapi.testclient import TestClient

    from dashboard.app import create_app

    return TestClient(create_app(settings, start_ingest=False), base_url="https://testserver",
                      follow_redirects=False, **kw)


def login_as(c: Any, user: str, org_data: dict[str, Any]) -> None:
    """Log ``user`` of the seeded org in (with its TOTP secret if it has one)."""
    password = ADMIN_PASSWORD if user == ADMIN_USER else USER_PASSWORD
    r = client_login(c, user, password, org_data["secrets"].get(user))
    assert r.status_code == 303 and r.headers["location"] == "/", r.text


def csrf_header(c: Any) -> dict[str, str]:
    """The CSRF header of the logged-in session."""
    page = c.get("/", follow_redirects=True)
    return {"x-csrf-token": csrf_of(page.text)}


def failed_login(db: Any, username: str, addr: str, now: float | None = None,
                 kind: str = "password") -> None:
    """Record one failed login attempt as the login routes do (:func:`dashboard.auth.reserve_attempt`,
    checked and wrong), whatever the throttle says: to fill the throttle's counts."""
    from dashboard import auth

    with db.conn:
        db.conn.execute("INSERT INTO login_attempts (ts, username, addr, ok, kind) "
                        "VALUES (?, ?, ?, 0, ?)", (time.time() if now is None else now,
                                                   username[:64], auth.throttle_key(addr), kind))


@pytest.fixture
def org_server(tmp_path: Path) -> Iterator[tuple[DashboardServer, dict[str, Any]]]:
    """The seeded org (:func:`seed_org`) served over HTTP on a free port, without an ingest."""
    settings = make_settings(tmp_path)
    data = seed_org(settings)
    with DashboardServer(settings, start_ingest=False) as server:
        yield server, data


def query_plans(db: Any, run: Any, reads: tuple[str, ...] = (" metrics m ", " events e ")
                ) -> dict[str, list[str]]:
    """Each SELECT ``run`` executes that names one of ``reads`` (a table and its alias), with its
    query plan (EXPLAIN QUERY PLAN's detail column)."""
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    try:
        run()
    finally:
        db.conn.set_trace_callback(None)
    return {sql: [r[3] for r in db.conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()]
            for sql in statements
            if sql.lstrip().upper().startswith("SELECT") and any(t in sql for t in reads)}
