"""The box's SQLite outbox: sequence numbers, acknowledgement, overflow."""

import json

from edge.outbox import Outbox

BODY = {"near_speech_ratio": 0.25, "far_speech_ratio": 0.5, "talk_state": "silence"}


def test_sequence_survives_restart(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", "s", "b")
    seqs = [box.put("metrics", BODY)[0] for _ in range(3)]
    assert seqs == [1, 2, 3]
    box.ack([1, 2])
    box.close()
    box = Outbox(tmp_path / "o.sqlite", "s", "b")
    assert box.put("metrics", BODY)[0] == 4
    assert [s for s, _, _ in box.pending()] == [3, 4]
    payload = json.loads(box.pending()[0][2])
    assert payload["seq"] == 3 and payload["box"] == "b"


def test_acked_rows_kept_for_retention_then_purged(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", "s", "b", retention_s=60)
    box.put("metrics", BODY, ts=1000.0)
    box.put("metrics", BODY, ts=1100.0)
    box.ack([1, 2], ts=1100.0)
    assert box.depth() == 0 and box.depth_total() == 2
    assert box.purge(now=1130.0) == 1
    assert box.depth_total() == 1


def test_overflow_drops_acked_first_then_oldest_unsent(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", "s", "b", max_messages=5)
    for _ in range(5):
        box.put("metrics", BODY)
    box.ack([1, 2])
    for _ in range(2):
        box.put("metrics", BODY)      # evicts the two acked rows
    assert box.dropped == 0 and box.depth_total() == 5
    for _ in range(3):
        box.put("metrics", BODY)      # now evicts three unsent rows: counted
    assert box.dropped == 3
    assert [s for s, _, _ in box.pending()] == [6, 7, 8, 9, 10]
    box.close()
    assert Outbox(tmp_path / "o.sqlite", "s", "b").dropped == 3
