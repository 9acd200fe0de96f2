"""Updates while the site's broker is down: the real `miroir edge update`, a real agent (the box's
own Box class, its publisher and heartbeat) restarted on each release, a real Mosquitto stopped
and started by the test. A good release is never rolled back and flagged because of the broker."""

from __future__ import annotations

import json
import time

from edge.update import ROLLED_BACK_FILE, Updater
from tests._fixtures_update import Box
from tests.test_update import snapshot


def test_an_update_while_the_broker_is_down_changes_nothing_and_says_why(box: Box) -> None:
    """The broker down (maintenance) while IT updates: every box switched to the good release,
    waited 90 s for a message that could not go, rolled it back (exit 4, "failed its health
    check") and flagged it on the IT page. The running release must now show it reaches the
    broker first: it does not, so nothing changes (exit 5); once the broker is back, the same
    release installs. A running agent that is the one failing (the broker up) takes a release
    with --even-if-offline."""
    box.broker.stop()
    bundle = box.release("2.0")
    before, restarts = snapshot(box.root), box.restarts()
    done = box.update(bundle, "--health-timeout-s", "5")  # (the broker down: nothing can come)
    assert done.returncode == 5, done.stderr
    assert "cannot reach the broker" in done.stderr and "nothing changed" in done.stderr, done.stderr
    assert snapshot(box.root) == before and box.restarts() == restarts
    assert not (box.root / ROLLED_BACK_FILE).exists()
    back_ts = time.time()
    box.broker.start()
    box.restart()
    box.publishing("1.0", back_ts)
    done = box.update(bundle)
    assert done.returncode == 0, done.stderr
    assert Updater(box.root).current_version() == "2.0"

    box.stop_agent()
    done = box.update(box.release("2.1"), "--even-if-offline")
    assert done.returncode == 0, done.stderr
    assert Updater(box.root).current_version() == "2.1"


def test_the_broker_lost_during_the_check_is_not_taken_for_a_bad_release(box: Box) -> None:
    """The broker goes away right as the agent restarts on the new release: the release is put
    back, as before, yet reported as not checked (exit 5, no rolled-back flag for the IT page)
    rather than as failing its check; a release that cannot reach a broker that is there is
    still rolled back and flagged (exit 4)."""
    assert box.broker.pid is not None
    (box.work / "kill-broker").write_text(str(box.broker.pid))
    done = box.update(box.release("2.0"))
    assert done.returncode == 5, done.stderr
    assert "could not be checked" in done.stderr and "rolled back to 1.0" in done.stderr
    assert "failed its health check" not in done.stderr, done.stderr
    assert Updater(box.root).current_version() == "1.0"
    assert not (box.root / ROLLED_BACK_FILE).exists()

    back_ts = time.time()
    box.broker.start()
    box.restart()
    box.publishing("1.0", back_ts)
    unreachable = box.broker.port + 1  # an agent configured for a port nothing listens on
    done = box.update(box.release("2.1", port=unreachable))
    assert done.returncode == 4 and "failed its health check" in done.stderr, done.stderr
    assert Updater(box.root).current_version() == "1.0"
    assert json.loads((box.root / ROLLED_BACK_FILE).read_text())["version"] == "2.1"


def test_an_update_started_with_nohup_goes_on_when_its_terminal_hangs_up(box: Box) -> None:
    """`nohup miroir edge update` (IT's way to have an update outlive a dropped SSH session) was
    rolled back by the hang-up all the same: the update's own handler took SIGHUP over the
    ignored signal (exit 130, back on 1.0), where every other command leaves an ignored signal
    ignored. It now goes on, checks the release and commits it; SIGTERM still rolls back."""
    import signal

    proc = box.start_update(box.release("2.0"), "--soak-s", "6", nohup=True)
    assert proc.stderr is not None
    lines: list[str] = []
    for line in proc.stderr:
        lines.append(line)
        if "watching it run" in line:
            break
    assert lines and "watching it run" in lines[-1], lines
    proc.send_signal(signal.SIGHUP)  # the SSH session closed
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(lines) + err
    assert Updater(box.root).current_version() == "2.0"
