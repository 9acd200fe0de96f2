"""Analytics against a hand computation from the SQLite rows: daily means across the purge."""

from __future__ import annotations

import calendar
import time

import pytest

from dashboard import analytics, retention, schema
from dashboard import db as store
from dashboard.settings import DashboardSettings
from miroir import wire
from tests._fixtures_dashboard import query_plans

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


def _three_days_of_two_agents(settings: DashboardSettings, now: float) -> store.sqlite_utils.Database:
    """Team A: agent-a1 at box-a1, agent-a2 at box-a2 until she moves to box-a3 on the second
    day; a minute of rows at 09:00 and at 15:00 UTC on each of three days, a float and an
    integer metric (the integer read as 0 by SQLite's integer division once), each row ingested
    as it was sent."""
    db = store.open_db(settings.db_path)
    schema.ensure_schema(db)
    day0 = now - now % 86400 - 3 * 86400
    schema.import_inventory(db, [{"box": "box-a1", "agent": "agent-a1", "team": "team-a"},
                                 {"box": "box-a2", "agent": "agent-a2", "team": "team-a"}],
                            site=settings.site, now=day0)
    schema.import_inventory(db, [{"box": "box-a3", "agent": "agent-a2", "team": "team-a"}],
                            site=settings.site, now=day0 + 86400 + 12 * 3600)
    seq = 0
    for day in range(3):
        for hour in (9, 15):
            for box, level in (("box-a1", 0.2), ("box-a2", 0.5), ("box-a3", 0.7)):
                for k in range(60):
                    seq += 1
                    ts = day0 + day * 86400 + hour * 3600 + k
                    body = {"v": wire.SCHEMA_VERSION, "site": settings.site, "box": box,
                            "seq": seq, "ts": ts, "window_s": 1.0,
                            "near_speech_ratio": round(level + 0.01 * (k % 7) + 0.1 * day, 3),
                            "overlaps_agent_60s": (k + hour + day) % 3, "talk_state": "agent"}
                    store.insert_metrics(db, wire.decode("metrics", wire.encode("metrics", body)),
                                         ts + 0.2)
    return db


def _hand_team_mean(db: store.sqlite_utils.Database, metric: str) -> float:
    """The team's mean as the README defines it, from the per-second rows: each agent-day's
    mean of its rows, then the mean of those."""
    days: dict[tuple[str, str], list[float]] = {}
    for agent, ts, value in db.conn.execute(
            f"SELECT h.agent, m.ts, m.{metric} FROM metrics m JOIN seat_history h ON "
            "h.box = m.box AND m.ts >= h.from_ts AND (h.to_ts IS NULL OR m.ts < h.to_ts)"):
        days.setdefault((agent, analytics._day(ts)), []).append(value)
    means = [sum(v) / len(v) for v in days.values()]
    return sum(means) / len(means)


def test_the_team_means_and_goals_read_the_stored_daily_means_not_months_of_rows(
        dash_settings: DashboardSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit page's team means (api.aggregates) and a goal's daily series read every
    per-second row of the retention period on every view: 34 to 126 s on a month of 7 boxes
    (53 s for the audit page on a copy of it, 2.6 s for a team board of 6 goals). The hourly
    purge now rolls every row ingested up to a minute ago into the daily means, and the pages
    read those and the rows ingested since each box's mark, by (box, arrival): the same
    numbers as from every row before the roll-up, after it, and with a row that arrived late
    for a day already rolled up. Fails before the fix: the team means read every row by (box,
    time) and the goals read 14 days of them."""
    from dashboard import access
    from dashboard.routes import api

    monkeypatch.setattr(analytics, "ROLL_UP_SETTLE_S", 0.0, raising=False)  # rolled up at once
    now = time.time()
    db = _three_days_of_two_agents(dash_settings, now)
    admin = access.User("admin", "admin", None, frozenset())
    metrics = ("near_speech_ratio", "overlaps_agent_60s")

    def means() -> dict[str, tuple[float, int]]:
        return {a["metric"]: (a["mean"], a["agents"]) for a in api.aggregates(db, admin)
                if a["team"] == "team-a" and a["metric"] in metrics}

    def series() -> list[tuple[str, float]]:
        return analytics.daily_means(db, "agent-a2", "near_speech_ratio", 14)

    before, series_before = means(), series()
    assert before == {m: (pytest.approx(_hand_team_mean(db, m), rel=1e-12), 2) for m in metrics}
    assert before["overlaps_agent_60s"][0] == pytest.approx(1.0, abs=0.05)  # no integer division
    retention.purge(db, metrics_days=30, aggregates_days=365, audit_days=365)  # the hourly job
    assert db["metrics"].count == 3 * 2 * 3 * 60  # kept: the roll-up deletes nothing
    assert means() == {m: (pytest.approx(v, rel=1e-12), n) for m, (v, n) in before.items()}
    assert series() == [(d, pytest.approx(v, rel=1e-12)) for d, v in series_before]
    plans = query_plans(db, lambda: (means(), series()), (" metrics m ",))
    assert len(plans) == 2
    for plan in plans.values():
        rows = [p for p in plan if p.startswith(("SEARCH m ", "SCAN m"))]
        assert rows == ["SEARCH m USING INDEX metrics_box_ingested (box=? AND ingested_ts>?)"], plan
    # A row sent on the first day arrives now (a box's outbox after an outage): counted at once,
    # then rolled into its own day by the next purge, once.
    ts = now - now % 86400 - 3 * 86400 + 12 * 3600
    late = {"v": wire.SCHEMA_VERSION, "site": dash_settings.site, "box": "box-a1", "seq": 9999,
            "ts": ts, "window_s": 1.0, "near_speech_ratio": 0.9, "overlaps_agent_60s": 9,
            "talk_state": "agent"}
    store.insert_metrics(db, wire.decode("metrics", wire.encode("metrics", late)), time.time())
    hand = {m: (pytest.approx(_hand_team_mean(db, m), rel=1e-12), 2) for m in metrics}
    assert means() == hand and means() != before
    retention.purge(db, metrics_days=30, aggregates_days=365, audit_days=365)
    assert means() == hand
    assert db.conn.execute("SELECT n FROM daily_aggregates WHERE agent = 'agent-a1' AND day = ? "
                           "AND metric = 'overlaps_agent_60s'", (analytics._day(ts),)
                           ).fetchone() == (121,)


