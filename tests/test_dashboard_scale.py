"""The dashboard's queries at a site's scale: what SQLite reads for each page (EXPLAIN QUERY PLAN).

Timings belong to benchmarks; what a test can hold is the plan: a query over months of rows must
not read every row of a box to find one window of them.
"""

from __future__ import annotations

import contextlib
import re
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from dashboard import analytics, registry, retention, schema
from dashboard import db as store
from dashboard.settings import DashboardSettings
from miroir import wire
from miroir.wire import DAY_S
from tests._fixtures_dashboard import query_plans


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
    # the README's month of two teams compared this many means a team, twice (it said 76: 38
    # metrics a team, the instant and the running total included)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    [quoted] = re.findall(r"with the same (\d+) means to 1e-13", readme)
    assert int(quoted) == 2 * len(means)


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


def test_a_long_purge_says_how_far_its_roll_up_of_the_backlog_has_gone(
        dash_settings: DashboardSettings, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """`miroir dashboard purge` of a database whose rows were never rolled up (3 M metrics
    rows, 200 boxes, a year) said "daily means brought up to date, then ..." and then nothing
    for 77 s (25 s more in a run stopped before), the roll-up of the backlog, before its first
    line about deleting: it looked hung. The roll-up now says every ROLL_UP_PROGRESS_S how many
    rows it has added and how many boxes it has done."""
    monkeypatch.setattr(analytics, "ROLL_UP_BATCH_ROWS", 25)
    monkeypatch.setattr(analytics, "ROLL_UP_PAUSE_S", 0.0)
    monkeypatch.setattr(analytics, "ROLL_UP_PROGRESS_S", 0.0, raising=False)
    monkeypatch.setattr(retention, "PURGE_PAUSE_S", 0.0)
    db = _two_days_of_one_box(dash_settings)
    with db.conn:  # the rows arrived as they were measured, and no roll-up has run since
        db.conn.execute("UPDATE metrics SET ingested_ts = ts")
    with caplog.at_level("INFO"):
        deleted = retention.purge(db, metrics_days=1.5, aggregates_days=365, audit_days=365)
    assert deleted["metrics"] == 60
    said = [r.getMessage() for r in caplog.records]
    assert said[0].startswith("retention purge: daily means brought up to date"), said
    steps = [m for m in said if m.startswith("daily means under way")]
    assert steps == [f"daily means under way: {n} metrics rows added, 0 of 1 boxes done"
                     for n in (25, 50, 75, 100)], said
    assert db.conn.execute("SELECT n FROM daily_aggregates WHERE metric = 'near_speech_ratio' "
                           "ORDER BY day").fetchall() == [(60,), (60,)]


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


def _metrics_rows(settings: DashboardSettings, rows: int) -> None:
    """``rows`` per-second metrics rows of one seated box, the first ingested, the rest copies
    of it a second apart (a big database in a second, not an hour of ingest)."""
    db = _two_days_of_one_box(settings)
    cols = [r[1] for r in db.conn.execute("PRAGMA table_info(metrics)")
            if r[1] not in ("seq", "ts", "ingested_ts")]
    names = ", ".join(cols)
    with db.conn:
        db.conn.execute(
            f"WITH RECURSIVE k(n) AS (SELECT 1000 UNION ALL SELECT n + 1 FROM k WHERE n < ?) "
            f"INSERT INTO metrics ({names}, seq, ts, ingested_ts) SELECT {names}, k.n, m.ts + k.n, "
            f"m.ingested_ts + k.n FROM metrics m, k WHERE m.seq = 1", (999 + rows,))
    db.conn.close()


def _stop_once_under_way(args: list[str], env: dict[str, str], said: str
                         ) -> tuple[int, str, list[str]]:
    """Run ``miroir ARGS`` (in a process of its own, a progress line at every look SQLite lets
    it take, a restore copying a page a step), send Ctrl-C once it has logged ``said``; its
    exit code, stdout and stderr lines. Its stderr is read no further until then, so the
    command cannot finish in between: its progress lines fill the pipe and it waits to write
    the next."""
    import os
    import signal
    import subprocess
    import sys

    code = ("import sys; from dashboard import db, retention, schema; "
            "retention.BACKUP_PROGRESS_S = schema.MIGRATION_PROGRESS_S = 0.0; "
            "db.PROGRESS_STEPS = 100; retention.RESTORE_STEP_PAGES = 1; "
            "from miroir.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if said in line:
                break
        assert lines and said in lines[-1], lines[-5:]  # (none: it said nothing)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, [*lines, *rest.splitlines()]


def test_a_long_backup_says_how_far_it_has_got_and_stops_at_once_on_ctrl_c(tmp_path) -> None:
    """`miroir dashboard backup` of a 700 MB database (3 M metrics rows, 200 boxes) said nothing
    for 3.2 s (a year of a floor is tens of GB: minutes), and copied in one SQLite call that
    Ctrl-C could not stop: it ended with the copy (0.65 s after Ctrl-C sent 1.5 s in; the whole
    copy when sent at its start). It now logs how far it has got every BACKUP_PROGRESS_S and
    stops at SQLite's next step, leaving no file; a second run writes the whole backup."""
    import os
    import sqlite3
    import subprocess
    import sys

    from tests._fixtures_dashboard import make_settings

    settings = make_settings(tmp_path)
    _metrics_rows(settings, 50_000)
    env = dict(os.environ, MIROIR_DASH_SITE="site-1", MIROIR_DASH_DB_PATH=str(settings.db_path))
    dest = tmp_path / "b.db"
    code, out, err = _stop_once_under_way(["dashboard", "backup", str(dest)], env,
                                          f"INFO dashboard.db: backup to {dest} under way")
    assert code == 130, err[-5:]
    assert err[-1] == "miroir: interrupted" and not any("Traceback" in e for e in err), err[-5:]
    assert out == "" and not list(tmp_path.glob("b.db*"))  # no half copy, no journal
    done = subprocess.run([sys.executable, "-m", "miroir", "dashboard", "backup", str(dest)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout == f"backup written to {dest}\n", done.stderr
    con = sqlite3.connect(dest)
    try:
        assert con.execute("SELECT count(*) FROM metrics").fetchone() == (50_120,)
    finally:
        con.close()



@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_stop_signals_in_a_burst_leave_no_half_backup(tmp_path, signum: str) -> None:
    """`kill` in a loop (a supervisor that repeats its SIGTERM): every signal raised, so the one
    after the first landed in the backup's own clean-up, which removes the unfinished copy, or in
    the "interrupted" line (measured: 4 runs in 10 ended with a traceback, 3 of them leaving the
    file at the backup's path, which the next backup to it refuses to overwrite). The first
    signal stops the command; those that follow are only noted. Ctrl-C's too (SIGINT, which
    Python raised at every one: 5 runs in 6 left the file, as a repeated SIGTERM did)."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    from tests._fixtures_dashboard import make_settings

    settings = make_settings(tmp_path)
    _metrics_rows(settings, 50_000)
    env = dict(os.environ, MIROIR_DASH_SITE="site-1", MIROIR_DASH_DB_PATH=str(settings.db_path))
    dest = tmp_path / "b.db"
    code = ("import sys; from dashboard import db, retention; retention.BACKUP_PROGRESS_S = 0.0; "
            "db.PROGRESS_STEPS = 100; from miroir.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, "dashboard", "backup", str(dest)],
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if "under way" in line:
                break
        assert lines and "under way" in lines[-1], lines[-5:]
        rest: list[str] = []  # read on in a thread: the burst must not fill the pipe
        reader = threading.Thread(target=lambda: rest.extend(proc.communicate(timeout=60)))
        reader.start()
        sent = 0
        while proc.poll() is None and reader.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, getattr(signal, signum))
                sent += 1
        reader.join(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = [*lines, *"".join(rest[1:]).splitlines()]
    assert sent > 1
    assert not list(tmp_path.glob("b.db*")), (list(tmp_path.glob("b.db*")), err[-5:])
    assert not any("Traceback" in e for e in err), err[-20:]
    assert "miroir: interrupted" in err, err[-5:]
    assert sum("still stopping" in e for e in err) <= 1, err[-5:]  # said once, not per signal


def test_a_second_stop_signal_says_the_command_is_still_stopping_once(
        capfd: pytest.CaptureFixture[str]) -> None:
    """The signals after the first were only noted: a user pressing Ctrl-C again during a
    clean-up saw nothing happen. The second says, once, that the command is still stopping and
    how to force it; the first alone raises."""
    from miroir import cli

    cli._interrupted = 0
    try:
        with pytest.raises(KeyboardInterrupt):
            cli._interrupt(2, None)
        for _ in range(5):
            cli._interrupt(2, None)  # noted, never raised again
    finally:
        cli._interrupted = 0
    err = capfd.readouterr().err
    assert err.count("still stopping") == 1 and "Ctrl-\\ or kill -9" in err, err


def test_the_interrupted_line_is_whole_when_a_second_signal_lands_as_it_is_written(
        capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A suite run of the burst test above read "miroir: interruptedmiroir: still stopping ...":
    ``print`` wrote "interrupted" and its newline apart, and the second signal's line (written by
    the handler) landed between them. Here the second signal lands right after the first write
    of that line: both lines stay whole."""
    import sys

    from miroir import cli

    class SignalAfterFirstWrite:
        def __init__(self, real: Any) -> None:
            self.real, self.writes = real, 0

        def write(self, text: str) -> int:
            n = self.real.write(text)
            self.real.flush()
            self.writes += 1
            if self.writes == 1:
                cli._interrupt(2, None)  # the second signal: noted, said once
            return n

        def flush(self) -> None:
            self.real.flush()

    monkeypatch.setattr(sys, "stderr", SignalAfterFirstWrite(sys.stderr))
    cli._interrupted = 1  # the first signal raised, main() now says so
    try:
        cli._say_interrupted()
    finally:
        cli._interrupted = 0
    lines = capfd.readouterr().err.splitlines()
    assert lines == ["miroir: interrupted", cli.STILL_STOPPING.decode().rstrip("\n")], lines


def test_a_long_restore_says_how_far_it_has_got_and_ctrl_c_leaves_the_database_as_it_was(
        tmp_path) -> None:
    """`miroir dashboard restore` of a 700 MB backup said nothing for 25 s (19 s of SQLite's
    integrity check, then the copy, each one call that Ctrl-C could not stop: a Ctrl-C sent 2 s
    in ended it 17.5 s later). It now logs how far its check and its copy have got every
    BACKUP_PROGRESS_S, and Ctrl-C stops either at once: here in the middle of the copy, the
    database is left whole as it was; a second run restores the backup."""
    import os
    import sqlite3
    import subprocess
    import sys

    from tests._fixtures_dashboard import make_settings

    (tmp_path / "big").mkdir()
    big = make_settings(tmp_path / "big")
    _metrics_rows(big, 50_000)
    env = dict(os.environ, MIROIR_DASH_SITE="site-1", MIROIR_DASH_DB_PATH=str(big.db_path))
    backup = tmp_path / "b.db"
    assert subprocess.run([sys.executable, "-m", "miroir", "dashboard", "backup", str(backup)],
                          env=env, timeout=120, check=False).returncode == 0
    live = make_settings(tmp_path)
    _two_days_of_one_box(live).conn.close()  # the database in place: 120 rows
    env["MIROIR_DASH_DB_PATH"] = str(live.db_path)
    args = ["dashboard", "restore", str(backup)]
    code, out, err = _stop_once_under_way(args, env, f"restore of {backup} under way: ")
    assert any(f"check of the backup {backup} under way: " in e for e in err), err[:3]
    assert code == 130, err[-5:]
    assert err[-1] == "miroir: interrupted" and not any("Traceback" in e for e in err), err[-5:]
    assert out == ""
    con = sqlite3.connect(live.db_path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert con.execute("SELECT count(*) FROM metrics").fetchone() == (120,)
    finally:
        con.close()
    done = subprocess.run([sys.executable, "-m", "miroir", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout == f"restored {backup}\n", done.stderr
    con = sqlite3.connect(live.db_path)
    try:
        assert con.execute("SELECT count(*) FROM metrics").fetchone() == (50_120,)
    finally:
        con.close()


def test_a_long_migration_says_so_and_ctrl_c_leaves_the_schema_as_it_was(tmp_path) -> None:
    """The first command after an upgrade (`dashboard serve`, or `dashboard user list`) builds
    the new indexes over every metrics row: 3.5 s on 3 M rows (2 s for migration 6 alone), on a
    floor's year of rows many minutes, said only once each migration had ended; and Ctrl-C
    waited for the index. Each migration is now said as it starts, then every
    MIGRATION_PROGRESS_S how long it has run, and Ctrl-C stops it at once: the schema is left at
    the version it had, and the next command applies the migration whole."""
    import os
    import sqlite3
    import subprocess
    import sys

    from tests._fixtures_dashboard import make_settings

    settings = make_settings(tmp_path)
    _metrics_rows(settings, 50_000)
    con = sqlite3.connect(settings.db_path)
    with con:  # a database of a dashboard at migration 5: no index of migration 6 on
        for index in ("metrics_box_ts", "events_box_ts", "metrics_box_ingested",
                      "daily_aggregates_agent", "audit_log_ts", "quarantine_received",
                      "calls_start", "calls_campaign"):
            con.execute(f"DROP INDEX IF EXISTS {index}")
        con.execute("DELETE FROM schema_version WHERE version > 5")
    con.close()
    env = dict(os.environ, MIROIR_DASH_SITE="site-1", MIROIR_DASH_DB_PATH=str(settings.db_path))
    code, out, err = _stop_once_under_way(["dashboard", "user", "list"], env,
                                          "INFO dashboard.db: dashboard migration 6 under way: ")
    assert any("INFO dashboard.schema: applying dashboard migration 6 of " in e for e in err)
    assert code == 130, err[-5:]
    assert err[-1] == "miroir: interrupted" and not any("Traceback" in e for e in err), err[-5:]
    assert out == ""
    con = sqlite3.connect(settings.db_path)
    try:
        assert con.execute("SELECT max(version) FROM schema_version").fetchone() == (5,)
    finally:
        con.close()
    done = subprocess.run([sys.executable, "-m", "miroir", "dashboard", "user", "list"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.startswith("USER"), done.stderr
    con = sqlite3.connect(settings.db_path)
    try:
        assert con.execute("SELECT max(version) FROM schema_version").fetchone() == (
            len(schema.MIGRATIONS),)
        assert con.execute("SELECT count(*) FROM metrics").fetchone() == (50_120,)
    finally:
        con.close()


def test_each_campaigns_variants_are_read_by_index(dash_settings: DashboardSettings) -> None:
    """The campaigns page (and /api/campaigns, and a campaign's comparison) read each campaign's
    variants by reading the whole variants table: time in the square of the campaigns, measured
    over the real server at a median of 222 ms for 2,000 campaigns of 2 variants and 5.5 s for
    10,000 (34 ms and 215 ms with the index). Each campaign's variants are now found by index."""
    from dashboard import access
    from dashboard.routes import api
    from tests._fixtures_dashboard import seed_org

    seed_org(dash_settings, seconds=5)
    db = store.open_db(dash_settings.db_path)
    try:
        admin = access.load_user(db, dash_settings.admin_user)
        statements: list[str] = []
        db.conn.set_trace_callback(statements.append)
        try:
            listed = api.list_campaigns(db, admin)["campaigns"]
            variants = analytics.variant_comparison(db, "camp-a", None)
        finally:
            db.conn.set_trace_callback(None)
        assert [len(c["variants"]) for c in listed] == [2, 1] and len(variants) == 2
        reads = [s for s in statements if "FROM variants" in s]
        assert len(reads) == 2  # the listed campaigns' in one, camp-a's
        for sql in reads:
            plan = [r[3] for r in db.conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()]
            assert any("USING INDEX variants_campaign (campaign=?)" in p
                       or "USING COVERING INDEX variants_campaign (campaign=?)" in p
                       for p in plan), (sql, plan)
    finally:
        db.conn.close()
