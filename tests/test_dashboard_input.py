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
