"""Odd and hostile input on the real dashboard (uvicorn): numbers typed in forms, queries and
files, the CTI endpoint's body."""

from __future__ import annotations

from typing import Any

import httpx

from dashboard import db as store
from tests._fixtures_dashboard import USER_PASSWORD, csrf_of, http_login

BROWSER = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
NOT_PLAIN_DIGITS = ("٢", "２", " 2", "2 ", "0_2", "+2", "2.0")
"""Variant 2 as Python's ``int`` reads it, none of it in plain ASCII digits: Arabic-Indic and
full-width digits, spaces, an underscore, a sign, a decimal point."""


def _campaign_of(server: Any, agent: str) -> tuple[Any, ...]:
    db = store.open_db(server.settings.db_path)
    try:
        return tuple(db.conn.execute("SELECT campaign, variant FROM agents WHERE agent = ?",
                                     (agent,)).fetchone())
    finally:
        db.conn.close()


def test_the_assign_form_takes_a_variant_in_plain_digits_only(org_server: Any) -> None:
    """The campaign page's assign form read its variant with ``int``: '٢', '２', ' 2', '0_2'
    put the agent on variant 2. Only ASCII digits are a variant now; anything else is the
    error page naming the variant (French), and the agent stays where they were."""
    server, data = org_server
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        sup = {"cookie": "__Host-miroir=" + http_login(c, "sup-a", USER_PASSWORD,
                                                        data["secrets"]["sup-a"])}
        csrf = csrf_of(c.get("/campaigns/camp-a", headers=sup).text)
        before = _campaign_of(server, "agent-a1")
        assert before == ("camp-a", None)
        for typed in NOT_PLAIN_DIGITS:
            r = c.post("/campaigns/camp-a/assign", headers={**sup, **BROWSER},
                       data={"csrf": csrf, "agent": "agent-a1", "variant": typed})
            assert r.status_code == 422, (typed, r.status_code)
            assert "la variante doit être un identifiant" in r.text, typed
            assert r.headers["cache-control"] == "no-store"
            assert _campaign_of(server, "agent-a1") == before, typed
        r = c.post("/campaigns/camp-a/assign", headers={**sup, **BROWSER},
                   data={"csrf": csrf, "agent": "agent-a1", "variant": "2"})
        assert (r.status_code, r.headers["location"]) == (303, "/campaigns/camp-a")
        assert _campaign_of(server, "agent-a1") == ("camp-a", 2)


def _flags_of(server: Any, agent: str) -> int:
    db = store.open_db(server.settings.db_path)
    try:
        return int(db.conn.execute("SELECT count(*) FROM flags WHERE agent = ?",
                                   (agent,)).fetchone()[0])
    finally:
        db.conn.close()


def test_numbers_in_paths_queries_and_the_flag_form_are_plain_digits_only(
        org_server: Any) -> None:
    """pydantic's lax reading of a path's, a query's or a form's number took '1_0', ' 10' and
    '+10' for 10 (and '1e9' for a moment): /api/calls/1_0 answered call 10, an audit page
    ?limit=+3 a page of three, a flag form's ts of '+<now>' stored a flag. Each is now a 422 naming
    the field, nothing stored; the same numbers in plain digits are answered as before."""
    import time

    server, _ = org_server
    now = f"{time.time():.0f}"
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        admin = {"cookie": "__Host-miroir=" + http_login(c)}
        for odd in ("1_0", "+10", "%2010"):
            r = c.get(f"/api/calls/{odd}", headers=admin)
            assert r.status_code == 422, (odd, r.status_code)
            assert r.json()["detail"][0]["loc"] == ["path", "call_id"], r.text
        assert c.get("/api/calls/10", headers=admin).json()["id"] == 10
        for query, field in (("limit=+3", "limit"), ("limit=3%20", "limit"),
                             ("before=1_000", "before")):
            r = c.get(f"/api/agents/agent-a1/audit?{query}", headers=admin)
            assert r.status_code == 422, (query, r.status_code)
            assert r.json()["detail"][0]["loc"] == ["query", field], r.text
        assert c.get("/api/agents/agent-a1/audit?limit=3", headers=admin).status_code == 200
        for query in (f"ts={now[:4]}e6", f"ts={now}&span_s=3_0", f"ts=+{now}"):
            r = c.get(f"/api/agents/agent-a1/moment?{query}", headers=admin)
            assert r.status_code == 422, (query, r.status_code)
        assert c.get(f"/api/agents/agent-a1/moment?ts={now}.5&span_s=30",
                     headers=admin).status_code == 200
        csrf = csrf_of(c.get("/agents/agent-a1", headers=admin).text)
        before = _flags_of(server, "agent-a1")
        for ts in (f"+{now}", f"{now[:4]}_{now[4:]}", f" {now}"):
            r = c.post("/agents/agent-a1/flags", headers={**admin, **BROWSER},
                       data={"csrf": csrf, "ts": ts, "note": "débit"})
            assert r.status_code == 422, (ts, r.status_code)
            assert "ts" in r.text and r.headers["cache-control"] == "no-store"
            assert _flags_of(server, "agent-a1") == before, ts
        r = c.post("/agents/agent-a1/flags", headers={**admin, **BROWSER},
                   data={"csrf": csrf, "ts": now, "note": "débit"})
        assert r.status_code == 303 and _flags_of(server, "agent-a1") == before + 1


