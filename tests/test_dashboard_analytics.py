"""Analytics against a hand computation from the SQLite rows: daily means across the purge."""

from __future__ import annotations

import calendar

import pytest

from dashboard import analytics, retention, schema
from dashboard import db as store
from dashboard.settings import DashboardSettings
from miroir import wire

DAY0 = calendar.timegm((2026, 3, 2, 0, 0, 0))
"""A UTC midnight: the day whose rows the tests spread over two hours."""


def _day_of_two_stretches(settings: DashboardSettings) -> store.sqlite_utils.Database:
    """One agent's day: 30 s at 09:00 UTC speaking 20 % of the time, 30 s at 10:00 at 80 %."""
    db = store.open_db(settings.db_path)
    schema.ensure_schema(db)
    schema.import_inventory(db, [{"box": "box-a1", "seat": "A1", "agent": "agent-a1",
                                  "team": "team-a"}], site=settings.site, now=DAY0 - 3600)
    seq = 0
    for hour, ratio in ((9, 0.2), (10, 0.8)):
        for k in range(30):
            seq += 1
            body = {"v": wire.SCHEMA_VERSION, "site": settings.site, "box": "box-a1", "seq": seq,
                    "ts": DAY0 + hour * 3600 + k, "window_s": 1.0, "near_speech_ratio": ratio,
                    "talk_state": "agent"}
            store.insert_metrics(db, wire.decode("metrics", wire.encode("metrics", body)),
                                 body["ts"])
    return db


def _purge_at(db: store.sqlite_utils.Database, hour: float) -> None:
    """The hourly purge, 30 days after DAY0, at ``hour`` UTC."""
    retention.purge(db, metrics_days=30, aggregates_days=365, audit_days=365,
                    now=DAY0 + 30 * 86400 + hour * 3600)


def test_the_hourly_purge_keeps_the_whole_days_mean(dash_settings: DashboardSettings) -> None:
    """Each hourly purge rolls up the rows it deletes; the day's stored mean is every row's."""
    db = _day_of_two_stretches(dash_settings)
    hand = db.conn.execute("SELECT avg(near_speech_ratio), count(*) FROM metrics").fetchone()
    assert hand == (pytest.approx(0.5), 60)
    _purge_at(db, 9.5)   # rolls up and deletes the 09:00 stretch
    _purge_at(db, 10.5)  # then the 10:00 one
    assert db["metrics"].count == 0
    mean, n = db.conn.execute("SELECT mean, n FROM daily_aggregates WHERE agent = 'agent-a1' "
                              "AND metric = 'near_speech_ratio'").fetchone()
    assert (mean, n) == (pytest.approx(0.5), 60)
    assert analytics.daily_means(db, "agent-a1", "near_speech_ratio", 60,
                                 now=DAY0 + 31 * 86400) == [("2026-03-02", pytest.approx(0.5))]


def test_a_day_purged_in_part_reads_all_its_rows(dash_settings: DashboardSettings) -> None:
    """Between two purges a day lies half in its rolled-up mean, half in per-second rows: the
    day's mean (goals, team board) is both halves', weighted by their rows."""
    db = _day_of_two_stretches(dash_settings)
    _purge_at(db, 9.5)
    assert db["metrics"].count == 30
    assert analytics.daily_means(db, "agent-a1", "near_speech_ratio", 60,
                                 now=DAY0 + 30 * 86400 + 9.5 * 3600) == \
        [("2026-03-02", pytest.approx(0.5))]


def test_the_team_aggregate_keeps_the_recent_days_once_old_ones_are_rolled_up(
        dash_settings: DashboardSettings) -> None:
    """The per-team mean over agents and days (the audit page, /api/aggregates) reads the
    rolled-up days and the days still stored per second alike, before and after a purge."""
    from dashboard import access
    from dashboard.routes import api

    db = _day_of_two_stretches(dash_settings)  # 2026-03-02: 0.2 at 09:00, 0.8 at 10:00
    with db.conn:  # the day after: 0.8 all along
        db.conn.execute("UPDATE metrics SET ts = ts + 86400 WHERE near_speech_ratio > 0.5")
    admin = access.User("admin", "admin", None, frozenset())

    def team_mean() -> float:
        return next(a["mean"] for a in api.aggregates(db, admin)
                    if (a["team"], a["metric"]) == ("team-a", "near_speech_ratio"))

    assert team_mean() == pytest.approx(0.5)  # the two days' means, 0.2 and 0.8
    _purge_at(db, 12)  # the first day is rolled up, the second still stored per second
    assert db["metrics"].count == 30
    assert team_mean() == pytest.approx(0.5)
