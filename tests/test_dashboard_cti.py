"""The CTI path on the real dashboard (uvicorn, its ingest on the site's Mosquitto): a CTI server
posts call states, the dashboard relays them to the box's ``cmd`` topic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashboard import db as store
from dashboard import schema
from dashboard.app import DashboardServer
from dashboard.routes import cti
from tests._fixtures_dashboard import make_settings

TOKEN = "c" * 32
BEARER = {"authorization": f"Bearer {TOKEN}"}
METRICS_TOKEN = "m" * 32
BURST = 40
RATE_PER_S = 0.01
"""A burst and rate small enough that a test's posts spend them (defaults: 200, then 10 a second)."""


@pytest.fixture
def cti_server(site: Any, broker: Any, tmp_path: Path) -> Iterator[DashboardServer]:
    """The dashboard served with a CTI token, its ingest on the site's broker; box-a seats
    agent-a."""
    (tmp_path / "cti").write_text(TOKEN)
    (tmp_path / "metrics").write_text(METRICS_TOKEN)
    settings = make_settings(
        tmp_path, site=site.site, mqtt_host="localhost", mqtt_port=broker.port,
        mqtt_ca=site.ca_cert, mqtt_cert=site.dashboard.cert, mqtt_key=site.dashboard.key,
        cti_token_file=tmp_path / "cti", metrics_token_file=tmp_path / "metrics",
        trusted_proxies=["127.0.0.1"],
        cti_burst=BURST, cti_rate_per_s=RATE_PER_S)
    db = store.open_db(settings.db_path)
    schema.ensure_schema(db)
    schema.import_inventory(db, [{"box": "box-a", "seat": "A", "agent": "agent-a"}],
                            site=site.site)
    db.conn.close()
    with DashboardServer(settings) as server:
        assert server.ingest is not None and server.ingest.wait_connected(10.0)
        yield server


def test_a_cti_client_that_floods_is_answered_429_and_the_box_gets_no_more_than_it_allows(
        cti_server: DashboardServer, site: Any, peer: Any) -> None:
    """Every call state posted was a database query and an MQTT command to the box, however
    many: a client looping on 600 posts had all 600 answered 202 and all 600 commands reached
    box-a's cmd topic (26.7 s here, the dashboard's whole capacity on this machine). Each
    client (its address, as the login throttle counts it) now has cti_burst states at once and
    cti_rate_per_s a second after that; beyond, 429 with Retry-After, and nothing is sent.
    Another client is not slowed."""
    box = peer(site.box("box-a"), "box-a")
    topic = f"miroir/v1/{site.site}/box-a/cmd"
    assert box.subscribe(topic) == 1
    flood = {**BEARER, "x-forwarded-for": "192.0.2.10"}
    with httpx.Client(base_url=cti_server.url) as c:
        answers = [c.post(cti.PATH, headers=flood,
                          json={"box": "box-a", "state": ("hold", "active")[i % 2]})
                   for i in range(100)]
        other = c.post(cti.PATH, headers={**BEARER, "x-forwarded-for": "192.0.2.20"},
                       json={"agent": "agent-a", "state": "idle"})
    codes = [r.status_code for r in answers]
    accepted = codes.count(202)
    assert codes[:BURST] == [202] * BURST, codes[:BURST]
    assert codes[-1] == 429 and accepted < 100, codes
    limited = answers[-1]
    assert int(limited.headers["retry-after"]) >= 1
    assert "too many call states" in limited.json()["detail"]
    assert other.status_code == 202, other.text
    box.wait_for(lambda: len(box.messages) >= accepted + 1, "the accepted commands")
    assert len(box.messages) == accepted + 1
    assert [json.loads(p)["call_state"] for _, p in box.messages][-1] == "idle"


def test_the_relayed_and_refused_call_states_are_counted_on_the_metrics_page(
        cti_server: DashboardServer, site: Any, peer: Any) -> None:
    """A relayed call state left nothing but a debug line: nobody could tell how many states a
    CTI server sent, nor how many were refused and why (a wrong token, a seat unknown, too many,
    the broker out of reach), short of the boxes' statuses. Each is now counted on /metrics,
    by state and by reason. Not in the audit log: it records who read or changed whose data
    and each agent sees their entries; a CTI server's states are a machine's feed, three or
    four a call, about 20,000 a day on a 60-seat floor, which would bury those entries (and
    7 million rows a year for the purge)."""
    box = peer(site.box("box-a"), "box-a")
    assert box.subscribe(f"miroir/v1/{site.site}/box-a/cmd") == 1
    with httpx.Client(base_url=cti_server.url) as c:
        for headers, body, code in (
                (BEARER, {"agent": "agent-a", "state": "active"}, 202),
                (BEARER, {"box": "box-a", "state": "hold"}, 202),
                (BEARER, {"box": "box-a", "state": "active"}, 202),
                ({"authorization": "Bearer " + "x" * 32}, {"box": "box-a", "state": "hold"}, 401),
                (BEARER, {"agent": "nobody", "state": "hold"}, 404)):
            assert c.post(cti.PATH, headers=headers, json=body).status_code == code, body
        page = c.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}).text
    series = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
              for line in page.splitlines() if line.startswith("miroir_cti_")}
    assert series == {
        'miroir_cti_call_states_relayed_total{state="active"}': 2.0,
        'miroir_cti_call_states_relayed_total{state="hold"}': 1.0,
        'miroir_cti_call_states_relayed_total{state="idle"}': 0.0,
        'miroir_cti_call_states_refused_total{reason="unauthorized"}': 1.0,
        'miroir_cti_call_states_refused_total{reason="no_seat"}': 1.0,
        'miroir_cti_call_states_refused_total{reason="too_many"}': 0.0,
        'miroir_cti_call_states_refused_total{reason="broker"}': 0.0,
    }, series
    box.wait_for(lambda: len(box.messages) >= 3, "the relayed states")