def test_numbers_in_the_json_api_are_json_numbers_or_plain_digits(org_server: Any) -> None:
    """The JSON API's bodies took a number as a string the lax way: {"variant": "0_2"} or
    {"variant": true} put an agent on variant 2 or 1, and a flag's "ts" or a call's
    "start_ts" of "1795_952137", " <now>" or "1795e6" was stored. Each is now a 422 naming the
    field, nothing stored; JSON numbers and strings of plain digits are taken as before."""
    import time

    server, data = org_server
    now = f"{time.time():.0f}"
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        sup = {"cookie": "__Host-miroir=" + http_login(c, "sup-a", USER_PASSWORD,
                                                        data["secrets"]["sup-a"])}
        sup["x-csrf-token"] = csrf_of(c.get("/campaigns/camp-a", headers=sup).text)
        for variant in ("0_2", " 2", "+2", True):
            r = c.post("/api/campaigns/camp-a/assign", headers=sup,
                       json={"agent": "agent-a1", "variant": variant})
            assert r.status_code == 422, (variant, r.status_code, r.text)
            assert r.json()["detail"][0]["loc"] == ["body", "variant"], r.text
            assert _campaign_of(server, "agent-a1") == ("camp-a", None), variant
        flags = _flags_of(server, "agent-a1")
        for ts in (f"{now[:4]}_{now[4:]}", f" {now}", f"{now[:4]}e6"):
            r = c.post("/api/agents/agent-a1/flags", headers=sup, json={"ts": ts})
            assert r.status_code == 422, (ts, r.status_code, r.text)
            assert r.json()["detail"][0]["loc"] == ["body", "ts"], r.text
            r = c.post("/api/calls", headers=sup, json={"agent": "agent-a1", "start_ts": ts})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "start_ts"]
        assert _flags_of(server, "agent-a1") == flags
        for variant, ts in (("2", now), (1, float(now))):
            r = c.post("/api/campaigns/camp-a/assign", headers=sup,
                       json={"agent": "agent-a1", "variant": variant})
            assert r.status_code == 200 and _campaign_of(server, "agent-a1") == ("camp-a",
                                                                                 int(variant))
            assert c.post("/api/agents/agent-a1/flags", headers=sup,
                          json={"ts": ts}).status_code == 201
        assert _flags_of(server, "agent-a1") == flags + 2


def test_a_whole_number_in_a_json_body_may_be_a_json_number_with_a_zero_fraction(
        org_server: Any) -> None:
    """JSON has one number type and many clients write a whole number as ``2.0``: the IT guide
    says a number in a JSON body is a JSON number, so ``"variant": 2.0`` (or ``2e0``) is
    variant 2, stored and answered as the whole number 2, on each of the three bodies that take
    a variant (the assignment, a call, a call's variant); ``2.5`` is not a whole number and
    ``"2.0"`` not a string of digits: 422 naming the field, nothing changed."""
    import time

    server, data = org_server
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        sup = {"cookie": "__Host-miroir=" + http_login(c, "sup-a", USER_PASSWORD,
                                                        data["secrets"]["sup-a"])}
        sup["x-csrf-token"] = csrf_of(c.get("/campaigns/camp-a", headers=sup).text)
        raw = {**sup, "content-type": "application/json"}  # the bodies below as written
        for bad in (2.5, "2.0", 1e19):
            r = c.post("/api/campaigns/camp-a/assign", headers=sup,
                       json={"agent": "agent-a1", "variant": bad})
            assert (r.status_code, r.json()["detail"][0]["loc"]) == (422, ["body", "variant"])
            r = c.post("/api/calls", headers=sup, json={"agent": "agent-a1", "variant": bad,
                                                        "start_ts": time.time() - 60})
            assert (r.status_code, r.json()["detail"][0]["loc"]) == (422, ["body", "variant"])
        assert _campaign_of(server, "agent-a1") == ("camp-a", None)
        r = c.post("/api/campaigns/camp-a/assign", headers=raw,
                   content=b'{"agent": "agent-a1", "variant": 2.0}')
        assert (r.status_code, r.text) == (200, '{"agent":"agent-a1","campaign":"camp-a",'
                                                '"variant":2}')
        r = c.post("/api/calls", headers=raw, content=b'{"agent": "agent-a1", "variant": 2e0, '
                                                      b'"start_ts": %d}' % (time.time() - 60))
        assert r.status_code == 201, r.text
        call = r.json()["id"]
        r = c.post(f"/api/calls/{call}/variant", headers=raw, content=b'{"variant": 1.0}')
        assert (r.status_code, r.text) == (200, f'{{"id":{call},"campaign":"camp-a","variant":1}}')
        r = c.post(f"/api/calls/{call}/variant", headers=raw, content=b'{"variant": 1.5}')
        assert r.status_code == 422
    db = store.open_db(server.settings.db_path)
    try:
        stored = db.conn.execute("SELECT typeof(variant), variant FROM agents WHERE agent = ?",
                                 ("agent-a1",)).fetchone()
        assert tuple(stored) == ("integer", 2)
        stored = db.conn.execute("SELECT typeof(variant), variant FROM calls WHERE id = ?",
                                 (call,)).fetchone()
        assert tuple(stored) == ("integer", 1)
    finally:
        db.conn.close()
