"""The agent's own page: their private switch when they sit at no seat, and what site IT's seat
changes leave in the log of who looked at or changed their data."""

from __future__ import annotations

from typing import Any

from dashboard import db as store
from dashboard import schema
from dashboard.settings import DashboardSettings
from tests._fixtures_dashboard import client, csrf_header, csrf_of, login_as


def test_an_agent_with_no_seat_is_told_so_not_that_the_box_could_not_be_reached(
        org: tuple[DashboardSettings, dict[str, Any]]) -> None:
    """Amina, given no seat, pressed the private switch: her page said "Votre boîtier n'a pas pu
    être joint : utilisez son bouton", a box she does not have. It says she has no seat (the
    API: ``unsent`` ``no_seat``); nothing is claimed private."""
    settings, data = org
    db = store.open_db(settings.db_path)
    try:
        with db.conn:
            schema.assign_seat(db, "box-a1", None)
    finally:
        db.conn.close()
    with client(settings) as c:
        login_as(c, "amina", data)
        r = c.post("/me/private", data={"private": "1", "csrf": csrf_of(c.get("/me").text)})
        assert r.status_code == 303 and r.headers["location"] == "/me?sent=noseat#private"
        page = c.get(r.headers["location"]).text
        assert 'id="private-no-seat"' in page and "Aucun poste ne vous est attribué" in page
        assert 'id="private-unsent"' not in page and 'id="private-state"' not in page
        r = c.post("/api/me/private", json={"private": True}, headers=csrf_header(c))
        assert r.json() == {"private": True, "sent": False, "unsent": "no_seat"}

