"""The dashboard's queries at a site's scale: what SQLite reads for each page (EXPLAIN QUERY PLAN).

Timings belong to benchmarks; what a test can hold is the plan: a query over months of rows must
not read every row of a box to find one window of them.
"""

from __future__ import annotations

import time
from itertools import pairwise

import pytest

from dashboard import analytics, registry, retention, schema
from dashboard import db as store
from dashboard.settings import DashboardSettings
from miroir import wire
from tests._fixtures_dashboard import query_plans

DAY_S = 86400.0


def _two_days_of_one_box(settings: DashboardSettings) -> store.sqlite_utils.Database:
    """One agent at one box, a minute of metrics and a cue on each of two days."""
    db = store.open_db(settings.db_path)
    schema.ensure_schema(db)
    now = float(int(time.time()))  # whole seconds: traced statements print 15 digits of a time
    schema.import_inventory(db, [{"box": "box-a1", "seat": "A1", "agent": "agent-a1",
                                  "team": "team-a"}], site=settings.site, now=now - 3 * DAY_S)
    seq = 0
    for day in (2, 1):
        for k in range(60):
            seq += 1
            body = {"v": wire.SCHEMA_VERSION, "site": settings.site, "box": "box-a1", "seq": seq,
                    "ts": now - day * DAY_S + k, "window_s": 1.0, "near_speech_ratio": 0.5,
                    "overlaps_agent_60s": k % 2, "talk_state": "agent"}
            store.insert_metrics(db, wire.decode("metrics", wire.encode("metrics", body)), now)
        seq += 1
        cue = {"v": wire.SCHEMA_VERSION, "site": settings.site, "box": "box-a1", "seq": seq,
               "ts": now - day * DAY_S + 30, "name": "cue_on", "channel": "near",
               "t_audio_s": 30.0, "cue": "too_fast", "severity": "medium"}
        store.insert_event(db, wire.decode("event", wire.encode("event", cue)), now)
    return db


def test_an_agents_window_of_rows_is_found_by_box_and_time_not_by_reading_the_box(
        dash_settings: DashboardSettings) -> None:
    """The agent page's charts, cues and goals, the exports and the purge's roll-up read the
    rows of the agent's seat windows in the time asked: by (box, ts), or by (box, arrival) for
    the rows the daily means do not hold yet (goals, roll-up), never every row the box ever sent
    (a month is 600,000 rows a box: 28 s for a month's chart on a 7-box copy, 10 s per metric
    for the hourly roll-up, with nothing to roll up)."""
    db = _two_days_of_one_box(dash_settings)
    now = time.time()
    reads = {
        "charts": lambda: analytics.agent_metrics(db, "agent-a1", now - DAY_S),
        "cues": lambda: analytics.agent_events(db, "agent-a1", now - DAY_S),
        "goal series": lambda: analytics.daily_means(db, "agent-a1", "near_speech_ratio", 14),
        "export": lambda: list(analytics.iter_agent_metrics(db, "agent-a1", now - DAY_S)),
        "roll-up": lambda: analytics.roll_up(db, now - 1.5 * DAY_S),
        "export of events": lambda: list(analytics.iter_agent_events(db, "agent-a1", now - DAY_S,
                                                                    cues_only=False)),
    }
    for what, run in reads.items():
        plans = query_plans(db, run)
        assert plans, f"{what}: no read of metrics or events seen"
        for sql, plan in plans.items():
            table = [p for p in plan if p.startswith(("SEARCH m ", "SCAN m", "SEARCH e ",
                                                      "SCAN e"))]
            assert table and all("_box_ts (box=? AND ts" in p or "_box_ingested (box=? AND "
                                 "ingested_ts" in p for p in table), (what, sql, plan)
    db.conn.rollback()
    assert analytics.agent_metrics(db, "agent-a1", now - DAY_S)[0]["ts"] > now - DAY_S
    assert [c["name"] for c in analytics.agent_events(db, "agent-a1", now - 3 * DAY_S)] == \
        ["too_fast", "too_fast"]


def test_the_purge_deletes_the_old_rows_it_rolled_up(dash_settings: DashboardSettings) -> None:
    """With the new index, the purge still rolls up and deletes exactly the rows past the limit."""
    db = _two_days_of_one_box(dash_settings)
    deleted = retention.purge(db, metrics_days=1.5, aggregates_days=365, audit_days=365)
    assert (deleted["metrics"], deleted["events"]) == (60, 1)
    assert db.conn.execute("SELECT n FROM daily_aggregates WHERE metric = 'near_speech_ratio'"
                           ).fetchone() == (60,)


