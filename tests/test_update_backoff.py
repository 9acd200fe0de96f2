"""Updates and the agent's reconnection back-off: the real `miroir edge update`, a real agent
restarted on each release and a real Mosquitto stopped and started by the test (the machinery of
``tests/_fixtures_update.py``; apart from ``tests/test_update_broker.py`` so that the two files
share the test workers)."""

from __future__ import annotations

import contextlib
import socket
import struct
import time

from edge.update import ROLLED_BACK_FILE, Updater
from tests._fixtures_transport import wait_for
from tests._fixtures_update import Box


def _attempts_until_backoff_of(port: int, gap_s: float, within_s: float) -> list[float]:
    """Stand in for the broker on ``port`` (accept, then reset: a broker that is not there) and
    return the times of the agent's connection attempts, up to the first one that came ``gap_s``
    or more after the one before (its back-off grown that long)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(8)
    listener.settimeout(1.0)
    seen: list[float] = []
    deadline = time.monotonic() + within_s
    try:
        while len(seen) < 2 or seen[-1] - seen[-2] < gap_s:
            assert time.monotonic() < deadline, f"agent's attempts: {seen}"
            with contextlib.suppress(TimeoutError):
                conn, _ = listener.accept()
                seen.append(time.monotonic())
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
    finally:
        listener.close()
    return seen


def test_an_update_right_after_a_broker_outage_is_not_refused_for_the_agents_backoff(
        box: Box) -> None:
    """After an outage of a minute the running agent waited 64 s before its next attempt (its
    reconnection back-off doubles 1, 2, 4... s up to 120 s: 120 s after two minutes), longer
    than the update's check that it reaches the broker (45 s here, 90 s on a box): an update
    started as the broker came back said it "cannot reach the broker" (exit 5), though the same
    command a minute later worked. The back-off now stops at 30 s, well within the check."""
    box.broker.stop()
    attempts = _attempts_until_backoff_of(box.broker.port, 25.0, 150.0)
    box.broker.start()
    done = box.update(box.release("2.0"), "--health-timeout-s", "45")
    assert done.returncode == 0, (done.stderr, attempts)
    assert Updater(box.root).current_version() == "2.0"


def test_a_release_that_waits_out_its_backoff_while_the_broker_comes_back_is_kept(
        box: Box) -> None:
    """The broker went away as the agent restarted on the new release and came back 35 s into
    its 40 s check (90 s on a box): the new agent, backing off (attempts 1, 3, 7, 15, 31, 61 s
    after its start), was still waiting when the check ended; the release was rolled back, and as
    the release put back reached the broker at once, flagged on the IT page as failed (exit 4),
    though it was good. The check now watches the broker's port itself: seen closed, the release
    gets the agent's longest back-off and a margin after its return (at most that much more).
    Here the check is 25 s and the broker back 22 s after the switch: after the agent's attempt
    at 15 s (up to 7 s of its start allowed), before the check ends, its next attempt (31 s)
    after."""
    assert box.broker.pid is not None
    (box.work / "kill-broker").write_text(str(box.broker.pid))
    restarts = box.restarts()
    proc = box.start_update(box.release("2.0"), "--health-timeout-s", "25")
    wait_for(lambda: box.restarts() > restarts, 60, "the switch to release 2.0")
    switched_s = time.monotonic()
    wait_for(lambda: time.monotonic() - switched_s >= 22, 60, "a 22 s outage")
    box.broker.start()
    err = proc.communicate(timeout=180)[1]
    assert proc.returncode == 0, err
    assert Updater(box.root).current_version() == "2.0"
    assert not (box.root / ROLLED_BACK_FILE).exists()
