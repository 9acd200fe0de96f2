"""The box's SQLite outbox: sequence numbers, acknowledgement, overflow."""

import json
import shutil
import sqlite3
import time

import numpy as np
import pytest

from edge.outbox import (
    ORIGIN_FLOOR,
    ORIGIN_JITTER,
    ROW_OVERHEAD_BYTES,
    WAL_LIMIT_BYTES,
    Outbox,
    await_clock,
    clock_origin,
)

BODY = {"near_speech_ratio": 0.25, "far_speech_ratio": 0.5, "talk_state": "silence"}


def test_sequence_survives_restart(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", "s", "b")
    # every write reaches the disk before put() returns, so before the message is sent: a power
    # cut never rolls back a number the dashboard already holds
    assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    o = box.origin
    seqs = [box.put("metrics", BODY)[0] for _ in range(3)]
    assert seqs == [o, o + 1, o + 2]
    box.ack([o, o + 1])
    box.close()
    box = Outbox(tmp_path / "o.sqlite", "s", "b")
    assert box.origin == o and box.put("metrics", BODY)[0] == o + 3
    assert [s for s, _, _ in box.pending()] == [o + 2, o + 3]
    payload = json.loads(box.pending()[0][2])
    assert payload["seq"] == o + 2 and payload["box"] == "b"


def test_a_new_box_numbers_from_the_clock_so_a_wiped_one_never_reuses_a_number(tmp_path):
    """A re-imaged card loses the state directory, outbox and reserve file together: the box
    starts again from the clock in milliseconds, above every number it sent before (it sends a
    few messages a second), so the dashboard takes none of its new messages for a duplicate."""
    state = tmp_path / "state"
    before_ms = int(time.time() * 1000)
    box = Outbox(state / "outbox.sqlite", "s", "b")
    assert before_ms <= box.origin <= int(time.time() * 1000) and box.last_seq == box.origin - 1
    used = [box.put("metrics", BODY)[0] for _ in range(5)]
    box.close()
    time.sleep(0.01)  # five messages in 10 ms: far more than a box sends
    shutil.rmtree(state)
    box = Outbox(state / "outbox.sqlite", "s", "b")
    assert box.origin > max(used) and box.put("metrics", BODY)[0] == box.origin
    box.close()
    # an outbox made before numbers had an origin numbered from 1, and says so
    with sqlite3.connect(state / "outbox.sqlite") as db:
        db.execute("DELETE FROM meta WHERE key = 'seq_origin'")
    assert Outbox(state / "outbox.sqlite", "s", "b").origin == 1


def test_a_clock_not_set_yet_starts_at_a_random_point_above_the_floor():
    """A Pi has no real-time clock: before NTP it may read 1970. The origin is then the floor plus
    a random offset, so two such starts of one box almost never meet."""
    assert clock_origin(1_800_000_000.0) == 1_800_000_000_000
    early = {clock_origin(0.0) for _ in range(20)}
    assert all(ORIGIN_FLOOR <= o < ORIGIN_FLOOR + ORIGIN_JITTER for o in early)
    assert len(early) == 20


def test_a_new_box_waits_for_ntp_before_numbering_from_the_clock(tmp_path):
    """Only a box with no numbers on record waits, and only as long as it is told to."""
    path = tmp_path / "outbox.sqlite"
    answers = iter([False, False, True])
    slept = []
    assert await_clock(path, 120.0, synced=lambda: next(answers), sleep=slept.append)
    assert slept == [1.0, 1.0]  # synchronized at the third look
    slept.clear()
    assert not await_clock(path, 5.0, synced=lambda: False, sleep=slept.append)
    assert slept == [1.0] * 5  # gave up after 5 s, and numbers from the clock anyway
    assert await_clock(path, 0.0, synced=lambda: False, sleep=slept.append) and len(slept) == 5
    Outbox(path, "s", "b").close()
    assert await_clock(path, 120.0, synced=lambda: False, sleep=slept.append) and len(slept) == 5


def test_the_ntp_check_survives_a_kernel_without_adjtimex(tmp_path, monkeypatch):
    import edge.health

    monkeypatch.setattr(edge.health, "clock_facts", lambda: {})
    assert not await_clock(tmp_path / "outbox.sqlite", 2.0, sleep=lambda _s: None)


def test_a_restart_before_the_first_message_keeps_the_origin(tmp_path, monkeypatch):
    """The first start's status announced its origin; a second start before any message, its clock
    now stale (no NTP yet), must not number below it."""
    import edge.outbox

    path = tmp_path / "outbox.sqlite"
    first = Outbox(path, "s", "b")
    origin = first.origin
    first.close()
    monkeypatch.setattr(edge.outbox, "clock_origin", lambda now_s=None: origin - 10**6)
    again = Outbox(path, "s", "b")
    assert again.origin == origin and again.put("metrics", BODY)[0] == origin
    again.close()


def test_acked_rows_kept_for_retention_then_purged(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", "s", "b", retention_s=60)
    o = box.origin
    box.put("metrics", BODY, ts=1000.0)
    box.put("metrics", BODY, ts=1100.0)
    box.ack([o], ts=1050.0)
    box.ack([o + 1], ts=1100.0)
    assert box.depth() == 0 and box.depth_total() == 2
    assert box.purge(now=1130.0) == 1  # retention counts from the acknowledgement
    assert box.depth_total() == 1
    # a box without a real-time clock made a row before NTP set the clock a year ahead: the row
    # is kept for the retention window after its acknowledgement, not purged at once
    box.put("metrics", BODY, ts=1200.0)
    box.ack([o + 2], ts=1200.0 + 365 * 86400)
    assert box.purge(now=1200.0 + 365 * 86400 + 30) == 1 and box.first_seq() == o + 2


def test_a_clock_set_after_boot_does_not_age_the_rows_acknowledged_before(tmp_path, monkeypatch):
    """A Pi boots without a real-time clock (three days stale), the broker acknowledges ten
    messages, then NTP sets the clock: those rows keep their 24 h for resend requests (the first
    purge deleted them all); 25 real hours later they go."""
    import edge.outbox as outbox_mod

    clock = {"wall": 1_767_000_000.0, "mono": 100.0}
    monkeypatch.setattr(outbox_mod.time, "time", lambda: clock["wall"])
    monkeypatch.setattr(outbox_mod.time, "monotonic", lambda: clock["mono"])

    def advance(wall_s: float, mono_s: float) -> None:
        clock["wall"] += wall_s
        clock["mono"] += mono_s

    box = Outbox(tmp_path / "o.sqlite", "s", "b")
    seqs = [box.put("metrics", BODY)[0] for _ in range(10)]
    advance(15.0, 15.0)
    box.ack(seqs)
    advance(3 * 86400.0 + 5.0, 5.0)  # NTP: three days ahead, five seconds later
    assert box.purge() == 0 and box.resend(seqs[0], seqs[-1]) == 10
    box.ack(seqs)
    advance(25 * 3600.0, 25 * 3600.0)
    assert box.purge() == 10
    box.close()


def test_a_corrupt_or_lost_database_never_reuses_a_sequence_number(tmp_path):
    """A card that corrupts the database (or an operator who deletes it): the box starts a new one
    above every number it used, keeps the bad file aside, and runs on."""
    path = tmp_path / "o.sqlite"
    box = Outbox(path, "s", "b")
    used = [box.put("metrics", BODY)[0] for _ in range(3)]
    box.close()
    path.write_bytes(b"this is not a database" * 100)
    for part in (tmp_path / "o.sqlite-wal", tmp_path / "o.sqlite-shm"):
        part.unlink(missing_ok=True)
    box = Outbox(path, "s", "b")
    seq = box.put("metrics", BODY)[0]
    # the new numbering says where it starts: the dashboard knows the numbers between were never
    # used, and counts as lost only the old messages it lacks
    assert seq > max(used) and box.first_seq() == seq == box.origin
    assert list(tmp_path.glob("o.sqlite.corrupt-*"))
    box.close()
    path.unlink()
    box = Outbox(path, "s", "b")
    assert box.put("metrics", BODY)[0] > seq
    box.close()


@pytest.mark.parametrize("damaged", ["meta", "outbox_unacked"])
def test_a_database_damaged_past_its_first_pages_is_set_aside_too(tmp_path, damaged):
    """Damage that opening alone does not read (the numbers' table, the unsent index) is found at
    open and set aside as well: before, the box failed at every start (reading its numbers) or at
    its first send (the index), a restart loop."""
    path = tmp_path / "o.sqlite"
    box = Outbox(path, "s", "b")
    used = [box.put("metrics", BODY)[0] for _ in range(50)]
    box.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (damaged,)).fetchone()[0]
    size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with open(path, "r+b") as fh:
        fh.seek((page - 1) * size + 8)
        fh.write(b"\xff" * 200)
    box = Outbox(path, "s", "b")
    assert box.depth() == 0 and box.pending() == []
    assert box.put("metrics", BODY)[0] > max(used)
    assert list(tmp_path.glob("o.sqlite.corrupt-*"))
    box.close()


def test_a_full_disk_frees_acknowledged_rows_then_counts_the_loss(tmp_path):
    """SQLite reports a full disk (here: the file's page limit): acknowledged rows go first; when
    nothing is left to free, the message is counted in dropped and the error is SQLite's own."""
    box = Outbox(tmp_path / "o.sqlite", "s", "b")
    for _ in range(20):
        box.put("metrics", BODY)
    box.ack(list(range(box.origin, box.origin + 20)))
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count={pages}")
    for _ in range(2000):
        try:
            box.put("metrics", BODY)
        except sqlite3.OperationalError as exc:
            assert "full" in str(exc)
            break
    else:
        raise AssertionError("the page limit was never reached")
    assert box.dropped == 1 and box.depth_total() >= 1
    assert box._db.execute("SELECT COUNT(*) FROM outbox WHERE acked_ts IS NOT NULL").fetchone()[0] == 0
    # room again (the broker took some): the count is kept with the next message, never reset
    box.ack([box.origin + 20])
    box._free_acked()
    box.put("metrics", BODY)
    box.close()
    assert Outbox(tmp_path / "o.sqlite", "s", "b").dropped == 1


def test_an_outbox_made_before_the_given_up_column_keeps_its_messages(tmp_path):
    """A box updated with messages waiting: its outbox gains the column, nothing else changes."""
    path = tmp_path / "o.sqlite"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE outbox (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
                     "payload BLOB NOT NULL, created_ts REAL NOT NULL, acked_ts REAL); "
                     "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL); "
                     "INSERT INTO outbox VALUES (7, 'metrics', x'7b7d', 1.0, NULL); "
                     "INSERT INTO meta VALUES ('last_seq', 7), ('seq_origin', 1);")
    db.close()
    box = Outbox(path, "s", "b")
    assert [s for s, _, _ in box.pending()] == [7] and box.last_seq == 7
    box.give_up([7])
    assert box.dropped == 1 and box.pending() == []
    box.close()


def test_a_full_outbox_finds_its_acknowledged_rows_through_an_index(tmp_path):
    """After a long outage the outbox holds only unsent rows: each new message looks for
    acknowledged rows to evict first, through an index (it scanned the whole table: 64 ms per
    message at 180k rows, measured by the review; the cost is benchmarked, not timed here)."""
    box = Outbox(tmp_path / "o.sqlite", "s", "b", max_messages=10)
    for _ in range(12):
        box.put("metrics", BODY)
    plan = box._db.execute("EXPLAIN QUERY PLAN SELECT seq, LENGTH(payload) FROM outbox "
                           "WHERE acked_ts IS NOT NULL ORDER BY seq LIMIT 64").fetchall()
    assert "USING INDEX outbox_acked" in " ".join(str(row[-1]) for row in plan), plan
    box.close()


def test_overflow_drops_acked_first_then_oldest_unsent(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", "s", "b", max_messages=5)
    o = box.origin
    for _ in range(5):
        box.put("metrics", BODY)
    box.ack([o, o + 1])
    for _ in range(2):
        box.put("metrics", BODY)      # evicts the two acked rows
    assert box.dropped == 0 and box.depth_total() == 5
    for _ in range(3):
        box.put("metrics", BODY)      # now evicts three unsent rows: counted
    assert box.dropped == 3
    assert [s for s, _, _ in box.pending()] == [o + 5, o + 6, o + 7, o + 8, o + 9]
    box.close()
    assert Outbox(tmp_path / "o.sqlite", "s", "b").dropped == 3


def test_the_default_bound_holds_the_resend_window_of_a_box_in_calls(tmp_path):
    """Acknowledged messages are kept 24 h for resends (docs/wire.md: a dashboard outage loses
    nothing within it): the default byte bound must hold 24 h of what a box stores while its agent
    is in calls. Measured on a real two-party call (AMI headsets, 60 s) through the real pipeline
    into a real outbox: 1.95 kB a second, so 64 MiB held 9.6 h."""
    from pathlib import Path

    import numpy as np

    from edge.outbox import DEFAULT_MAX_BYTES
    from edge.pipeline import Pipeline, load_vad_model
    from edge.source import read_wav

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "ami-headsets"
    near = read_wav(shared / "source0.wav", notice=False).samples
    far = read_wav(shared / "source1.wav", notice=False).samples
    audio = np.stack([near, far])[:, : 60 * 16_000]
    pipe = Pipeline(load_vad_model())
    box = Outbox(tmp_path / "o.sqlite", "paris-1", "seat-07")
    for i in range(0, audio.shape[1], 1024):
        for msg in pipe(audio[:, i:i + 1024]):
            box.put(msg.kind, msg.body)
    bytes_per_s = box.size_bytes() / (audio.shape[1] / 16_000)
    held_h = DEFAULT_MAX_BYTES / bytes_per_s / 3600
    print(f"{bytes_per_s:.0f} bytes a second in a call: the default bound holds {held_h:.1f} h")
    assert box.depth_total() > 100  # metrics and events of a real call
    assert held_h >= box.retention_s / 3600, held_h
    box.close()


def test_the_byte_bound_keeps_exactly_what_fits_also_after_a_restart(tmp_path):
    """Bounded in bytes only: the outbox keeps the newest ten rows that fit, evicts and counts one
    row per new one (not more), and a restart counts the same bytes as the running outbox did
    (each row's overhead included), so the bound holds the same afterwards."""
    path = tmp_path / "o.sqlite"
    box = Outbox(path, "s", "b")
    row_bytes = len(box.put("metrics", BODY, ts=1000.0)[1]) + ROW_OVERHEAD_BYTES  # all the same size
    box.max_bytes = 10 * row_bytes
    for _ in range(29):
        box.put("metrics", BODY, ts=1000.0)
    assert (box.depth_total(), box.dropped, box.size_bytes()) == (10, 20, 10 * row_bytes)
    assert [s for s, _, _ in box.pending()] == list(range(box.origin + 20, box.origin + 30))
    box.close()
    box = Outbox(path, "s", "b", max_bytes=10 * row_bytes)
    assert box.size_bytes() == 10 * row_bytes
    box.put("metrics", BODY, ts=1000.0)
    assert (box.depth_total(), box.dropped, box.first_seq()) == (10, 21, box.origin + 21)
    box.close()


def test_a_resend_without_an_end_reaches_the_newest_and_a_refused_message_counts_once(tmp_path):
    """The dashboard may ask for a resend from a number on (no ``to_seq``): the newest message is
    sent again too. A message the broker keeps refusing is counted in ``dropped`` once, however
    often a resend tries it again."""
    box = Outbox(tmp_path / "o.sqlite", "s", "b")
    seqs = [box.put("metrics", BODY)[0] for _ in range(5)]
    box.ack(seqs)
    assert box.resend(seqs[2]) == 3
    assert [s for s, _, _ in box.pending()] == seqs[2:]
    box.give_up(seqs[2:])
    assert box.dropped == 3 and box.pending() == []
    assert box.resend(seqs[2]) == 3
    box.give_up(seqs[2:])
    assert box.dropped == 3
    box.close()
    assert Outbox(tmp_path / "o.sqlite", "s", "b").dropped == 3


def _box_on_broker(site, broker, peer, tmp_path):
    """A Box with no pipeline on the real broker, and the dashboard's client hearing the site."""
    from edge.box import Box
    from edge.settings import EdgeSettings
    from miroir import wire
    from tests._fixtures_broker import SITE_ID

    dash = peer(site.dashboard, "dashboard")
    for f in wire.site_filters(SITE_ID):
        dash.subscribe(f)
    pair = site.box("box-a")
    settings = EdgeSettings(site=SITE_ID, box="box-a", broker_host="127.0.0.1",
                            broker_port=broker.port, ca_file=site.ca_cert, cert_file=pair.cert,
                            key_file=pair.key, state_dir=tmp_path)
    return Box(settings, pipeline=lambda block: [], version="test"), dash


def test_a_full_disk_that_refuses_the_acknowledgements_sends_each_message_once(
        site, broker, peer, tmp_path):
    """The broker is back with a backlog waiting and the disk is full: the broker's
    acknowledgements cannot be written. Each message still goes out once (the box sent every
    acknowledged one again at each pass of its loop, hundreds a second, as long as the disk
    stayed full: 3640 sends of 549 messages in four minutes measured on a full tmpfs); once room
    returns, the acknowledgements are recorded and nothing is sent again."""
    from tests._fixtures_broker import wait_until

    box, dash = _box_on_broker(site, broker, peer, tmp_path)
    db = box.outbox._db
    db.execute(f"PRAGMA max_page_count={db.execute('PRAGMA page_count').fetchone()[0] + 20}")
    backlog = []
    while True:  # the outage's backlog fills the disk
        try:
            backlog.append(box.outbox.put("metrics", BODY)[0])
        except sqlite3.OperationalError:
            break
    box.publisher.start()
    try:
        wait_until(box.publisher.connected.is_set, "the box connected")

        def received() -> list[int]:
            return [json.loads(p)["seq"] for t, p in dash.messages if t.endswith("/metrics")]

        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            box.pump()
            time.sleep(0.02)
        got = received()
        assert sorted(got) == backlog, (len(got), len(set(got)), len(backlog))
        assert box.outbox.depth() == 0
        db.execute("PRAGMA max_page_count=1073741823")  # room again: the next second's metrics
        seq = box.outbox.put("metrics", BODY)[0]

        def written() -> bool:
            box.pump()
            return db.execute("SELECT COUNT(*) FROM outbox WHERE acked_ts IS NULL").fetchone()[0] == 0

        wait_until(written, "every acknowledgement written")
        assert sorted(received()) == [*backlog, seq]
    finally:
        box.publisher.stop()
        box.outbox.close()


@pytest.mark.parametrize("how", ["purge", "full disk"])
def test_deleting_a_whole_shift_of_acknowledged_rows_needs_a_small_log(tmp_path, how):
    """Monday's first purge deletes Friday's shift (77,040 rows, 84 MB); a full disk frees every
    acknowledged row. In one transaction the write-ahead log grew to the size of what was deleted
    (85 MB): on a card with 20 MB left the purge failed every minute, and once the disk was full
    every message was lost (200 of 200) beside 77,040 rows kept only for resends. Deleted a batch
    per transaction, the log stays near its limit and the deletion goes through on a full card."""
    path = tmp_path / "o.sqlite"
    Outbox(path, "s", "b").close()
    payload = json.dumps({"v": 1, "site": "s", "box": "b", "ts": 1.0, "seq": 1, **BODY,
                          "near_pitch_hz": 123.4, "pad": "x" * 900}).encode()
    db = sqlite3.connect(path)
    rows = 20_000  # about 22 MB: a quarter of a shift
    db.executemany("INSERT INTO outbox(seq, kind, payload, created_ts, acked_ts) "
                   "VALUES (?, 'metrics', ?, ?, ?)",
                   [(1000 + i, payload, 1000.0 + i / 2, 1000.05 + i / 2) for i in range(rows)])
    db.execute("INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)", (1000 + rows - 1,))
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    box = Outbox(path, "s", "b")
    deleted = box.purge(now=1000.0 + 3 * 86400) if how == "purge" else box._free_acked()
    wal_bytes = (tmp_path / "o.sqlite-wal").stat().st_size
    assert deleted == rows and box.depth_total() == 0 and box.size_bytes() == 0
    assert wal_bytes <= 2 * WAL_LIMIT_BYTES, f"the log grew to {wal_bytes / 1e6:.1f} MB"
    box.close()


def test_a_resend_of_a_whole_shift_needs_a_small_log(tmp_path):
    """A ``resend`` from the dashboard for a hole of hours (a broker restarted without its
    store: every message acknowledged, none delivered) put every row back in one UPDATE: the
    write-ahead log grew past the size of the rows (27.7 MB for 20,000, 73 MB for a day of
    86,400), where a purge's is kept near its limit; on a nearly full card the resend failed, asked
    again every 5 s. A batch per transaction keeps the log small; the same rows go again."""
    path = tmp_path / "o.sqlite"
    Outbox(path, "s", "b").close()
    payload = json.dumps({"v": 1, "site": "s", "box": "b", "ts": 1.0, "seq": 1, **BODY,
                          "near_pitch_hz": 123.4, "pad": "x" * 900}).encode()
    db = sqlite3.connect(path)
    rows = 20_000  # about 22 MB: a quarter of a shift
    db.executemany("INSERT INTO outbox(seq, kind, payload, created_ts, acked_ts) "
                   "VALUES (?, 'metrics', ?, ?, ?)",
                   [(1000 + i, payload, time.time(), time.time()) for i in range(rows)])
    db.execute("INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)", (1000 + rows - 1,))
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    box = Outbox(path, "s", "b")
    assert box.depth() == 0
    assert box.resend(1000 + 10, 1000 + rows + 5) == rows - 10
    wal_bytes = (tmp_path / "o.sqlite-wal").stat().st_size
    assert box.depth() == rows - 10
    assert [seq for seq, _, _ in box.pending(limit=3)] == [1010, 1011, 1012]
    assert wal_bytes <= 2 * WAL_LIMIT_BYTES, f"the log grew to {wal_bytes / 1e6:.1f} MB"
    box.close()


def test_a_purge_that_fails_at_stop_still_says_goodbye(site, broker, peer, tmp_path, monkeypatch):
    """The card fails as the box stops (an I/O error in the last purge): the box still sends its
    offline status with its last counters and stops cleanly (the error escaped the loop before:
    no final status, only the Last Will without counters, and a traceback for systemd)."""
    from tests._fixtures_broker import wait_until

    box, dash = _box_on_broker(site, broker, peer, tmp_path)

    def failing_purge(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(box.outbox, "purge", failing_purge)
    def blocks():  # one block once the box is on line (a box stopped before it connects says nothing)
        wait_until(box.publisher.connected.is_set, "the box connected")
        yield np.zeros((2, 1024), np.float32)

    box.run(blocks(), drain_s=0.5)  # returns: no exception

    def statuses() -> list[dict]:
        return [json.loads(p) for t, p in dash.messages if t.endswith("/status")]

    wait_until(lambda: any(s["state"] == "offline" for s in statuses()), "the offline status")
    last = [s for s in statuses() if s["state"] == "offline"][-1]
    assert "seq_last" in last and "outbox_depth" in last  # the box's own goodbye, not the Will