def test_the_audit_pages_team_means_read_the_teams_rows_once(
        dash_settings: DashboardSettings) -> None:
    """The audit page's per-team means (api.aggregates) read the team's per-second rows once for
    every metric together, not once a metric: each read goes through every row the team's boxes
    sent in the retention period (the page took 766 s on a 7-box month, 38 metrics x 2 teams);
    and the mean of a metric the boxes send as an integer is not rounded down to one."""
    from dashboard import access
    from dashboard.routes import api

    db = _two_days_of_one_box(dash_settings)
    admin = access.User("admin", "admin", None, frozenset())
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    try:
        means = api.aggregates(db, admin)
    finally:
        db.conn.set_trace_callback(None)
    reads = [s for s in statements if " metrics m " in s]
    assert len(reads) == 1, len(reads)
    by_metric = {(a["team"], a["metric"]): (a["mean"], a["agents"]) for a in means}
    assert by_metric[("team-a", "near_speech_ratio")] == (0.5, 1)
    # an integer metric's mean is no integer division (SQLite's sum / count read 0 here)
    assert by_metric[("team-a", "overlaps_agent_60s")] == (0.5, 1)
    # every metric whose daily mean means something (no instant, no running total)
    assert len(means) == len([n for n in analytics.metric_names(db)
                              if registry.daily_mean_meaningful(n)]) == 36


