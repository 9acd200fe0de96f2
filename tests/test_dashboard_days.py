"""Where the dashboard's day begins: an evening shift past midnight is one day of an agent's
goals and of the team board's progress, through the real app and real SQLite, before and after
the purge rolls its rows up."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from dashboard import auth, retention, schema
from dashboard import db as store
from miroir import wire
from tests._fixtures_dashboard import ADMIN_PASSWORD, ADMIN_USER, client, client_login, make_settings

SHIFT_S = 8 * 3600
LAST_HOUR_RATIO, RATIO = 0.65, 0.50
"""Every shift alike: the agent talks 50 % of the time, 65 % in the shift's last hour."""


def _evening_shifts(settings: Any, now: float) -> list[float]:
    """Three shifts 18:00-02:00 in Casablanca (17:00-01:00 UTC), ended 1 to 3 days before ``now``,
    one row every 10 s, and a goal on the agent's speech share; returns the shifts' starts."""
    midnight = now - now % 86400
    starts = [midnight - d * 86400 - 7 * 3600 for d in (3, 2, 1)]
    db = store.open_db(settings.db_path)
    try:
        schema.ensure_schema(db)
        auth.ensure_admin(db, settings.admin_user, settings.admin_password_file)
        schema.import_inventory(db, [{"box": "box-a", "seat": "A", "agent": "agent-a",
                                      "team": "team-a"}], site=settings.site, now=starts[0] - 60)
        seq = 0
        for start in starts:
            items = []
            for k in range(0, SHIFT_S, 10):
                seq += 1
                body = {"v": wire.SCHEMA_VERSION, "site": settings.site, "box": "box-a",
                        "ts": start + k, "seq": seq, "t_start": float(k), "window_s": 1.0,
                        "near_speech_ratio": LAST_HOUR_RATIO if k >= SHIFT_S - 3600 else RATIO,
                        "talk_state": "agent"}
                items.append(("metrics", wire.decode("metrics", wire.encode("metrics", body))))
            store.store_batch(db, items, now)
        with db.conn:
            db.conn.execute("INSERT INTO goals (agent, metric, label, direction, author, "
                            "created_ts) VALUES ('agent-a', 'near_speech_ratio', 'laisser parler', "
                            "'down', 'admin', ?)", (now,))
    finally:
        db.conn.close()
    return starts


def test_an_evening_shift_past_midnight_utc_is_one_day_of_the_goals_and_the_board(
        tmp_path: Path) -> None:
    """Three alike shifts 18:00-02:00 in Morocco, with the day starting at 05:00 UTC (06:00
    there): the goal reads three days of the shift's mean and the board no change. With days
    cut at midnight UTC (01:00 there) the same shifts read four "days", the last one the shift's
    last hour, and the board said -27 % for an agent who did the same three times."""
    settings = make_settings(tmp_path, day_start_utc_h=5)
    now = time.time()
    starts = _evening_shifts(settings, now)
    shift_mean = (7 * RATIO + LAST_HOUR_RATIO) / 8
    days = [time.strftime("%Y-%m-%d", time.gmtime(s)) for s in starts]
    with client(settings) as c:
        client_login(c, ADMIN_USER, ADMIN_PASSWORD)
        series = c.get("/api/agents/agent-a/goals").json()["goals"][0]["series"]
        assert [(d, pytest.approx(v)) for d, v in series] == [(d, shift_mean) for d in days]
        goal = c.get("/api/teams/team-a/board").json()["agents"][0]["goals"][0]
        assert goal["days"] == 3 and goal["progress"] == pytest.approx(0.0)
    # the purge rolls the same days up, cut at the same hour
    db = store.open_db(settings.db_path)
    try:
        retention.purge_with(db, settings, now=now + settings.retention_metrics_days * 86400)
        assert db["metrics"].count == 0
        rolled = db.conn.execute("SELECT day, mean FROM daily_aggregates WHERE agent = 'agent-a' "
                                 "ORDER BY day").fetchall()
    finally:
        db.conn.close()
    assert [(d, pytest.approx(v)) for d, v in rolled] == [(d, shift_mean) for d in days]
