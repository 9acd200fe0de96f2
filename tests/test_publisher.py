"""The publisher's acknowledgement bookkeeping (one stage, paho's callbacks driven directly; the
real-broker tests in tests/test_transport.py prove delivery end to end)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from edge import publisher as pub_mod
from edge.outbox import Outbox
from edge.publisher import Publisher
from edge.settings import EdgeSettings

OK = SimpleNamespace(is_failure=False)
REFUSED = SimpleNamespace(is_failure=True)  # a v5 PUBACK reason such as 0x87 not authorised


@pytest.fixture()
def pub(monkeypatch: pytest.MonkeyPatch) -> Publisher:
    p = Publisher(EdgeSettings(site="s", box="b", broker_port=9))
    mids = iter(range(1, 10_000))
    monkeypatch.setattr(p.client, "publish", lambda *a, **k: SimpleNamespace(rc=0, mid=next(mids)))
    p.connected.set()
    return p


def test_an_old_ack_under_a_reused_id_acknowledges_nothing(pub: Publisher,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A retained status's PUBACK (no message of the outbox) is parked; when paho's ids wrap and a
    data message gets the same id, that old ack must not mark it delivered."""
    pub._on_publish(pub.client, None, 7, OK, None)  # the status's ack, mid 7
    time.sleep(0.01)
    monkeypatch.setattr(pub.client, "publish", lambda *a, **k: SimpleNamespace(rc=0, mid=7))
    assert pub.send(42, "metrics", b"{}")
    assert pub.take_acked() == [] and pub.in_flight() == {42}
    pub._on_publish(pub.client, None, 7, OK, None)  # its own ack
    assert pub.take_acked() == [42] and pub.in_flight() == set()


def test_an_ack_that_beats_send_still_counts(pub: Publisher, monkeypatch: pytest.MonkeyPatch) -> None:
    def publish(*a: Any, **k: Any) -> SimpleNamespace:
        pub._on_publish(pub.client, None, 3, OK, None)  # paho's thread acks before send() returns
        return SimpleNamespace(rc=0, mid=3)
    monkeypatch.setattr(pub.client, "publish", publish)
    assert pub.send(5, "metrics", b"{}")
    assert pub.take_acked() == [5] and pub.in_flight() == set()


def test_unacked_messages_stay_in_flight_across_a_reconnect_then_expire(
        pub: Publisher, monkeypatch: pytest.MonkeyPatch) -> None:
    """paho sends its unacknowledged messages again after a reconnection, under the same ids: the
    outbox must not send them a third time, unless no ack comes within INFLIGHT_EXPIRE_S."""
    for seq in (1, 2, 3):
        pub.send(seq, "metrics", b"{}")
    pub._on_connect(pub.client, None, None, OK, None)
    assert pub.in_flight() == {1, 2, 3}
    pub._on_publish(pub.client, None, 2, OK, None)  # paho's copy of seq 2 acknowledged
    assert pub.take_acked() == [2] and pub.in_flight() == {1, 3}
    monkeypatch.setattr(pub_mod, "INFLIGHT_EXPIRE_S", 0.0)
    assert pub.in_flight() == set()  # expired: the outbox sends 1 and 3 again


def test_a_message_the_broker_keeps_refusing_is_given_up_and_counted(pub: Publisher,
                                                                     tmp_path: Any) -> None:
    outbox = Outbox(tmp_path / "o.sqlite", "s", "b")
    seq, payload = outbox.put("metrics", {"talk_state": "silence"})
    for k in range(pub_mod.REFUSED_MAX):
        assert pub.take_given_up() == []
        pub.send(seq, "metrics", payload)
        pub._on_publish(pub.client, None, k + 1, REFUSED, None)
        assert pub.take_acked() == []
    given_up = pub.take_given_up()
    assert given_up == [seq]
    outbox.give_up(given_up)
    assert outbox.depth() == 0 and outbox.dropped == 1
    assert outbox.resend(seq) == 1  # kept for the retention window: a resend can try again
    outbox.give_up([seq])  # refused again: one message lost, counted once
    assert outbox.depth() == 0 and outbox.dropped == 1
    outbox.close()


@pytest.mark.parametrize("bad", ["missing key", "another box's key"])
def test_edge_run_with_unusable_tls_files_names_them_in_one_line(site, tmp_path: Any,
                                                                  bad: str) -> None:
    """`miroir edge run` with a key file that is not there, or not the certificate's: a one-line
    error naming the files (it was a traceback ending in a bare "[Errno 2] No such file or
    directory"), exit status 2."""
    import subprocess
    import sys
    from pathlib import Path

    cert = site.box("box-a")
    key = tmp_path / "gone.key" if bad == "missing key" else site.box("box-b").key
    config = tmp_path / "box.toml"
    config.write_text(f'site = "{site.site}"\nbox = "box-a"\nca_file = "{site.ca_cert}"\n'
                      f'cert_file = "{cert.cert}"\nkey_file = "{key}"\n'
                      f'state_dir = "{tmp_path / "state"}"\n')
    wav = Path(__file__).resolve().parents[2] / "shared" / "data" / "ami-headsets"
    proc = subprocess.run([sys.executable, "-m", "miroir", "edge", "run", "--config", str(config),
                           "--replay", str(wav / "source0.wav"), str(wav / "source1.wav"), "--fast"],
                          capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if "XNNPACK" not in ln]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("miroir: error: ") and str(key) in lines[0], lines[0]
