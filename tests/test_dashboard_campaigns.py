"""Campaigns and pitch variants: creation, assignment, call tagging, closing, comparison."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dashboard import db as store
from dashboard import schema
from dashboard.app import create_app
from dashboard.settings import DashboardSettings
from tests._fixtures_dashboard import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    USER_PASSWORD,
    client_login,
    csrf_header,
    csrf_of,
    login_as,
    make_settings,
    seed_org,
)


@pytest.fixture
def org(tmp_path: Path) -> tuple[DashboardSettings, dict[str, Any]]:
    settings = make_settings(tmp_path)
    return settings, seed_org(settings, seconds=30)


def _client(settings: DashboardSettings) -> TestClient:
    return TestClient(create_app(settings, start_ingest=False), base_url="https://testserver",
                      follow_redirects=False)


def _login(c: TestClient, user: str, data: dict[str, Any]) -> dict[str, str]:
    r = client_login(c, user, USER_PASSWORD, data["secrets"].get(user))
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    return {"x-csrf-token": csrf_of(c.get("/campaigns").text)}


def test_supervisor_creates_runs_and_closes_a_campaign_within_their_teams(org: Any) -> None:
    settings, data = org
    body = {"campaign": "salon-nantes", "name": "Salon Nantes", "team": "team-a",
            "variants": [{"name": "Question ouverte", "text": "Comment gérez-vous… ?"},
                         {"name": "Preuve sociale", "text": "Vos voisins de stand…"}]}
    with _client(settings) as c:
        hdr = _login(c, "sup-a", data)
        # CSRF like every state change.
        assert c.post("/api/campaigns", json=body).status_code == 403
        assert c.post("/api/campaigns", json=body, headers={"x-csrf-token": "x"}
                      ).status_code == 403
        # Out of scope or malformed: team B is invisible, a team is required, ids are checked.
        assert c.post("/api/campaigns", json={**body, "team": "team-b"},
                      headers=hdr).status_code == 404
        assert c.post("/api/campaigns", json={**body, "team": None},
                      headers=hdr).status_code == 422
        assert c.post("/api/campaigns", json={**body, "campaign": "Salon/Nantes"},
                      headers=hdr).status_code == 422
        dup = {**body, "variants": [body["variants"][0]] * 2}
        assert c.post("/api/campaigns", json=dup, headers=hdr).status_code == 422
        r = c.post("/api/campaigns", json=body, headers=hdr)
        assert r.status_code == 201, r.text
        made = r.json()
        assert (made["team"], made["closed_ts"]) == ("team-a", None)
        v1, v2 = (v["id"] for v in made["variants"])
        assert c.post("/api/campaigns", json=body, headers=hdr).status_code == 409
        # A browser's failed form gets a page; the API, even asked for HTML, its JSON answer.
        page = {"accept": "text/html"}
        r = c.post("/campaigns/salon-nantes/variants", headers=page,
                   data={"csrf": hdr["x-csrf-token"], "name": "Preuve sociale"})
        assert r.status_code == 409 and r.headers["content-type"].startswith("text/html")
        assert '<p class="error" id="variant-error" role="alert">Variante non ajoutée : une ' \
            'variante porte déjà ce nom.</p>' in r.text  # the campaign again, the form as typed
        assert 'name="name" required maxlength="80" value="Preuve sociale"' in r.text
        r = c.post("/campaigns/salon-nantes/variants", headers=page, data={"csrf": hdr["x-csrf-token"]})
        assert r.status_code == 422 and '<code id="error-detail">name</code>' in r.text
        r = c.post("/api/campaigns/salon-nantes/variants", json={"name": "Preuve sociale"},
                   headers={**hdr, **page})
        assert (r.status_code, r.json()) == (409, {"detail": "a variant has that name already"})
        assert c.get("/agents/nobody", headers=page).text.count('href="/"') >= 1
        r = c.post("/api/campaigns/salon-nantes/variants",
                   json={"name": "Bénéfice chiffré", "text": "…"}, headers=hdr)
        assert r.status_code == 201
        v3 = r.json()["id"]
        # Agents on a variant: their next calls are tagged with it.
        assert c.post("/api/campaigns/salon-nantes/assign",
                      json={"agent": "agent-b1", "variant": v1}, headers=hdr).status_code == 404
        assert c.post("/api/campaigns/salon-nantes/assign",
                      json={"agent": "agent-a1", "variant": 3}, headers=hdr).status_code == 422
        for agent, variant in (("agent-a1", v1), ("agent-a2", v2)):
            assert c.post("/api/campaigns/salon-nantes/assign",
                          json={"agent": agent, "variant": variant},
                          headers=hdr).status_code == 200
        now = time.time()
        outcomes = {"agent-a1": ["meeting"] * 6 + ["refusal"] * 4,
                    "agent-a2": ["meeting"] * 1 + ["refusal"] * 8 + ["no_answer"]}
        for agent, outs in outcomes.items():
            for k, outcome in enumerate(outs):
                r = c.post("/api/calls", json={"agent": agent, "start_ts": now - 600 + k},
                           headers=hdr)
                assert r.status_code == 201
                call = r.json()["id"]
                assert c.post(f"/api/calls/{call}/outcome", json={"outcome": outcome},
                              headers=hdr).status_code == 200
        # A call tagged afterwards with another variant (the supervisor corrects it).
        assert c.post(f"/api/calls/{call}/variant", json={"variant": v3},
                      headers=hdr).status_code == 200
        assert c.post(f"/api/calls/{call}/variant", json={"variant": 3},
                      headers=hdr).status_code == 404  # team B's campaign: not visible
        assert c.post("/api/calls", json={"agent": "agent-a1", "start_ts": now, "campaign":
                                          "camp-a", "variant": v1},
                      headers=hdr).status_code == 422  # v1 is not camp-a's
        comp = {v["name"]: v for v in c.get("/api/campaigns/salon-nantes/comparison"
                                             ).json()["variants"]}
        assert (comp["Question ouverte"]["calls"], comp["Question ouverte"]["outcomes"]
                ["meeting"]) == (10, 6)
        assert comp["Preuve sociale"]["calls"] == 9 and comp["Bénéfice chiffré"]["calls"] == 1
        assert comp["Question ouverte"]["rate"] == pytest.approx(0.6)
        assert comp["Question ouverte"]["ci_low"] > comp["Preuve sociale"]["rate"]
        page = c.get("/campaigns/salon-nantes").text
        assert "Preuve sociale" in page and "60,0 %" in page and 'id="close-campaign"' in page
        # Team B's supervisor cannot see it, nor change it.
    with _client(settings) as c:
        hdr_b = _login(c, "sup-b", data)
        for method, url in (("GET", "/api/campaigns/salon-nantes"),
                            ("POST", "/api/campaigns/salon-nantes/close"),
                            ("GET", "/campaigns/salon-nantes")):
            assert c.request(method, url, headers=hdr_b).status_code == 404, url
    with _client(settings) as c:
        hdr = _login(c, "sup-a", data)
        r = c.post("/api/campaigns/salon-nantes/close", headers=hdr)
        assert r.status_code == 200 and r.json()["closed_ts"] is not None
        assert c.post("/api/campaigns/salon-nantes/close", headers=hdr).json()["closed_ts"] == \
            r.json()["closed_ts"]  # idempotent
        assert c.post("/api/campaigns/salon-nantes/variants", json={"name": "Trop tard"},
                      headers=hdr).status_code == 409
        assert c.post("/api/campaigns/salon-nantes/assign", json={"agent": "agent-a1"},
                      headers=hdr).status_code == 409
        assert c.post(f"/api/calls/{call}/variant", json={"variant": v1},
                      headers=hdr).status_code == 409
        # Agents were released: a new call has no campaign; the comparison remains.
        r = c.post("/api/calls", json={"agent": "agent-a1", "start_ts": time.time()},
                   headers=hdr)
        assert c.get(f"/api/calls/{r.json()['id']}").json()["campaign"] is None
        assert c.get("/api/campaigns/salon-nantes/comparison").json()["variants"][0][
            "calls"] == 10
        page = c.get("/campaigns/salon-nantes").text
        assert "Clôturée" in page and 'id="close-campaign"' not in page
    db = store.open_db(settings.db_path)
    actions = [r[0] for r in db.conn.execute(
        "SELECT action FROM audit_log WHERE action LIKE 'campaign_%' ORDER BY id").fetchall()]
    assert actions == ["campaign_create", "campaign_assign", "campaign_assign", "campaign_close",
                       "campaign_close"]  # one about each agent it took off


def test_campaign_forms_need_csrf_and_agents_and_auditors_cannot_create(org: Any) -> None:
    settings, data = org
    form = {"campaign": "mutuelle-2", "name": "Mutuelle 2", "team": "team-a",
            "variants": "Standard | Bonjour…\nDirect | Vous payez trop"}
    with _client(settings) as c:
        _login(c, "sup-a", data)
        token = csrf_of(c.get("/campaigns").text)
        assert c.post("/campaigns", data=form).status_code == 403
        r = c.post("/campaigns", data={**form, "csrf": token})
        assert r.status_code == 303 and r.headers["location"] == "/campaigns/mutuelle-2"
        variants = c.get("/api/campaigns/mutuelle-2").json()["variants"]
        assert [(v["name"], v["text"]) for v in variants] == [
            ("Standard", "Bonjour…"), ("Direct", "Vous payez trop")]
        r = c.post("/campaigns", data={**form, "csrf": token})
        assert r.status_code == 409 and "identifiant de campagne est déjà pris" in r.text
        r = c.post("/campaigns", data={**form, "campaign": "BAD ID", "csrf": token})
        assert r.status_code == 422 and "invalide" in r.text
        r = c.post("/campaigns/mutuelle-2/assign",
                   data={"agent": "agent-a2", "variant": str(variants[1]["id"]), "csrf": token})
        assert r.status_code == 303
        assert 'data-agent="agent-a2"' in c.get("/campaigns/mutuelle-2").text
        r = c.post("/campaigns/mutuelle-2/close", data={"csrf": token},
                   headers={"accept": "text/html"})
        assert r.status_code == 422 and "cochez la case de confirmation" in r.text
        assert "En cours" in c.get("/campaigns/mutuelle-2").text  # not closed by a slip
        assert c.post("/campaigns/mutuelle-2/close",
                      data={"csrf": token, "confirm": "1"}).status_code == 303
    for user in ("amina", "auditrice"):
        with _client(settings) as c:
            client_login(c, user, USER_PASSWORD)
            token = csrf_of(c.get("/", follow_redirects=True).text)
            assert c.post("/api/campaigns", json={"campaign": "x", "name": "x"},
                          headers={"x-csrf-token": token}).status_code == 404, user
            assert c.post("/campaigns", data={**form, "campaign": "y", "csrf": token}
                          ).status_code == 404, user
            if user == "auditrice":  # sees campaigns (aggregates), never the creation form
                assert 'id="new-campaign"' not in c.get("/campaigns").text


def test_a_campaign_named_with_spaces_only_is_refused_not_saved_without_a_name(
        org_server: Any) -> None:
    """A campaign name of spaces only (typed "   ", or a tab from the API) passed the form's and
    the API's check (at least one character) and was saved stripped, empty: the campaigns
    page's list showed it as a link without text, out of reach. It is refused now, as a goal's
    name is: the form comes back as typed with the reason (422), the API answers 422, nothing is
    saved, over the real server; a campaign saved so before shows its id."""
    import httpx

    from tests._fixtures_dashboard import http_login

    server, data = org_server
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        cookie = {"cookie": "__Host-miroir="
                            f"{http_login(c, 'sup-a', USER_PASSWORD, data['secrets']['sup-a'])}"}
        token = csrf_of(c.get("/campaigns", headers=cookie).text)
        r = c.post("/campaigns", headers=cookie, data={
            "csrf": token, "campaign": "salon-blanc", "name": "   ", "team": "team-a",
            "variants": "Question | Comment ?"})
        assert r.status_code == 422, (r.status_code, r.headers.get("location"))
        assert "le nom et les variantes" in r.text
        assert 'value="salon-blanc"' in r.text
        r = c.post("/api/campaigns", headers={**cookie, "x-csrf-token": token},
                   json={"campaign": "salon-tab", "name": "\t \n", "team": "team-a"})
        assert r.status_code == 422, r.text
        db = store.open_db(server.settings.db_path)
        try:
            assert db.conn.execute("SELECT campaign FROM campaigns WHERE campaign LIKE 'salon-%'"
                                   ).fetchall() == []
            with db.conn:  # saved so before the check
                db.conn.execute("INSERT INTO campaigns (campaign, name, team, created_ts) "
                                "VALUES ('ancienne', '', 'team-a', ?)", (time.time(),))
        finally:
            db.conn.close()
        page = c.get("/campaigns", headers=cookie).text
        links = re.findall(r'<a class="chip-link[^"]*" href="/campaigns/([^"]+)">([^<]*)<', page)
        assert links == [("ancienne", "ancienne"), ("camp-a", "Salon Lyon")]


def test_closing_a_campaign_is_in_the_audit_log_of_each_agent_it_takes_off(
        org_server: Any) -> None:
    """Closing camp-a took agent-a1 and agent-a2 off it (their next calls carry no campaign),
    but the audit log had one entry naming no agent: neither agent's log (their page, the API)
    said who took them off nor when, where putting them on a campaign is in it. The closing is
    now an entry about each agent it takes off, with the campaign, over the real server; a
    campaign that no agent is on still leaves one entry."""
    import httpx

    from tests._fixtures_dashboard import http_login

    server, data = org_server
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        sup = {"cookie": "__Host-miroir="
                         f"{http_login(c, 'sup-a', USER_PASSWORD, data['secrets']['sup-a'])}"}
        hdr = {**sup, "x-csrf-token": csrf_of(c.get("/campaigns", headers=sup).text)}
        assert c.post("/api/campaigns", json={"campaign": "vide", "name": "Vide",
                                              "team": "team-a"}, headers=hdr).status_code == 201
        for campaign in ("camp-a", "vide"):
            assert c.post(f"/api/campaigns/{campaign}/close", headers=hdr).status_code == 200
        amina = {"cookie": f"__Host-miroir={http_login(c, 'amina', USER_PASSWORD)}"}
        own = c.get("/api/agents/agent-a1/audit", headers=amina).json()["entries"]
    assert [(e["actor"], e["action"], json.loads(e["detail"])) for e in own
            if e["action"] == "campaign_close"] == [("sup-a", "campaign_close",
                                                      {"campaign": "camp-a"})]
    db = store.open_db(server.settings.db_path)
    try:
        closes = db.conn.execute("SELECT agent, json_extract(detail, '$.campaign') FROM audit_log "
                                 "WHERE action = 'campaign_close' ORDER BY agent").fetchall()
    finally:
        db.conn.close()
    assert closes == [(None, "vide"), ("agent-a1", "camp-a"), ("agent-a2", "camp-a")]


def test_a_campaign_created_twice_at_once_is_one_campaign_and_conflicts_not_500s(
        org_server: Any) -> None:
    """A double click on "Créer la campagne" (or two supervisors at once): each request checked
    that the id was free, then both wrote it, and all but the first answered 500 (a UNIQUE
    constraint failed) in 3 of 10 bursts of 6. The check and the write are now one write
    transaction: of each burst of 8 over the real server, one creates the campaign and the
    others answer 409 as a second request after it does."""
    import threading

    import httpx

    from tests._fixtures_dashboard import http_login

    server, data = org_server
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        cookie = {"cookie": "__Host-miroir="
                            f"{http_login(c, 'sup-a', USER_PASSWORD, data['secrets']['sup-a'])}"}
        hdr = {**cookie, "x-csrf-token": csrf_of(c.get("/campaigns", headers=cookie).text)}
    bursts = []
    for k in range(20):
        answers: list[int] = []
        start = threading.Barrier(8)

        def create(k: int = k, answers: list[int] = answers,
                   start: threading.Barrier = start) -> None:
            with httpx.Client(base_url=server.url, timeout=30.0) as c:
                start.wait()
                answers.append(c.post("/api/campaigns", headers=hdr, json={
                    "campaign": f"double-{k}", "name": "Double", "team": "team-a",
                    "variants": [{"name": "A"}, {"name": "B"}]}).status_code)

        threads = [threading.Thread(target=create) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        bursts.append(sorted(answers))
    assert [b for b in bursts if b != [201] + [409] * 7] == []
    db = store.open_db(server.settings.db_path)
    try:
        assert db.conn.execute("SELECT count(*) FROM variants WHERE campaign LIKE 'double-%'"
                               ).fetchone()[0] == 40
    finally:
        db.conn.close()


def test_a_campaign_closed_twice_at_once_is_closed_once(org_server: Any) -> None:
    """Closing is idempotent (a second close answers the first's time): closed twice at once
    (a double click on "Clôturer"), both requests found the campaign open, each wrote its own
    closing time and its audit entry, and the answers disagreed (in 1 of 5 bursts of 4). The
    check and the writes are now one write transaction: of each burst of 4 over the real server,
    every answer gives the one stored closing time, with one entry in the audit log."""
    import threading

    import httpx

    from tests._fixtures_dashboard import http_login

    server, data = org_server
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        cookie = {"cookie": "__Host-miroir="
                            f"{http_login(c, 'sup-a', USER_PASSWORD, data['secrets']['sup-a'])}"}
        hdr = {**cookie, "x-csrf-token": csrf_of(c.get("/campaigns", headers=cookie).text)}
        for k in range(15):
            assert c.post("/api/campaigns", headers=hdr, json={
                "campaign": f"close-{k}", "name": "Close", "team": "team-a"}).status_code == 201
    times = {}
    for k in range(15):
        answers: list[float] = []
        start = threading.Barrier(4)

        def close(k: int = k, answers: list[float] = answers,
                  start: threading.Barrier = start) -> None:
            with httpx.Client(base_url=server.url, timeout=30.0) as c:
                start.wait()
                answers.append(c.post(f"/api/campaigns/close-{k}/close", headers=hdr
                                      ).json()["closed_ts"])

        threads = [threading.Thread(target=close) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        times[f"close-{k}"] = set(answers)
    db = store.open_db(server.settings.db_path)
    try:
        stored = {c: {ts} for c, ts in db.conn.execute(
            "SELECT campaign, closed_ts FROM campaigns WHERE campaign LIKE 'close-%'")}
        entries = dict(db.conn.execute(
            "SELECT json_extract(detail, '$.campaign'), count(*) FROM audit_log WHERE "
            "action = 'campaign_close' GROUP BY 1").fetchall())
    finally:
        db.conn.close()
    assert times == stored
    assert entries == {f"close-{k}": 1 for k in range(15)}


def test_a_closed_campaigns_comparison_stays_when_its_calls_are_tagged_again(
        org_server: Any) -> None:
    """A closed campaign's comparison stays (nothing new is tagged with it), but a call of it
    could still be tagged with a variant of an open campaign: the call left the closed
    campaign, whose comparison lost it (30 calls of "Question ouverte" became 29). Tagging a
    call of a closed campaign again is refused now (409, as any tag with a closed campaign),
    over the real server; its comparison and the call are unchanged."""
    import httpx

    from tests._fixtures_dashboard import http_login

    server, data = org_server
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        cookie = {"cookie": "__Host-miroir="
                            f"{http_login(c, 'sup-a', USER_PASSWORD, data['secrets']['sup-a'])}"}
        hdr = {**cookie, "x-csrf-token": csrf_of(c.get("/campaigns", headers=cookie).text)}
        r = c.post("/api/campaigns", headers=hdr, json={
            "campaign": "suite", "name": "Suite", "team": "team-a", "variants": [{"name": "A"}]})
        assert r.status_code == 201
        new_variant = r.json()["variants"][0]["id"]

        def calls() -> dict[str, int]:
            return {v["name"]: v["calls"] for v in c.get(
                "/api/campaigns/camp-a/comparison", headers=cookie).json()["variants"]}

        before = calls()
        assert c.post("/api/campaigns/camp-a/close", headers=hdr).status_code == 200
        r = c.post("/api/calls/1/variant", headers=hdr, json={"variant": new_variant})
        assert (r.status_code, r.json()["detail"]) == (409, "campaign is closed")
        assert calls() == before == {"Question ouverte": 30, "Bénéfice direct": 30}
        assert c.get("/api/calls/1", headers=cookie).json()["campaign"] == "camp-a"


def test_a_variant_without_calls_has_no_rate_nor_interval(org: Any) -> None:
    """A variant no call has an outcome for yet says nothing about its meeting rate: no 0 %, no
    zero-width 95 % interval (a single refusal's interval is 0 to 79 %), no dot on the chart."""
    settings, data = org
    body = {"campaign": "energie-2026", "name": "Énergie 2026", "team": "team-a",
            "variants": [{"name": "Question"}, {"name": "Chiffre"}]}
    with _client(settings) as c:
        hdr = _login(c, "sup-a", data)
        made = c.post("/api/campaigns", json=body, headers=hdr).json()
        asked = made["variants"][0]["id"]
        call = c.post("/api/calls", json={"agent": "agent-a1", "start_ts": time.time() - 60,
                                          "campaign": "energie-2026", "variant": asked},
                      headers=hdr).json()["id"]
        assert c.post(f"/api/calls/{call}/outcome", json={"outcome": "refusal"},
                      headers=hdr).status_code == 200
        comp = {v["name"]: v for v in c.get("/api/campaigns/energie-2026/comparison"
                                             ).json()["variants"]}
        assert (comp["Question"]["calls"], comp["Question"]["rate"]) == (1, 0.0)
        assert comp["Question"]["ci_high"] == pytest.approx(0.793, abs=1e-3)
        assert comp["Chiffre"]["calls"] == 0
        assert (comp["Chiffre"]["rate"], comp["Chiffre"]["ci_low"], comp["Chiffre"]["ci_high"]) \
            == (None, None, None)
        page = c.get("/campaigns/energie-2026").text
    rows = {m[0]: m[1] for m in re.findall(
        r'<tr class="variant"[^>]*><td><strong>([^<]+)</strong>(.*?)</tr>', page, re.S)}
    assert "0,0 – 79,3 %" in rows["Question"]
    assert "0,0 %" not in rows["Chiffre"] and "—" in rows["Chiffre"]
    assert page.count("<circle") == 1  # the dot of the variant with a call only


def test_a_comparison_without_a_tagged_call_says_where_its_calls_come_from(org: Any) -> None:
    """A new campaign's comparison drew an empty chart (its 0 to 100 % grid, no dot) over a
    table of zeros, and said nothing: on a floor whose calls no phone system records (the
    demo's) it stays so for ever. It now says no call has an outcome yet and how one counts;
    once one has, the chart is back."""
    settings, data = org
    body = {"campaign": "energie-2026", "name": "Énergie 2026", "team": "team-a",
            "variants": [{"name": "Question"}, {"name": "Chiffre"}]}
    with _client(settings) as c:
        hdr = _login(c, "sup-a", data)
        made = c.post("/api/campaigns", json=body, headers=hdr).json()
        empty = c.get("/campaigns/energie-2026").text
        call = c.post("/api/calls", json={"agent": "agent-a1", "start_ts": time.time() - 60,
                                          "campaign": "energie-2026",
                                          "variant": made["variants"][0]["id"]},
                      headers=hdr).json()["id"]
        untagged = c.get("/campaigns/energie-2026").text
        c.post(f"/api/calls/{call}/outcome", json={"outcome": "meeting"}, headers=hdr)
        tagged = c.get("/campaigns/energie-2026").text
    said = re.search(r'<p class="muted" id="no-tagged-calls">([^<]+)</p>', empty)
    assert said is not None and 'class="ci-chart"' not in empty
    assert said.group(1) == ("Aucun appel qualifié pour l'instant : un appel compte ici une fois "
                             "enregistré par le système téléphonique (CTI) et son issue saisie "
                             "dans la liste des appels de la page de l'agent.").replace("'", "&#39;")
    assert 'id="no-tagged-calls"' in untagged and 'class="ci-chart"' not in untagged
    assert 'id="no-tagged-calls"' not in tagged and tagged.count("<circle") == 1


def test_empty_lists_of_a_campaign_and_a_team_board_say_what_would_be_there(org: Any) -> None:
    """A campaign nobody is assigned to listed its agents as a bare "—", and so did a team board
    its remarkable calls before any moment was shared: each now says what is missing and, for
    the shared moments, how one gets there."""
    settings, data = org
    body = {"campaign": "energie-2026", "name": "Énergie 2026", "team": "team-a",
            "variants": [{"name": "Question"}]}
    with _client(settings) as c:
        hdr = _login(c, "sup-a", data)
        assert c.post("/api/campaigns", json=body, headers=hdr).status_code == 201
        campaign = c.get("/campaigns/energie-2026").text
        board = c.get("/teams/team-a").text

    def items(page: str, section: str) -> list[str]:
        part = page[page.index(section):]
        return re.findall(r"<li[^>]*>(.*?)</li>", part[:part.index("</section>")], re.S)

    assert items(campaign, 'id="campaign-agents"') == [
        "Aucun agent n&#39;est affecté à cette campagne."]
    assert items(board, 'id="shared"') == [
        "Aucun moment partagé : un moment signalé sur la page d&#39;un agent, « Partager avec "
        "l&#39;équipe » coché, apparaît ici."]


def test_an_auditor_never_sees_the_results_of_one_or_two_agents_through_a_comparison(
        org: Any) -> None:
    """agent-b1 alone made camp-b's calls: its comparison showed an auditor their own results
    (1 call, 1 meeting, 100 %) while /api/aggregates withholds means of fewer than 3 agents.
    A variant behind fewer than 3 agents is now withheld from a reader who may not see each of
    them (API and page); a third agent's calls bring the figures back; supervisors and admins,
    who see each agent anyway, get every figure."""
    from dashboard import schema

    settings, data = org
    call = data["team_b"]["calls"][0]
    with _client(settings) as c:
        hdr = _login(c, "sup-b", data)
        assert c.post(f"/api/calls/{call}/outcome", json={"outcome": "meeting"},
                      headers=hdr).status_code == 200
        own = c.get("/api/campaigns/camp-b/comparison").json()["variants"]
        assert [(v["calls"], v["rate"], v.get("withheld")) for v in own] == [(1, 1.0, None)]
    with _client(settings) as c:
        _login(c, "auditrice", data)
        (v,) = c.get("/api/campaigns/camp-b/comparison").json()["variants"]
        assert (v["calls"], v["outcomes"], v["rate"], v["ci_low"], v["ci_high"],
                v.get("agents"), v.get("withheld")) == \
            (None, None, None, None, None, 1, "too few agents")
        camp_a = c.get("/api/campaigns/camp-a/comparison").json()["variants"]
        assert [(v["agents"], v["rate"], v["withheld"]) for v in camp_a] == \
            [(2, None, "too few agents")] * 2  # agent-a1 and agent-a2: two people's results
        page = c.get("/campaigns/camp-b").text
    row = re.search(r'<tr class="variant"[^>]*>(.*?)</tr>', page, re.S)
    assert row and "Non montrée : moins de 3 agents derrière cette variante" in row.group(1)
    assert "100,0 %" not in page and "<circle" not in page
    now = time.time()
    db = store.open_db(settings.db_path)
    try:  # a third agent of camp-a's team makes calls with both variants
        schema.import_inventory(db, [{"box": "box-a3", "agent": "agent-a3", "team": "team-a"}],
                                site=settings.site)
        with db.conn:
            for variant in (1, 2):
                db.conn.execute(
                    "INSERT INTO calls (agent, box, start_ts, end_ts, campaign, variant, outcome) "
                    "VALUES ('agent-a3', 'box-a3', ?, ?, 'camp-a', ?, 'meeting')",
                    (now - 100, now - 10, variant))
    finally:
        db.conn.close()
    with _client(settings) as c:
        _login(c, "auditrice", data)
        camp_a = c.get("/api/campaigns/camp-a/comparison").json()["variants"]
        assert [(v["agents"], v["calls"], v["withheld"]) for v in camp_a] == \
            [(3, 31, None)] * 2
        assert "Non montrée" not in c.get("/campaigns/camp-a").text
    with _client(settings) as c:
        assert client_login(c, ADMIN_USER, ADMIN_PASSWORD).status_code == 303
        (v,) = c.get("/api/campaigns/camp-b/comparison").json()["variants"]
        assert (v["calls"], v["rate"], v["withheld"]) == (1, 1.0, None)


INVISIBLE_NAMES = ("\u200b", "\u2060\u2060", "\ufeff", " \u200b\u200c\u200d ", "\u3164", "\u00ad\t")
"""Names that show nothing: zero-width space, word joiner, byte-order mark, zero-width
(non-)joiners with spaces, the Hangul filler, a soft hyphen and a tab."""


def test_a_name_of_invisible_characters_only_is_refused_as_spaces_only_are(
        org_server: Any) -> None:
    """A name made only of zero-width or other invisible characters (U+200B, U+2060, U+FEFF...)
    passed the "not blank" check that spaces fail: a campaign, a variant (at creation or added)
    or a goal so named was saved and listed as a link or a badge without text. Each is refused
    now as a name of spaces is (422), over the real server; nothing saved."""
    import httpx

    from tests._fixtures_dashboard import http_login

    server, data = org_server
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        cookie = {"cookie": "__Host-miroir="
                            f"{http_login(c, 'sup-a', USER_PASSWORD, data['secrets']['sup-a'])}"}
        token = csrf_of(c.get("/campaigns", headers=cookie).text)
        api = {**cookie, "x-csrf-token": token}
        for i, name in enumerate(INVISIBLE_NAMES):
            r = c.post("/api/campaigns", headers=api,
                       json={"campaign": f"salon-{i}", "name": name, "team": "team-a"})
            assert r.status_code == 422, (name, r.text)
            r = c.post("/api/campaigns", headers=api,
                       json={"campaign": f"salon-v{i}", "name": "Salon", "team": "team-a",
                             "variants": [{"name": name}]})
            assert r.status_code == 422, (name, r.text)
            r = c.post("/campaigns", headers=cookie, data={
                "csrf": token, "campaign": f"salon-f{i}", "name": name, "team": "team-a",
                "variants": "Question | Comment ?"})
            assert r.status_code == 422 and "le nom et les variantes" in r.text, name
            r = c.post("/api/campaigns/camp-a/variants", headers=api, json={"name": name})
            assert r.status_code == 422, (name, r.text)
            r = c.post("/api/agents/agent-a1/goals", headers=api,
                       json={"metric": "near_speech_ratio", "label": name})
            assert r.status_code == 422, (name, r.text)
        db = store.open_db(server.settings.db_path)
        try:
            assert db.conn.execute("SELECT campaign FROM campaigns WHERE campaign LIKE 'salon-%'"
                                   ).fetchall() == []
            assert db.conn.execute("SELECT count(*) FROM variants WHERE campaign = 'camp-a'"
                                   ).fetchone()[0] == 2
            assert db.conn.execute("SELECT count(*) FROM goals WHERE agent = 'agent-a1'"
                                   ).fetchone()[0] == 0
            # the inventory's names: an agent or a seat so named goes by its id, as a blank one
            schema.import_inventory(db, [{"box": "box-z9", "agent": "agent-z9", "team": "team-a",
                                          "agent_name": "\u200b\u2060", "seat": "\ufeff "}],
                                    site=server.settings.site)
            assert db.conn.execute("SELECT name FROM agents WHERE agent = 'agent-z9'"
                                   ).fetchone()[0] == "agent-z9"
            assert db.conn.execute("SELECT label FROM seats WHERE box = 'box-z9'"
                                   ).fetchone()[0] == "box-z9"
        finally:
            db.conn.close()
    # what does show is kept as typed, invisible characters at its ends taken off
    assert schema.visible_name("\u200b Salon été\u0301 \ufeff") == "Salon été\u0301"
    assert schema.visible_name("\u0301") == ""  # a lone combining mark sits on nothing


def test_a_variant_without_a_name_is_told_so_not_that_its_name_is_taken(
        org: tuple[DashboardSettings, dict[str, Any]]) -> None:
    """A variant named with spaces (or characters that show nothing) only was refused as "une
    variante porte déjà ce nom" when added, and as "les variantes doivent avoir des noms
    différents" in a new campaign: neither was the reason. Both now say a variant needs a name
    (422), the form coming back as typed."""
    settings, data = org
    with _client(settings) as c:
        login_as(c, "sup-a", data)
        hdr = csrf_header(c)
        for name in ("   ", "\u200b"):
            r = c.post("/api/campaigns/camp-a/variants", json={"name": name}, headers=hdr)
            assert (r.status_code, r.json()) == (422, {"detail": "a variant needs a name"}), name
            r = c.post("/api/campaigns", headers=hdr, json={
                "campaign": "salon-x", "name": "Salon", "team": "team-a",
                "variants": [{"name": "Question"}, {"name": name}]})
            assert (r.status_code, r.json()) == (422, {"detail": "a variant needs a name"}), name
            r = c.post("/campaigns/camp-a/variants", headers={"accept": "text/html"},
                       data={"csrf": hdr["x-csrf-token"], "name": name})
            assert r.status_code == 422, name
            assert '<p class="error" id="variant-error" role="alert">Variante non ajoutée : une ' \
                'variante doit avoir un nom.</p>' in r.text


def test_a_figure_of_one_or_two_agents_read_by_a_supervisor_is_in_their_audit_log(
        org: Any) -> None:
    """docs/privacy.md: a figure of one or two agents is their own data, and each read of an
    agent's data by anyone else is an entry the agent sees. camp-b's comparison (agent-b1's calls
    alone) and team-b's means (agent-b1's alone) read by sup-b or an admin left nothing in
    agent-b1's log. Each such read is now one entry per agent behind the figure; read twice
    within 10 s it is one line of the agent's page; an auditor, who gets no figure, logs none."""
    settings, data = org
    call = data["team_b"]["calls"][0]
    with _client(settings) as c:
        hdr = _login(c, "sup-b", data)
        assert c.post(f"/api/calls/{call}/outcome", json={"outcome": "meeting"},
                      headers=hdr).status_code == 200
        (v,) = c.get("/api/campaigns/camp-b/comparison").json()["variants"]
        assert (v["calls"], v["rate"], v["agents"]) == (1, 1.0, 1)
        assert "100,0 %" in c.get("/campaigns/camp-b").text
        means = [a for a in c.get("/api/aggregates").json()["aggregates"] if a["mean"] is not None]
        assert means and {a["team"] for a in means} == {"team-b"}
    with _client(settings) as c:
        _login(c, "auditrice", data)
        assert c.get("/api/campaigns/camp-b/comparison").json()["variants"][0]["withheld"]
        c.get("/api/aggregates")
    db = store.open_db(settings.db_path)
    try:
        rows = db.conn.execute(
            "SELECT actor, agent, action, detail FROM audit_log WHERE action IN "
            "('read_variant_results', 'read_team_means') ORDER BY id").fetchall()
    finally:
        db.conn.close()
    assert rows == [("sup-b", "agent-b1", "read_variant_results", '{"campaign":"camp-b"}')] * 2 \
        + [("sup-b", "agent-b1", "read_team_means", '{"team":"team-b"}')]
    with _client(settings) as c:
        assert client_login(c, "bilal", USER_PASSWORD).status_code == 303
        page = c.get("/me").text
    lines = re.findall(r'<li class="audit-entry"[^>]*>(.*?)</li>', page, re.S)
    assert sum("a consulté les résultats d&#39;une variante de campagne, faits de vos appels"
               in line for line in lines) == 1
    assert sum("a consulté les moyennes de votre équipe" in line for line in lines) == 1


def _served_session(server: Any, user: str, password: str, secret: str | None = None,
                    page: str = "/campaigns") -> tuple[Any, dict[str, str], dict[str, str]]:
    """An ``httpx.Client`` on the real server logged in as ``user``: the client, its cookie
    header, and the cookie with the CSRF header (for a state change; read from ``page``)."""
    import httpx

    from tests._fixtures_dashboard import http_login

    c = httpx.Client(base_url=server.url, timeout=20.0)
    cookie = {"cookie": f"__Host-miroir={http_login(c, user, password, secret)}"}
    return c, cookie, {**cookie, "x-csrf-token": csrf_of(c.get(page, headers=cookie).text)}


def test_an_agent_of_another_team_is_not_put_on_a_teams_campaign(org_server: Any) -> None:
    """A campaign of team A is team A's: its supervisors run it and read its figures of their
    agents. An admin could put team B's agent-b1 on it (200): their calls were then tagged with
    it, counted in the admin's and the auditor's comparison (33 calls of "Question ouverte")
    but not in team A's supervisor's (30), while team B's supervisor, to whom the campaign
    answers 404, read its name on agent-b1's page and its id on the floor and changed the
    outcomes it counts. Over the real server, that is now refused (422, "cet agent n'est pas de
    l'équipe de la campagne" on the page), the assignment form lists the campaign's team's
    agents only, and a campaign of no team ("Toutes les équipes") still takes any agent."""
    from tests._fixtures_dashboard import ADMIN_PASSWORD

    server, data = org_server
    c, cookie, hdr = _served_session(server, ADMIN_USER, ADMIN_PASSWORD)
    try:
        r = c.post("/api/campaigns/camp-a/assign", headers=hdr,
                   json={"agent": "agent-b1", "variant": 1})
        assert (r.status_code, r.json()) == (422, {"detail": "the agent is not in the "
                                                             "campaign's team"})
        r = c.post("/campaigns/camp-a/assign", headers={**cookie, "accept": "text/html"},
                   data={"csrf": hdr["x-csrf-token"], "agent": "agent-b1", "variant": "1"})
        assert r.status_code == 422
        assert "cet agent n&#39;est pas de l&#39;équipe de la campagne" in r.text
        assert c.get("/api/agents/agent-b1", headers=cookie).json()["campaign"] == "camp-b"
        page = c.get("/campaigns/camp-a", headers=cookie).text
        form = page[page.index('id="assign-agent"'):page.index('id="close-campaign"')]
        assert sorted(re.findall(r'<option value="(agent-[^"]+)"', form)) == [
            "agent-a1", "agent-a2"]
        # within its team, as before; a campaign of all teams takes any agent
        assert c.post("/api/campaigns/camp-a/assign", headers=hdr,
                      json={"agent": "agent-a1", "variant": 2}).status_code == 200
        assert c.post("/api/campaigns", headers=hdr, json={
            "campaign": "tous", "name": "Tous", "variants": [{"name": "A"}]}).status_code == 201
        assert c.post("/api/campaigns/tous/assign", headers=hdr,
                      json={"agent": "agent-b1"}).status_code == 200
        page = c.get("/campaigns/tous", headers=cookie).text
        form = page[page.index('id="assign-agent"'):page.index('id="close-campaign"')]
        assert sorted(re.findall(r'<option value="(agent-[^"]+)"', form)) == [
            "agent-a1", "agent-a2", "agent-b1"]
    finally:
        c.close()
    c, cookie, _ = _served_session(server, "sup-b", USER_PASSWORD, data["secrets"]["sup-b"])
    try:
        assert "Salon Lyon" not in c.get("/agents/agent-b1", headers=cookie).text
    finally:
        c.close()


def test_the_outcomes_of_a_closed_campaigns_calls_are_frozen(org_server: Any) -> None:
    """A closed campaign's comparison stays (api.close_campaign: no new variant, assignment or
    tag; its page asks to confirm that it cannot be reopened), yet the outcome of each of its
    calls could still be changed or taken off: over the real server, after closing camp-a, its
    supervisor turned a meeting of "Question ouverte" into a refusal (200; 9 meetings became 8),
    and the agent who made the call could too. Now any such change is refused (409 "campaign is
    closed", on the page "la campagne est clôturée"), from the API and from the agent page's
    form, for every role; the agent page shows the call's outcome without a form, and the
    comparison and the call are unchanged. A call of no campaign or an open one is tagged as
    before."""
    server, data = org_server
    c, cookie, hdr = _served_session(server, "sup-a", USER_PASSWORD, data["secrets"]["sup-a"])
    try:
        def meetings() -> dict[str, int]:
            return {v["name"]: v["outcomes"]["meeting"] for v in c.get(
                "/api/campaigns/camp-a/comparison", headers=cookie).json()["variants"]}

        db = store.open_db(server.settings.db_path)
        try:
            call, agent = db.conn.execute(
                "SELECT id, agent FROM calls WHERE campaign = 'camp-a' AND variant = 1 AND "
                "outcome = 'meeting' AND agent = 'agent-a1' ORDER BY id LIMIT 1").fetchone()
        finally:
            db.conn.close()
        before = meetings()
        assert before == {"Question ouverte": 9, "Bénéfice direct": 3}
        assert c.post("/api/campaigns/camp-a/close", headers=hdr).status_code == 200
        for outcome in ("refusal", None):
            r = c.post(f"/api/calls/{call}/outcome", headers=hdr, json={"outcome": outcome})
            assert (r.status_code, r.json()) == (409, {"detail": "campaign is closed"}), outcome
        r = c.post(f"/calls/{call}/outcome", headers={**cookie, "accept": "text/html"},
                   data={"csrf": hdr["x-csrf-token"], "outcome": "refusal",
                         "next": f"/agents/{agent}"})
        assert r.status_code == 409 and "la campagne est clôturée" in r.text
        page = c.get(f"/agents/{agent}", headers=cookie).text
        row = page[page.index(f'id="call-{call}"'):]
        row = row[:row.index("</tr>")]
        assert f'action="/calls/{call}/outcome"' not in row and "Rendez-vous" in row
        assert meetings() == before
        assert c.get(f"/api/calls/{call}", headers=cookie).json()["outcome"] == "meeting"
        # a call of no campaign is tagged as before
        r = c.post("/api/calls", headers=hdr, json={"agent": agent, "start_ts": time.time()})
        new = r.json()["id"]
        assert c.post(f"/api/calls/{new}/outcome", headers=hdr,
                      json={"outcome": "callback"}).status_code == 200
    finally:
        c.close()
    from tests._fixtures_dashboard import ADMIN_PASSWORD

    for user, password, page in ((ADMIN_USER, ADMIN_PASSWORD, "/campaigns"),
                                 ("amina", USER_PASSWORD, "/me")):
        c, cookie, hdr = _served_session(server, user, password, page=page)
        try:
            r = c.post(f"/api/calls/{call}/outcome", headers=hdr, json={"outcome": "refusal"})
            assert (r.status_code, r.json()) == (409, {"detail": "campaign is closed"}), user
        finally:
            c.close()


def test_the_campaigns_page_lists_a_page_of_them_and_links_to_older_ones(
        org_server: Any) -> None:
    """/campaigns listed every campaign, closed ones too, as one strip of links, and read every
    campaign's variants, which it does not show: over the real server with 10,000 campaigns (20
    open) the page was 869 KiB of 10,002 links, answered in a median of 568 ms (2,000: 182 KiB,
    106 ms), and grew without bound. It now lists 50 a page, the open ones first (newest
    first), then the latest closed, with plain links to older and newer pages, and reads no
    variant: the oldest campaign is a few "Plus anciennes →" away, each page of the user's
    campaigns only."""
    from dashboard import access
    from dashboard.routes import pages
    from tests._fixtures_dashboard import ADMIN_PASSWORD

    server, data = org_server
    db = store.open_db(server.settings.db_path)
    try:
        with db.conn:
            start = time.time() - 130 * 86400
            for k in range(120):  # one closed every day, "old-000" first; teams alternate
                db.conn.execute(
                    "INSERT INTO campaigns (campaign, name, team, created_ts, closed_ts) VALUES "
                    "(?, ?, ?, ?, ?)", (f"old-{k:03d}", f"Ancienne {k:03d}",
                                        ("team-a", "team-b")[k % 2], start + 86400 * k,
                                        start + 86400 * k + 3600))
                db.conn.execute("INSERT INTO variants (campaign, name) VALUES (?, 'A'), (?, 'B')",
                                (f"old-{k:03d}", f"old-{k:03d}"))
        admin = access.load_user(db, ADMIN_USER)
        statements: list[str] = []
        db.conn.set_trace_callback(statements.append)
        try:
            listed = pages._campaigns_context(db, admin, None)["campaigns"]
        finally:
            db.conn.set_trace_callback(None)
        assert (len(listed), [s for s in statements if "variants" in s]) == (50, [])
    finally:
        db.conn.close()

    def walk(user: str, password: str, secret: str | None) -> list[list[str]]:
        """Each page's campaign links, following "Plus anciennes" from /campaigns to the end,
        then back once by "Plus récentes"."""
        c, cookie, _ = _served_session(server, user, password, secret)
        try:
            seen, url = [], "/campaigns"
            while True:
                page = c.get(url, headers=cookie)
                assert page.status_code == 200
                seen.append(re.findall(r'class="chip-link[^"]*" href="/campaigns/([^"]+)"',
                                       page.text))
                older = re.search(r'<a id="campaigns-older" href="([^"]+)"', page.text)
                if older is None:
                    break
                url = older.group(1)
            newer = re.search(r'<a id="campaigns-newer" href="([^"]+)"', page.text)
            assert newer is not None
            back = c.get(newer.group(1), headers=cookie).text
            assert re.findall(r'class="chip-link[^"]*" href="/campaigns/([^"]+)"',
                              back) == seen[-2]
            # past the last page: says so, and leads back to the last one
            page = c.get("/campaigns?page=9", headers=cookie)
            assert f"Aucune campagne à cette page ({sum(map(len, seen))} en tout)." in page.text
            assert f'<a id="campaigns-newer" href="/campaigns?page={len(seen)}">' in page.text
            assert c.get("/campaigns?page=0", headers=cookie).status_code == 422
            return seen
        finally:
            c.close()

    seen = walk(ADMIN_USER, ADMIN_PASSWORD, None)
    assert [len(p) for p in seen] == [50, 50, 22]
    assert seen[0][:3] == ["camp-a", "camp-b", "old-119"]  # open first, then the latest closed
    assert seen[-1][-1] == "old-000"
    assert [c for p in seen for c in p] == ["camp-a", "camp-b"] + [f"old-{k:03d}" for k in range(119, -1, -1)]
    seen = walk("sup-a", USER_PASSWORD, data["secrets"]["sup-a"])
    assert [len(p) for p in seen] == [50, 11]
    assert [c for p in seen for c in p] == ["camp-a"] + [f"old-{k:03d}" for k in range(118, -1, -2)]


def test_an_agent_moved_to_another_team_by_the_import_leaves_their_teams_campaign(
        org: Any, tmp_path: Path) -> None:
    """The other way an agent came to be on another team's campaign: site IT's import moved
    agent-a1 to team B (`miroir dashboard import`, the real command line) and they stayed on
    team A's camp-a, their next calls tagged with it for team B's supervisor, who may not open
    it. The import now takes them off it (campaign and variant), says so in the command's log and
    in their audit list, by whom; an agent moved to a team whose campaign they are on, or to none,
    or kept in their team, stays on it."""
    import os
    import subprocess
    import sys

    settings, _ = org
    db = store.open_db(settings.db_path)
    try:
        with db.conn:
            db.conn.execute("UPDATE agents SET variant = 1 WHERE agent = 'agent-a1'")
            db.conn.execute("INSERT INTO campaigns (campaign, name, created_ts) VALUES "
                            "('camp-all', 'Tous', 0)")
            db.conn.execute("UPDATE agents SET campaign = 'camp-all' WHERE agent = 'agent-b1'")
    finally:
        db.conn.close()
    inventory = tmp_path / "floor.csv"
    inventory.write_text("box,seat,agent,team\nbox-a1,A1,agent-a1,team-b\n"
                         "box-a2,A2,agent-a2,team-a\nbox-b1,B1,agent-b1,team-a\n")
    env = dict(os.environ, MIROIR_DASH_SITE=settings.site,
               MIROIR_DASH_DB_PATH=str(settings.db_path), SUDO_USER="tech")
    r = subprocess.run([sys.executable, "-m", "miroir", "dashboard", "import", str(inventory)],
                       env=env, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    db = store.open_db(settings.db_path)
    try:
        assert db.conn.execute("SELECT agent, team, campaign, variant FROM agents ORDER BY agent"
                               ).fetchall() == [("agent-a1", "team-b", None, None),
                                                ("agent-a2", "team-a", "camp-a", None),
                                                ("agent-b1", "team-a", "camp-all", None)]
        assert db.conn.execute("SELECT actor, actor_role, agent, detail FROM audit_log WHERE "
                               "action = 'campaign_leave'").fetchall() == [
            ("tech", "it", "agent-a1", '{"campaign":"camp-a"}')]
    finally:
        db.conn.close()
    assert "agent agent-a1 moved to another team: taken off campaign camp-a" in r.stderr
    with _client(settings) as c:
        assert client_login(c, "amina", USER_PASSWORD).status_code == 303
        assert "vous a changé d&#39;équipe, ce qui vous a retiré d&#39;une campagne de votre " \
            "ancienne équipe" in c.get("/me").text


def test_a_call_of_another_teams_agent_is_not_tagged_with_a_teams_campaign(
        org_server: Any) -> None:
    """Refusing to put team B's agent on team A's campaign left two other doors open to an
    admin: recording agent-b1's call with camp-a (201) and tagging agent-b1's call with one of
    camp-a's variants (200), either counted in camp-a's figures for admins and auditors and not
    for team A's supervisor. Over the real server both are refused now (422, "cet agent n'est
    pas de l'équipe de la campagne"), and the call keeps its campaign; an agent who was on
    another team's campaign before (an older release let it be) gets calls without it."""
    from tests._fixtures_dashboard import ADMIN_PASSWORD

    server, data = org_server
    b_call = data["team_b"]["calls"][0]
    c, cookie, hdr = _served_session(server, ADMIN_USER, ADMIN_PASSWORD)
    try:
        refused = (422, {"detail": "the agent is not in the campaign's team"})
        for body in ({"campaign": "camp-a"}, {"variant": 1}, {"campaign": "camp-a", "variant": 1}):
            r = c.post("/api/calls", headers=hdr,
                       json={"agent": "agent-b1", "start_ts": time.time(), **body})
            assert (r.status_code, r.json()) == refused, body
        r = c.post(f"/api/calls/{b_call}/variant", headers=hdr, json={"variant": 1})
        assert (r.status_code, r.json()) == refused
        assert c.get(f"/api/calls/{b_call}", headers=cookie).json()["campaign"] == "camp-b"
        # within the team, as before
        r = c.post("/api/calls", headers=hdr, json={"agent": "agent-a1", "start_ts": time.time(),
                                                   "variant": 2})
        assert r.status_code == 201
        db = store.open_db(server.settings.db_path)
        try:
            with db.conn:  # as an older release could leave it
                db.conn.execute("UPDATE agents SET campaign = 'camp-a', variant = 1 "
                                "WHERE agent = 'agent-b1'")
        finally:
            db.conn.close()
        r = c.post("/api/calls", headers=hdr, json={"agent": "agent-b1", "start_ts": time.time()})
        assert r.status_code == 201
        made = c.get(f"/api/calls/{r.json()['id']}", headers=cookie).json()
        assert (made["campaign"], made["variant"]) == (None, None)
    finally:
        c.close()


def test_the_campaigns_api_pages_them_by_id_with_their_variants(org_server: Any) -> None:
    """GET /api/campaigns answered every campaign with all its variants, one query of each's
    variants and one of its own: over the real server with 10,000 campaigns of 2 variants it was
    2,459 KiB (admin) and 1,230 KiB (a supervisor of one of two teams), in a median of 307 and
    209 ms, and grew without bound. It now pages them in the order it always gave (by id),
    ``limit`` a page (100 unless asked), from the id after ``after``: ``more`` and
    ``next_after`` lead to the next page, ``total`` says how many the user may see; each page
    reads its campaigns' variants in one query. Walking it gives each campaign once, with its
    variants, the user's only."""
    from dashboard import access
    from dashboard.routes import api
    from tests._fixtures_dashboard import ADMIN_PASSWORD

    server, data = org_server
    db = store.open_db(server.settings.db_path)
    try:
        with db.conn:
            for k in range(120):  # teams alternate; one variant more every 3rd campaign
                db.conn.execute(
                    "INSERT INTO campaigns (campaign, name, team, created_ts, closed_ts) VALUES "
                    "(?, ?, ?, ?, ?)", (f"old-{k:03d}", f"Ancienne {k:03d}",
                                        ("team-a", "team-b")[k % 2], 1.7e9 + k, 1.7e9 + k + 1))
                db.conn.executemany("INSERT INTO variants (campaign, name, text) VALUES (?, ?, ?)",
                                    [(f"old-{k:03d}", name, f"{name} {k}")
                                     for name in ("A", "B", "C")[:2 + (k % 3 == 0)]])
        admin = access.load_user(db, ADMIN_USER)
        statements: list[str] = []
        db.conn.set_trace_callback(statements.append)
        try:
            first = api.list_campaigns(db, admin, limit=50)
        finally:
            db.conn.set_trace_callback(None)
        assert len(first["campaigns"]) == 50
        assert len([s for s in statements if "FROM variants" in s]) == 1
        assert len([s for s in statements if "FROM campaigns" in s]) == 2  # the page, the total
        expected = {c["campaign"]: c for c in db.query("SELECT * FROM campaigns")}
        for c in expected.values():
            c["variants"] = list(db.query("SELECT id, name, text FROM variants WHERE campaign = ? "
                                          "ORDER BY id", [c["campaign"]]))
    finally:
        db.conn.close()

    def walk(user: str, password: str, secret: str | None, limit: int) -> list[dict[str, Any]]:
        """Every campaign the API gives ``user``, ``limit`` a page, following ``next_after``."""
        c, cookie, _ = _served_session(server, user, password, secret)
        try:
            got: list[dict[str, Any]] = []
            url = f"/api/campaigns?limit={limit}"
            while True:
                r = c.get(url, headers=cookie)
                assert r.status_code == 200, r.text
                body = r.json()
                assert len(body["campaigns"]) <= limit
                got += body["campaigns"]
                if not body["more"]:
                    assert body["next_after"] is None
                    break
                assert body["next_after"] == body["campaigns"][-1]["campaign"]
                url = f"/api/campaigns?limit={limit}&after={body['next_after']}"
            assert body["total"] == len(got)
            default = c.get("/api/campaigns", headers=cookie).json()
            assert default["campaigns"] == got[:100] and default["more"] == (len(got) > 100)
            for bad in ("limit=0", "limit=501", "limit=1_0", "after=" + "x" * 65):
                assert c.get(f"/api/campaigns?{bad}", headers=cookie).status_code == 422, bad
            return got
        finally:
            c.close()

    got = walk(ADMIN_USER, ADMIN_PASSWORD, None, 50)
    assert [c["campaign"] for c in got] == sorted(expected)  # 122, each once, by id
    assert got == [expected[c["campaign"]] for c in got]  # every field, with its variants
    got = walk("sup-a", USER_PASSWORD, data["secrets"]["sup-a"], 7)
    assert [c["campaign"] for c in got] == sorted(
        k for k, c in expected.items() if c["team"] in (None, "team-a"))


def _closed_campaigns(settings: DashboardSettings, count: int) -> None:
    """``count`` closed campaigns, ``old-000`` the oldest, one closed a day; teams alternate."""
    db = store.open_db(settings.db_path)
    try:
        with db.conn:
            start = time.time() - (count + 10) * 86400
            for k in range(count):
                db.conn.execute(
                    "INSERT INTO campaigns (campaign, name, team, created_ts, closed_ts) VALUES "
                    "(?, ?, ?, ?, ?)", (f"old-{k:03d}", f"Ancienne {k:03d}",
                                        ("team-a", "team-b")[k % 2], start + 86400 * k,
                                        start + 86400 * k + 3600))
    finally:
        db.conn.close()


def test_a_campaigns_page_lists_it_with_the_page_of_the_list_where_it_stands(
        org_server: Any) -> None:
    """A campaign's page showed page 1 of the campaign list above it: an old one, opened from
    page 3 of /campaigns, was not in the list shown with it (over the real server, 122
    campaigns: old-000's page listed camp-a to old-072). It now shows the page of the list where
    the campaign stands, the campaign marked as the one shown, with the same range and links to
    newer and older pages as that page of /campaigns; each user's own list."""
    from tests._fixtures_dashboard import ADMIN_PASSWORD

    server, data = org_server
    _closed_campaigns(server.settings, 120)

    def strip(html: str) -> str:
        """The campaign list and its pager, the shown campaign's mark taken off."""
        listed = re.search(r'<nav class="toolbar">.*?</nav>(\s*<p class="campaign-pages">.*?</p>)?',
                           html, re.S)
        assert listed is not None
        return listed.group(0).replace(' aria-current="page"', "")

    for user, password, shown in ((ADMIN_USER, ADMIN_PASSWORD,
                                    {"old-000": 3, "old-021": 3, "old-022": 2, "old-071": 2,
                                    "old-072": 1, "camp-b": 1}),
                                  ("sup-a", USER_PASSWORD, {"old-000": 2, "old-020": 2,
                                                            "old-022": 1, "camp-a": 1})):
        c, cookie, _ = _served_session(server, user, password,
                                       data["secrets"].get(user))
        try:
            for campaign, page in shown.items():
                html = c.get(f"/campaigns/{campaign}", headers=cookie).text
                assert f'href="/campaigns/{campaign}"' in strip(html), (user, campaign)
                assert (f'href="/campaigns/{campaign}" aria-current="page"' in html,
                        html.count('aria-current="page"')) == (True, 1), (user, campaign)
                listing = c.get(f"/campaigns?page={page}" if page > 1 else "/campaigns",
                                headers=cookie).text
                assert strip(html) == strip(listing), (user, campaign, page)
        finally:
            c.close()


def test_the_language_switch_keeps_the_campaigns_page_it_is_on(org_server: Any) -> None:
    """The language switch goes back to the page it is on with its pagings
    (deps.PAGE_PARAMS), which did not name the campaigns page's ``page``: over the real server,
    switching to English on /campaigns?page=3 led back to /campaigns, page 1 (its form's
    ``next`` said "/campaigns"). It now comes back to page 3, in English."""
    from tests._fixtures_dashboard import ADMIN_PASSWORD

    server, _ = org_server
    _closed_campaigns(server.settings, 120)
    c, cookie, _ = _served_session(server, ADMIN_USER, ADMIN_PASSWORD)
    try:
        html = c.get("/campaigns?page=3", headers=cookie).text
        assert '<input type="hidden" name="next" value="/campaigns?page=3">' in html
        r = c.post("/lang", headers=cookie,
                   data={"csrf": csrf_of(html), "next": "/campaigns?page=3", "lang": "en"})
        assert (r.status_code, r.headers["location"]) == (303, "/campaigns?page=3")
        back = c.get(r.headers["location"], headers=cookie).text
        assert '<html lang="en">' in back and 'href="/campaigns/old-000"' in back
        assert 'id="campaigns-older"' not in back and "← Newer</a>" in back
    finally:
        c.close()


def test_an_agent_an_older_release_left_on_another_teams_campaign_is_taken_off_it(
        tmp_path: Path) -> None:
    """The release before today's let an admin put team B's agent-b1 on team A's camp-a (200,
    stored on the agent). Today's refuses that, and tags none of their new calls with it, but a
    dashboard upgraded with such an agent kept them on it: over the real server, team B's
    supervisor, to whom camp-a answers 404, still read its id in agent-b1's record
    (/api/agents/agent-b1) and in the floor's campaign filter. The upgrade (migration 13) takes such an
    agent off it, campaign and variant, as the import does for an agent moved to another team;
    an agent on their own team's campaign, or on one of no team, stays."""
    from tests._fixtures_dashboard import DashboardServer

    settings = make_settings(tmp_path)
    data = seed_org(settings, seconds=30)
    db = store.open_db(settings.db_path)
    with db.conn:  # the older release's database: its assignment, before this migration
        db.conn.execute("DELETE FROM schema_version WHERE version > 12")
        db.conn.execute("UPDATE agents SET campaign = 'camp-a', variant = 1 "
                        "WHERE agent = 'agent-b1'")
        db.conn.execute("INSERT INTO campaigns (campaign, name, team, created_ts) "
                        "VALUES ('tous', 'Tous', NULL, 0)")
        db.conn.execute("UPDATE agents SET campaign = 'tous' WHERE agent = 'agent-a2'")
    db.conn.close()
    with DashboardServer(settings, start_ingest=False) as server:
        c, cookie, _ = _served_session(server, "sup-b", USER_PASSWORD, data["secrets"]["sup-b"])
        try:
            assert "Salon Lyon" not in c.get("/agents/agent-b1", headers=cookie).text
            assert c.get("/api/agents/agent-b1", headers=cookie).json()["campaign"] is None
            assert "camp-a" not in c.get("/api/floor", headers=cookie).json()["campaigns"]
        finally:
            c.close()
    db = store.open_db(settings.db_path)
    agents = {a: (c, v) for a, c, v in db.conn.execute(
        "SELECT agent, campaign, variant FROM agents ORDER BY agent")}
    db.conn.close()
    assert agents["agent-b1"] == (None, None)
    assert agents["agent-a2"] == ("tous", None)  # a campaign of no team takes any agent
    assert agents["agent-a1"] == ("camp-a", None)