def test_the_purge_rolls_up_and_deletes_in_batches_each_its_own_transaction(
        dash_settings: DashboardSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hourly purge holds SQLite's write lock for one batch of rows at a time: a day of 7
    boxes (201,600 rows, an hour of a 60-box site) took 26 s in one transaction, the boxes'
    rows waited up to 25 s and three agent pages answered 500 (their session or audit write
    gave up after the 5 s busy timeout). Each batch is rolled up with the rows it deletes, so
    the day's mean stays every row's."""
    monkeypatch.setattr(retention, "PURGE_BATCH_ROWS", 25, raising=False)
    monkeypatch.setattr(retention, "PURGE_PAUSE_S", 0.0, raising=False)
    db = _two_days_of_one_box(dash_settings)
    older = [r[0] for r in db.conn.execute("SELECT ts FROM metrics ORDER BY ts LIMIT 60")]
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    try:
        deleted = retention.purge(db, metrics_days=1.5, aggregates_days=365, audit_days=365)
    finally:
        db.conn.set_trace_callback(None)
    assert (deleted["metrics"], deleted["events"]) == (60, 1)
    ends = [float(s.rsplit("<", 1)[1]) for s in statements
            if s.startswith("DELETE FROM metrics")]
    batches = [sum(lo <= ts < hi for ts in older) for lo, hi in pairwise([0.0, *ends])]
    assert batches == [25, 25, 10], batches
    commits = [i for i, s in enumerate(statements) if s == "COMMIT"]
    deletes = [i for i, s in enumerate(statements) if s.startswith("DELETE FROM metrics")]
    assert all(any(a < c < b for c in commits) for a, b in pairwise(deletes))
    assert db.conn.execute("SELECT mean, n FROM daily_aggregates WHERE "
                           "metric = 'near_speech_ratio'").fetchone() == (0.5, 60)


def test_a_long_purge_says_how_far_it_has_gone_while_it_runs(
        dash_settings: DashboardSettings, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A purge of a large backlog (a retention shortened, a server off for weeks) said nothing
    until it ended: `miroir dashboard purge` of 1,000,000 rows printed its one line after 29.8 s
    (at 2,000 rows a transaction, a month of a 60-box site is hours), which looks like a hang.
    It now says what it starts on (the roll-up of the backlog first: 15 s of those 29.8), then
    every PURGE_PROGRESS_S the rows deleted so far and the time reached of the time it deletes
    up to."""
    monkeypatch.setattr(retention, "PURGE_BATCH_ROWS", 25)
    monkeypatch.setattr(retention, "PURGE_PAUSE_S", 0.0)
    monkeypatch.setattr(retention, "PURGE_PROGRESS_S", 0.0, raising=False)
    db = _two_days_of_one_box(dash_settings)
    with caplog.at_level("INFO", logger="dashboard.retention"):
        deleted = retention.purge(db, metrics_days=1.5, aggregates_days=365, audit_days=365)
    assert deleted["metrics"] == 60
    said = [r.getMessage() for r in caplog.records]
    assert said[0].startswith("retention purge: daily means brought up to date, then metrics")
    steps = [m for m in said if "under way" in m]
    assert len(steps) == 2, steps  # after each of the first 2 batches of 25; the 3rd ends it
    assert steps[0].startswith("retention purge under way: 25 metrics rows")
    assert steps[1].startswith("retention purge under way: 50 metrics rows")
    assert all("Z of " in s for s in steps)


def test_the_variant_comparison_counts_a_variants_calls_by_index(
        dash_settings: DashboardSettings) -> None:
    """The campaign page counts each variant's outcomes from the calls of that campaign and
    variant, not by reading every call of the year (2.45 M calls of 60 agents: 1 to 1.4 s a
    variant, and a campaign has up to 12)."""
    db = _two_days_of_one_box(dash_settings)
    with db.conn:
        db.conn.execute("INSERT INTO campaigns (campaign, name) VALUES ('camp-a', 'A')")
        db.conn.execute("INSERT INTO variants (id, campaign, name) VALUES (1, 'camp-a', 'V1')")
        db.conn.executemany(
            "INSERT INTO calls (agent, start_ts, campaign, variant, outcome) VALUES (?, ?, ?, ?, ?)",
            [("agent-a1", 1.0e9 + k, "camp-a", 1, "meeting" if k % 4 else "refusal")
             for k in range(40)])
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    try:
        variants = analytics.variant_comparison(db, "camp-a", None)
    finally:
        db.conn.set_trace_callback(None)
    assert variants[0]["outcomes"]["meeting"] == 30 and variants[0]["calls"] == 40
    counts = [s for s in statements if "FROM calls" in s]
    assert counts
    for sql in counts:
        plan = [r[3] for r in db.conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()]
        assert any("calls_campaign (campaign=? AND variant=?" in p for p in plan), plan


def test_the_purge_lets_a_writer_in_between_batches_of_the_audit_log_and_quarantine(
        dash_settings: DashboardSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The purge deleted the old audit log, quarantine, calls and the other tables in one
    transaction: with 1,000,000 audit entries and 250,000 quarantined messages past their
    limits, the ingest's quarantine insert waited 1.13 s (median of 3); with 5,000,000 and
    1,250,000 it gave up after the 5 s busy timeout ("database is locked"). They now go
    PURGE_BATCH_ROWS rows per transaction: another connection that will not wait at all (the
    ingest, a page) gets its write in between two batches of each table, while part of that
    table's old rows are deleted and part not yet."""
    monkeypatch.setattr(retention, "PURGE_BATCH_ROWS", 10)
    monkeypatch.setattr(retention, "PURGE_PAUSE_S", 0.0)
    db = store.open_db(dash_settings.db_path)
    schema.ensure_schema(db)
    now = time.time()
    old = now - 400 * DAY_S  # past every limit below
    with db.conn:
        for i in range(35):
            db.conn.execute("INSERT INTO audit_log (ts, actor, actor_role, agent, action) "
                            "VALUES (?, 'sup-a', 'supervisor', 'agent-a1', 'view_agent')",
                            (old + i,))
            db.conn.execute("INSERT INTO quarantine (received_ts, topic, reason, payload, "
                            "truncated) VALUES (?, 't', 'r', 'p', 1)", (old + i,))
            db.conn.execute("INSERT INTO calls (agent, start_ts) VALUES ('agent-a1', ?)",
                            (old + i,))
    tables = {"audit_log": "ts", "quarantine": "received_ts", "calls": "start_ts"}
    writer = store.open_db(dash_settings.db_path)
    writer.conn.execute("PRAGMA busy_timeout=0")
    seen: list[dict[str, int]] = []

    def write_between(_sql: str) -> None:
        if db.conn.in_transaction:
            return
        left = {t: writer.conn.execute(f"SELECT count(*) FROM {t} WHERE {c} < ?",
                                       (now - 366 * DAY_S,)).fetchone()[0]
                for t, c in tables.items()}
        with writer.conn:  # raises "database is locked" if the purge held the lock
            writer.conn.execute("INSERT INTO quarantine (received_ts, topic, reason, payload, "
                                "truncated) VALUES (?, 'w', 'r', 'p', 1)", (now,))
        seen.append(left)

    db.conn.set_trace_callback(write_between)
    try:
        out = retention.purge(db, metrics_days=30, aggregates_days=365, audit_days=365, now=now)
    finally:
        db.conn.set_trace_callback(None)
    assert (out["audit_log"], out["quarantine"], out["calls"]) == (35, 35, 35)
    for table in tables:
        between = sorted({s[table] for s in seen if 0 < s[table] < 35}, reverse=True)
        assert between == [25, 15, 5], (table, between)  # after each full batch of 10
    assert db.conn.execute("SELECT count(*) FROM quarantine").fetchone()[0] == len(seen)
    assert schema.get_setting(db, "audit_purge_before_ts") == "0"
    writer.conn.close()


def test_each_batch_of_the_purge_finds_its_old_rows_by_time_not_by_reading_the_table(
        dash_settings: DashboardSettings) -> None:
    """A batch of the purge looks up its next old rows under the write lock: without an index
    on their time, it read the audit log by agent (or the whole quarantine, or every call) to
    find them, and a write waited 0.11 s a batch on 1,000,000 audit entries of 100 agents
    (0.056 s with the index)."""
    db = store.open_db(dash_settings.db_path)
    schema.ensure_schema(db)
    now = time.time()
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    try:
        retention.purge(db, metrics_days=30, aggregates_days=365, audit_days=365, now=now)
    finally:
        db.conn.set_trace_callback(None)
    for table in ("audit_log", "quarantine", "calls"):
        deletes = [s for s in statements if s.startswith(f"DELETE FROM {table} ")]
        assert deletes, table
        for sql in deletes:
            plan = [r[3] for r in db.conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()]
            assert not [p for p in plan if p.startswith("SCAN")], (table, plan)