def test_the_token_is_checked_before_the_body(tmp_path: Path) -> None:
    """A post without the CTI token whose body was malformed answered 422 with the schema's
    complaints (`state`: "Input should be 'idle', 'active' or 'hold'"): deny by default, but a
    client with no token learnt the body's fields and values. The token is now checked first:
    401 and nothing more; with the token, the same bodies are answered 422 as before."""
    (tmp_path / "cti").write_text(TOKEN)
    settings = make_settings(tmp_path, cti_token_file=tmp_path / "cti")
    bodies = (b"{not json", b"", b'{"box": "box-a"}', b'{"box": "box-a", "state": "ringing"}',
              b'{"box": "box-a", "agent": "agent-a", "state": "idle"}',
              b'{"box": "box-a", "state": "idle", "extra": 1}')
    with DashboardServer(settings, start_ingest=False) as server, \
            httpx.Client(base_url=server.url) as c:
        for body in bodies:
            for headers in ({}, {"authorization": "Bearer " + "x" * 32}):
                r = c.post(cti.PATH, content=body,
                           headers={**headers, "content-type": "application/json"})
                assert (r.status_code, r.json()) == (401, {"detail": "unauthorized"}), body
            r = c.post(cti.PATH, content=body,
                       headers={**BEARER, "content-type": "application/json"})
            assert r.status_code == 422 and r.json()["detail"][0]["type"], (body, r.text)
        ringing = c.post(cti.PATH, json={"box": "box-a", "state": "ringing"}, headers=BEARER)
        assert ringing.json()["detail"][0]["loc"] == ["body", "state"]


def test_a_call_state_not_sent_as_json_is_415_and_an_empty_one_says_so(tmp_path: Path) -> None:
    """The body was parsed as JSON whatever its Content-Type: a call state posted as text/plain,
    as a form (curl's -d without the header docs/wire.md gives) or with no Content-Type was
    relayed, and an empty body answered "Invalid JSON: EOF while parsing a value". With the
    token, another type is now 415 saying to send JSON with that header, nothing sent; an empty
    body is 422 "empty body"; JSON (with a charset, or a +json type) is taken as before."""
    (tmp_path / "cti").write_text(TOKEN)
    settings = make_settings(tmp_path, cti_token_file=tmp_path / "cti")
    body = b'{"box": "box-a", "state": "hold"}'
    with DashboardServer(settings, start_ingest=False) as server, \
            httpx.Client(base_url=server.url) as c:
        db = store.open_db(settings.db_path)
        schema.import_inventory(db, [{"box": "box-a", "seat": "A", "agent": "agent-a"}])
        db.conn.close()
        counts: cti.CallStateCounts = server.app.state.cti_counts
        for ctype in ("text/plain", "application/x-www-form-urlencoded", None, "application/jsonx",
                      "text/json"):
            headers = {**BEARER, **({"content-type": ctype} if ctype else {})}
            r = c.post(cti.PATH, content=body, headers=headers)
            assert r.status_code == 415, (ctype, r.status_code, r.text)
            assert r.json() == {"detail": "send the call state as JSON, with the header "
                                          "Content-Type: application/json"}
            r = c.post(cti.PATH, content=body, headers={k: v for k, v in headers.items()
                                                          if k != "authorization"})
            assert r.status_code == 401, ctype  # the token first, whatever the type
        assert counts.snapshot()[1]["broker"] == 0  # none of them went on to the broker
        for blank in (b"", b" \r\n"):
            r = c.post(cti.PATH, content=blank,
                       headers={**BEARER, "content-type": "application/json"})
            assert r.status_code == 422, r.text
            assert r.json()["detail"][0]["msg"].startswith("empty body: "), r.text
        for ctype in ("application/json", "application/json; charset=utf-8",
                      "Application/JSON", "application/vnd.cti+json"):
            r = c.post(cti.PATH, content=body, headers={**BEARER, "content-type": ctype})
            assert r.status_code == 503, (ctype, r.text)  # read and sent on: no broker here
        assert counts.snapshot()[1]["broker"] == 4
