"""Private mode at the box: the agent's switch, sent on the real broker, stops everything about the
call within 1 s; only the fact that the seat is private leaves the box."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from edge.box import Box
from edge.pipeline import load_vad_model
from edge.settings import EdgeSettings
from edge.source import read_wav
from miroir import wire
from tests._fixtures_broker import SITE_ID, wait_until

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BLOCK = 1024
RATE_HZ = 16_000


def _call_and_box(site, broker, peer, tmp_path, seconds: float, observe: bool = True, **settings):
    """Two AMI headsets (agent, line), a dashboard peer on the site (unless ``observe`` is false:
    the broker lets one client at a time be the dashboard), and box-a on the broker."""
    near = read_wav(SHARED / "ami-headsets" / "source0.wav", notice=False).samples
    far = read_wav(SHARED / "ami-headsets" / "source1.wav", notice=False).samples
    audio = np.stack([near, far])[:, : int(seconds * RATE_HZ)]
    dash = peer(site.dashboard, "dashboard") if observe else None
    for f in wire.site_filters(SITE_ID) if dash else ():
        dash.subscribe(f)
    cert = site.box("box-a")
    box = Box(EdgeSettings(site=SITE_ID, box="box-a", broker_port=broker.port,
                           ca_file=site.ca_cert, cert_file=cert.cert, key_file=cert.key,
                           state_dir=tmp_path / "state", **settings), load_vad_model(),
              version="test")
    return audio, dash, box


def test_no_metric_of_a_private_stretch_leaves_the_box(site, broker, peer, tmp_path) -> None:
    """The switch comes from the dashboard's own MQTT client (its ingest, with its certificate
    and ACL); the box goes private within 1 s of audio of the command, counted while the audio
    keeps flowing, in real time until the box has switched, as on a box (faster, 1 s of audio
    was 16 blocks of 2 to 5 ms: a broker slowed by a busy machine made it 1.216 s)."""
    from tests._fixtures_transport import ingest_for

    audio, _, box = _call_and_box(site, broker, peer, tmp_path, 40.0, observe=False)
    ingest = ingest_for(SITE_ID, tmp_path / "dash.db", broker.port, site.ca_cert, site.dashboard)
    seen: list[tuple[str, bytes]] = []  # everything the dashboard receives, as it arrives
    store_message = ingest._client.on_message

    def observe(client, userdata, message) -> None:
        seen.append((message.topic, bytes(message.payload)))
        store_message(client, userdata, message)

    ingest._client.on_message = observe
    box.publisher.start()
    wait_until(box.publisher.connected.is_set, "the box connected")
    sent: dict[str, float] = {}
    try:
        for i in range(0, audio.shape[1], BLOCK):
            t_s = i / RATE_HZ
            for action, at_s in (("private_on", 15.0), ("private_off", 25.0)):
                if action not in sent and t_s >= at_s:
                    assert ingest.publish_cmd("box-a", action)
                    sent[action] = t_s
            box.pump()
            box.step(audio[:, i:i + BLOCK])
            pending = bool(sent) and box.private != ("private_off" not in sent)  # a switch on its way
            time.sleep(BLOCK / RATE_HZ if pending else 0.002)  # (else paho's threads get a turn)
        wait_until(lambda: (box.pump(), box.outbox.depth() == 0)[1], "the outbox drained")
        box.publisher.stop(box.status_fields())
        wait_until(lambda: any(t.endswith("/status") and b'"offline"' in p for t, p in seen),
                   "the box's last status at the dashboard")
    finally:
        ingest.stop()
    box.outbox.close()

    got = [(t.rsplit("/", 1)[1], json.loads(p)) for t, p in seen]
    metrics = [m for kind, m in got if kind == "metrics"]
    events = [m for kind, m in got if kind == "event"]
    # where the box switched, in audio seconds: within 1 s of the command ("within 1 s")
    (private_from_s,) = [e["t_audio_s"] for e in events if e["name"] == "private_on"]
    (private_to_s,) = [e["t_audio_s"] for e in events if e["name"] == "private_off"]
    print(f"private after {private_from_s - sent['private_on']:.3f} s of audio, public again after "
          f"{private_to_s - sent['private_off']:.3f} s")
    assert 0.0 <= private_from_s - sent["private_on"] <= 1.0
    assert 0.0 <= private_to_s - sent["private_off"] <= 1.0
    # Before and after the private stretch the box reports; inside it, nothing about the call.
    assert any(m["t_start"] < private_from_s for m in metrics)
    assert any(m["t_start"] > private_to_s for m in metrics)
    # (a window that straddles a switch holds only the audio on its public side)
    inside = [m for m in metrics
              if m["t_start"] >= private_from_s + 1.0
              and m["t_start"] + m["window_s"] <= private_to_s]
    assert not inside, f"metrics of the private stretch left the box: {inside[:2]}"
    timed = [e for e in events if "t_audio_s" in e and e["name"] not in ("private_on", "private_off")
             and private_from_s + 1.0 < e["t_audio_s"] < private_to_s]
    assert not timed, f"events of the private stretch left the box: {timed[:2]}"
    names = [e["name"] for e in events]
    assert "private_on" in names and "private_off" in names
    statuses = [m for kind, m in got if kind == "status"]
    assert any(s.get("private") is True for s in statuses)
    assert statuses[-1]["private"] is False


def test_control_socket_drives_private_mode_and_call_state(site, broker, peer, tmp_path) -> None:
    """The front panel's button and a CTI connector, through the box's local control socket."""
    import socket

    control = tmp_path / "run" / "control"
    audio, dash, box = _call_and_box(site, broker, peer, tmp_path, 12.0, control_socket=control,
                                     control_group="no-such-group-here")
    panels: list[dict] = []

    def send(text: bytes) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(text, str(control))

    def blocks():
        sent = set()
        for i in range(0, audio.shape[1], BLOCK):
            t_s = i / RATE_HZ
            if t_s >= 3.0 and "a" not in sent:
                sent.add("a")
                assert control.is_socket() and control.stat().st_mode & 0o777 == 0o600
                send(b"private toggle")     # the panel's button
                send(b"call hold")          # the softphone
                send(b"rm -rf /")           # junk: refused and counted
                send(b"x" * 4096)           # too long: refused and counted
            if t_s >= 6.0 and "b" not in sent:
                sent.add("b")
                panels.append(json.loads((control.parent / "panel.json").read_text()))
                send(b"private toggle")
                send(b"call active")
            yield audio[:, i:i + BLOCK]
            time.sleep(0.002)  # paho's thread gets its turn

    box.run(blocks())
    assert not control.exists(), "the socket file is removed at exit"
    assert panels == [{"online": True, "private": True, "identifying": False}]
    assert box.cmd_refused == 2 and not box.private and box.call_state == "active"
    wait_until(lambda: any(t.endswith("/status") and json.loads(p)["state"] == "offline"
                           for t, p in dash.messages), "the final status")
    got = [(t.rsplit("/", 1)[1], json.loads(p)) for t, p in dash.messages]
    names = [m["name"] for kind, m in got if kind == "event"]
    assert names.count("private_on") == 1 and names.count("private_off") == 1
    states = [m for kind, m in got if kind == "status"]
    private = [s for s in states if s.get("private") is True]
    # the hold set during the private call is not shown while private (it would date the call)
    assert private and all(s["call_state"] == "idle" for s in private), private
    assert states[-1]["cmd_refused"] == 2 and states[-1]["call_state"] == "active"


def test_control_socket_survives_its_directory_going_away(tmp_path) -> None:
    """Another unit taking /run/miroir away must not stop the agent (found by the qemu proof)."""
    from edge.control import ControlSocket

    run = tmp_path / "run"
    control = ControlSocket(run / "control")
    control.write_panel(online=True, private=False, identifying=False)
    assert json.loads((run / "panel.json").read_text())["online"] is True
    for p in run.iterdir():
        p.unlink()
    run.rmdir()
    control.write_panel(online=True, private=True, identifying=False)
    control.write_panel(online=True, private=False, identifying=False)
    assert control.panel_errors == 2 and control.take() == []
    control.close()


def test_a_control_socket_closed_leaves_the_socket_another_agent_bound_since(tmp_path) -> None:
    """A stray second agent on the same state directory binds the control socket's path (the
    first one's file replaced): when the first stops, its close removed the path, the second's
    socket, and the front panel's button and the CTI connector reached nothing (measured: the
    second's socket file gone, its sends refused with ENOENT). A close now removes only the socket
    it bound (its device and inode); the second's own close still removes it. (An agent no longer
    takes a live socket over, test_box_capture's second agent on another state directory: the
    path is taken here as another program could, the first's file removed.)"""
    import socket

    from edge.control import ControlError, ControlSocket

    path = tmp_path / "run" / "control"
    first = ControlSocket(path)
    with pytest.raises(ControlError, match="another agent listens on it"):
        ControlSocket(path)
    assert path.is_socket()
    path.unlink()
    second = ControlSocket(path)  # takes the path over
    first.close()
    assert path.is_socket(), "the second agent's socket was removed by the first's close"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.sendto(b"identify", str(path))
    assert [text for text, _ in second.take()] == ["identify"]
    second.close()
    assert not path.exists()


def test_private_mode_ends_open_cues_and_keeps_the_call_state_for_later() -> None:
    """Going private closes the open cues on the wire (cue_off before private_on); a hold set by
    the softphone during the private call holds after it."""
    from edge.pipeline import Pipeline
    from edge.signals import Tick

    pipe = Pipeline(load_vad_model())
    metrics = {"window_s": 1.0, "in_call": True, "far_kind": "speech", "near_signal": "ok",
               "far_signal": "ok", "near_speech_ratio": 1.0, "near_talking": True}
    for k in range(32):  # a 32 s monologue, as the conversation stage would report it
        pipe.signals(Tick(t_s=float(k), metrics={**metrics, "monologue_s_current": float(k)}))
    assert "monologue" in pipe.signals.active
    out = [(m.body["name"], m.body.get("cue")) for m in pipe.set_private(True)]
    assert out == [("cue_off", "monologue"), ("private_on", None)]
    pipe.call_state("hold")  # the softphone, while private: nothing computed, the state kept
    tick = Tick(t_s=40.0, metrics=metrics)
    assert pipe.signals.suppressed(tick) != "hold"
    assert [m.body["name"] for m in pipe.set_private(False)] == ["private_off"]
    assert pipe.signals.suppressed(tick) == "hold"
    pipe.call_state("active")
    assert pipe.signals.suppressed(tick) == ""


def test_a_stale_private_off_does_not_end_the_private_call_the_agent_started_since(tmp_path) -> None:
    """A state command resent long after it was sent (the dashboard's connection broke before the
    broker acknowledged it) is refused and counted: it must not undo what the agent did since."""
    box = Box(EdgeSettings(site="site-a", box="box-a", broker_port=9, state_dir=tmp_path / "state"),
              load_vad_model(), version="test")

    def send(action: str, age_s: float, **extra: object) -> str:
        msg = wire.cmd_message("site-a", "box-a", action, time.time() - age_s, **extra)
        return box.handle_command(box.publisher.cmd_topic, wire.encode("cmd", msg))

    assert box.answer_local("private on")[0] == "private_on" and box.private
    assert send("private_off", 300.0) == "refused" and box.private
    assert send("call_state", 90.0, call_state="hold") == "refused" and box.call_state == "idle"
    assert send("private_off", -300.0) == "refused" and box.private  # a clock far ahead
    assert box.status_fields()["cmd_refused"] == 3
    assert send("identify", 300.0) == "identify"  # harmless when late: blinks the LED
    assert send("private_off", 2.0) == "refused" and box.private  # sent before the agent's button
    assert send("private_off", 0.0) == "private_off" and not box.private
    assert box.answer_local("private on")[0] == "private_on"
    box.outbox.close()
    box = Box(EdgeSettings(site="site-a", box="box-a", broker_port=9, state_dir=tmp_path / "state"),
              load_vad_model(), version="test")  # a restart: private, since the button
    assert box.private and send("private_off", 2.0) == "refused" and box.private
    assert send("private_off", 0.0) == "private_off" and not box.private
    box.outbox.close()


def test_an_oversized_local_command_is_refused_as_too_long(tmp_path, caplog) -> None:
    """A CTI connector that sends a long datagram (several commands in one, a JSON document) reads
    in the box's journal that it was too long, not that it sent an empty command ''."""
    import logging
    import socket

    from edge.control import ControlSocket

    box = Box(EdgeSettings(site="site-a", box="box-a", broker_port=9, state_dir=tmp_path / "state"),
              load_vad_model(), version="test")
    control = ControlSocket(tmp_path / "run" / "control")
    padded = b"call hold" + "\x85".encode() * 200  # NEL: whitespace to str.split()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        for datagram in (b"call active\n" * 30, padded, b"\xff" * 200, b"call hold"):
            sock.sendto(datagram, str(control.path))
    with caplog.at_level(logging.WARNING, logger="edge.box"):
        done = [box.answer_local(text)[0] for text, _ in control.take()]
    control.close()
    box.outbox.close()
    assert done == ["refused", "refused", "refused", "call_state"]
    assert box.call_state == "hold" and box.cmd_refused == 3
    refusals = [r.getMessage() for r in caplog.records]
    assert len(refusals) == 3
    assert "over 256 bytes" in refusals[0] and "over 256 bytes" in refusals[1], refusals
    assert "unknown local command '\\udcff" in refusals[2], refusals  # 200 bytes: not too long
    assert not [r for r in refusals if "command ''" in r], refusals


def test_the_cti_example_of_docs_wire_md_runs_on_the_box_image(tmp_path) -> None:
    """docs/wire.md's shell example for a CTI connector, run as written (the socket's path aside)
    and using only what the box image installs: it sets the call state through the real socket
    and prints the agent's answer."""
    import re
    import shlex
    import subprocess

    from edge.control import ControlSocket

    repo = Path(__file__).resolve().parents[1]
    text = " ".join((repo / "docs" / "wire.md").read_text().split())
    example = re.search(r"A CTI connector in a shell[^:]*:\s*`([^`]+)`", text)
    assert example, "docs/wire.md has no CTI connector example"
    packages = set()
    for listing in (repo / "firmware" / "stage-miroir" / "00-packages").iterdir():
        packages |= {w for line in listing.read_text().splitlines()
                     if not line.startswith("#") for w in line.split()}
    programs = [shlex.split(part)[0] for part in example.group(1).split("|")]
    missing = [p for p in programs if p not in packages | {"printf", "echo"}]  # shell builtins
    assert not missing, f"the example needs {missing}, which the box image does not install"
    box = Box(EdgeSettings(site="site-a", box="box-a", broker_port=9, state_dir=tmp_path / "state"),
              load_vad_model(), version="test")
    box.control = ControlSocket(tmp_path / "control")
    command = example.group(1).replace("/run/miroir/control", str(box.control.path))
    proc = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        box.pump()  # the agent's loop: takes the command, answers it
    out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0 and out == "ok call hold\n", out
    assert box.call_state == "hold"
    box.control.close()
    box.outbox.close()


def test_a_cti_connector_restores_the_call_state_after_the_box_restarts(site, broker, peer,
                                                                        tmp_path) -> None:
    """docs/wire.md's advice to a CTI connector, on the real box and broker: the agent restarts
    in the middle of a held call and comes back idle; a socket connected before the restart fails;
    the state sent again (twice) holds the call once more, with one call start and one status."""
    import socket

    control = tmp_path / "run" / "control"
    audio, dash, first = _call_and_box(site, broker, peer, tmp_path, 6.0, control_socket=control,
                                       control_group=None, call_start_on_speech=False)
    connected = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def send(text: bytes) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(text, str(control))

    def blocks(plan: dict[float, list[bytes]]):
        for i in range(0, audio.shape[1], BLOCK):
            for at_s in [at_s for at_s in plan if i / RATE_HZ >= at_s]:
                for text in plan.pop(at_s):
                    send(text)
            yield audio[:, i:i + BLOCK]
            time.sleep(0.002)  # paho's thread gets its turn

    def on_socket():
        for k, block in enumerate(blocks({1.0: [b"call active"], 2.0: [b"call hold"]})):
            if k == 1:  # the socket is bound once the box runs
                connected.connect(str(control))
            yield block

    first.run(on_socket())
    assert first.call_state == "hold"
    _, _, again = _call_and_box(site, broker, peer, tmp_path, 6.0, observe=False,
                                control_socket=control, control_group=None,
                                call_start_on_speech=False)
    assert again.call_state == "idle"  # no call state across a restart (private mode is kept)

    def offline() -> int:
        return sum(t.endswith("/status") and json.loads(p)["state"] == "offline"
                   for t, p in dash.messages)

    wait_until(lambda: offline() == 1, "the first run's final status")
    seen = len(dash.messages)
    failed: list[str] = []

    def resent():
        for k, block in enumerate(blocks({1.0: [b"call hold"], 3.0: [b"call hold"]})):
            if k == 2:
                try:
                    connected.send(b"call hold")
                except OSError as exc:
                    failed.append(type(exc).__name__)
            yield block

    again.run(resent())
    connected.close()
    assert failed, "a socket connected to the agent before its restart still sends"
    assert again.call_state == "hold" and again.cmd_refused == 0
    wait_until(lambda: offline() == 2, "the restarted box's final status")
    got = [(t.rsplit("/", 1)[1], json.loads(p)) for t, p in dash.messages[seen:]]
    starts = [m for kind, m in got if kind == "event" and m["name"] == "call_start"]
    held = [m for kind, m in got if kind == "status" and m.get("call_state") == "hold"]
    assert len(starts) == 1, starts
    assert len(held) == 2, held  # the change, then the last status at the stop: none for the repeat


def test_a_softphone_s_idle_ends_a_call_the_prospect_s_speech_started(ami_pair, tmp_path) -> None:
    """docs/cues.md: a connector that sets the call state to idle at the hang-up ends the call
    there. On a site where speech starts calls, the box's call state is already ``idle`` (its
    start, or the last hang-up): the idle sent through the real socket at 15 s must end the call
    then, once, even when a second connector (the dashboard's ``cmd``) relays the same hang-up;
    sent again with no call in progress, it changes nothing."""
    import socket

    from edge.control import ControlSocket

    near, far = ami_pair(30)
    audio = np.stack([near, far]).astype(np.float32) / 32768.0
    box = Box(EdgeSettings(site="site-a", box="box-a", broker_port=9, state_dir=tmp_path / "state"),
              load_vad_model(), version="test")
    box.control = ControlSocket(tmp_path / "run" / "control")
    hang_up_s = 15.0
    done: list[str] = []
    for i in range(0, audio.shape[1], BLOCK):
        if i / RATE_HZ >= hang_up_s and not done:
            assert box.pipeline.conversation.in_call  # the prospect's speech started it at 0 s
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"call idle", str(box.control.path))
            box.pump()  # the socket's idle
            msg = wire.cmd_message("site-a", "box-a", "call_state", time.time(), call_state="idle")
            done.append(box.handle_command(box.publisher.cmd_topic, wire.encode("cmd", msg)))
        box.step(audio[:, i:i + BLOCK])
    box.control.close()
    events = [json.loads(p) for _, kind, p in box.outbox.pending(limit=100_000) if kind == "event"]
    box.outbox.close()
    ends = [(round(e["t_audio_s"], 1), e["call_end_reason"]) for e in events
            if e["name"] == "call_end" and e["call_end_reason"] != "end_of_stream"]
    assert ends == [(hang_up_s, "signal")], ends
    assert done == ["call_state"] and box.cmd_refused == 0


def _replaying_agent(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """The real `miroir edge run`, replaying an AMI headset pair in a loop with no broker: the
    process, its control socket's path and the file its stderr (the journal) goes to."""
    control = tmp_path / "run" / "control"
    config = tmp_path / "box.toml"
    config.write_text(f'site = "site-a"\nbox = "box-a"\nbroker_port = 9\n'
                      f'state_dir = "{tmp_path / "state"}"\ncontrol_socket = "{control}"\n'
                      f'control_group = "no-such-group-here"\n')
    journal = tmp_path / "journal.log"
    with journal.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "miroir", "edge", "run", "--config", str(config), "--replay",
             str(SHARED / "ami-headsets" / "source0.wav"),
             str(SHARED / "ami-headsets" / "source1.wav"), "--fast", "--loop"],
            stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    return proc, control, journal


def test_a_flood_of_bad_local_commands_is_counted_not_written_line_by_line(tmp_path) -> None:
    """A connector gone wrong sends thousands of bad commands to the real agent (``miroir edge
    run``, replaying real speech): every one is refused and counted, the agent runs on and ends
    cleanly, and its journal holds a few of them and their total, not a line for each (journald
    would drop the agent's own lines past its rate limit, and the card would take every one)."""
    import signal
    import socket

    proc, control, journal = _replaying_agent(tmp_path)
    sent = 3000
    try:
        wait_until(control.is_socket, "the agent's control socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(30.0)  # a full queue waits for the agent to drain it
            for k in range(sent):
                sock.sendto(b"call ringing %d" % k, str(control))
            sock.sendto(b"identify", str(control))
        wait_until(lambda: not (control.parent / "panel.json").exists()
                   or json.loads((control.parent / "panel.json").read_text())["identifying"],
                   "the identify after the flood")
        assert proc.poll() is None, "the agent stopped"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    text = journal.read_text()
    assert code == 0, text[-2000:]
    lines = [line for line in text.splitlines() if "local command" in line]
    print(f"{len(lines)} journal line(s) for {sent} bad local commands")
    assert len(lines) <= 10, [*lines[:3], "...", *lines[-3:]]
    assert "unknown local command 'call ringing 0'" in lines[0], lines[0]
    assert f"{sent} local command(s) refused" in text, lines[-3:]


def test_a_connector_that_binds_its_socket_reads_the_agent_s_answer(tmp_path) -> None:
    """A CTI connector must know whether the agent took its command: one that binds its own socket
    (an autobound abstract address, ``bind("")``) reads the real agent's answer to each datagram,
    ``ok ...`` or ``refused: <why>``; one that went away before the answer costs the agent nothing."""
    import signal
    import socket

    proc, control, journal = _replaying_agent(tmp_path)
    answers: dict[bytes, str] = {}
    try:
        wait_until(control.is_socket, "the agent's control socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as gone:
            gone.bind("")
            gone.sendto(b"call ringing", str(control))  # closed before the answer
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind("")
            sock.settimeout(10.0)
            for text in (b"call hold", b"call hold", b"private toggle", b"call ringing",
                         b"\xff\xfe", b"private toggle"):
                sock.sendto(text, str(control))
                answers[text] = answers.get(text, "") + sock.recv(1024).decode() + "|"
        assert proc.poll() is None, "the agent stopped"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, journal.read_text()[-2000:]
    assert answers[b"call hold"] == "ok call hold|ok call hold|", answers
    assert answers[b"private toggle"] == "ok private on|ok private off|", answers
    assert answers[b"call ringing"].startswith("refused: unknown local command 'call ringing': "
                                               "use 'private on|off|toggle'"), answers
    assert answers[b"\xff\xfe"].startswith("refused: unknown local command '\\udcff\\udcfe'"), answers


def test_each_call_state_the_agent_applies_is_in_its_journal_a_flipper_is_counted(tmp_path
                                                                                  ) -> None:
    """Site IT could not see when the softphone put a call on hold: the real agent applied
    ``call hold`` from its control socket and wrote nothing (measured: no journal line for any of
    42 changes). Each change is one INFO line now (a state sent again is none), none while the
    agent is private (the status hides the call state then: it would date the private call), and
    a connector that flips hold and active is written a few times, then counted (miroir/journal.py)."""
    import signal
    import socket

    from miroir.journal import REFUSALS_LOGGED

    proc, control, journal = _replaying_agent(tmp_path)
    sent = ["call hold", "call hold", "call active", "private on", "call hold", "private off",
            *(["call active", "call hold"] * 20)]
    try:
        wait_until(control.is_socket, "the agent's control socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind("")
            sock.settimeout(10.0)
            for text in sent:
                sock.sendto(text.encode(), str(control))
                assert sock.recv(1024).decode().startswith("ok "), text
        assert proc.poll() is None, "the agent stopped"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    text = journal.read_text()
    assert code == 0, text[-2000:]
    lines = [line.split(" INFO edge.box: ", 1)[-1] for line in text.splitlines()
             if "call state" in line]
    changes = 2 + 40  # idle -> hold -> active, then the 40 flips; none repeated, none private
    assert lines[:3] == ["call state applied: hold (was idle; from the control socket)",
                         "call state applied: active (was hold; from the control socket)",
                         "call state applied: active (was hold; from the control socket)"], lines
    assert len(lines) == REFUSALS_LOGGED + 2, lines
    assert lines[-1].startswith(f"{changes} call states applied in "), lines
    assert lines[-1].endswith(f" s ({changes - REFUSALS_LOGGED} not written one by one)"), lines


def test_a_cti_that_flips_hold_and_active_keeps_the_calls_hold_list_bounded(site, broker, peer,
                                                                           tmp_path) -> None:
    """A CTI connector that flips hold and active (a softphone's every media event) without
    ever ending the call, on the real box and broker: each flip kept the call open and added a
    hold to its list, never trimmed until the call ended (150 flips: 75 holds; at one flip a
    64 ms block, 7.1 h: 200,000 holds, 25.6 MB, and each second's metrics 38.5 ms on a PC
    while the agent's turn is open). Past MAX_HOLDS, the holds no question can reach any more
    (ended before every open turn) go, then the two closest together merge; the call's hold
    time, summed as it passes, stays exact."""
    from edge.conversation import MAX_HOLDS

    audio, dash, box = _call_and_box(site, broker, peer, tmp_path, 30.0,
                                     call_start_on_speech=False)
    box.publisher.start()
    wait_until(box.publisher.connected.is_set, "the box connected")
    conversation = box.pipeline.conversation
    blocks = (audio[:, i:i + BLOCK] for i in range(0, audio.shape[1], BLOCK))
    applied_s: list[tuple[str, float]] = []
    most = [0]  # the longest the call's hold list was

    def send(state: str) -> None:
        """Publish the state as the dashboard does, then run audio until the box took it."""
        for k in range(200):
            if k % 25 == 0:  # again if the box's subscription was not in place yet
                msg = wire.cmd_message(SITE_ID, "box-a", "call_state", time.time(),
                                       call_state=state)
                dash.publish(box.publisher.cmd_topic, wire.encode("cmd", msg))
            box.step(next(blocks))
            call = conversation._call
            most[0] = max(most[0], len(call.holds) if call is not None else 0)
            if box.call_state == state:
                applied_s.append((state, conversation._clock_s))
                return
        raise AssertionError(f"the box did not take {state}")

    flips = 3 * MAX_HOLDS
    for k in range(flips):
        send(("hold", "active")[k % 2])
    send("idle")
    for block in blocks:  # the call's end is final reorder_s later
        box.step(block)
    assert most[0] <= MAX_HOLDS, most[0]
    held_s = sum(b - a for (s, a), (_, b) in pairwise(applied_s)
                 if s == "hold")

    def ends() -> list[dict]:
        return [m for t, p in list(dash.messages) if t.endswith("/event")
                and (m := json.loads(p))["name"] == "call_end"]

    wait_until(lambda: (box.pump(), ends())[1], "the call's end at the dashboard")
    (end,) = ends()
    assert end["call_hold_s"] == round(held_s, 3), (end["call_hold_s"], held_s)
    assert held_s > 0.064 * MAX_HOLDS
    box.publisher.stop(box.status_fields())
    box.outbox.close()


def test_a_replayed_command_never_undoes_what_the_agent_did_since(site, broker, peer,
                                                                  tmp_path) -> None:
    """The dashboard's MQTT session outlives a broken connection (clean_start off): paho sends a
    command the broker had not acknowledged again, the same bytes, once it is back, seconds later.
    On the real broker and box: the supervisor's ``private_off`` (taken), the agent's own button
    (private on), then that ``private_off`` again 2 s later. The box ended the agent's private call
    and stored its metrics (within the 60 s of CMD_MAX_AGE_S); the same for a CTI ``call_state``
    replayed over the softphone's later hold. A state command older than the state's last change
    is refused and counted now, whoever made that change."""
    import socket

    from edge.control import ControlSocket

    control = tmp_path / "run" / "control"
    audio, dash, box = _call_and_box(site, broker, peer, tmp_path, 40.0, control_socket=control,
                                     control_group=None)
    blocks = (audio[:, i:i + BLOCK] for i in range(0, audio.shape[1], BLOCK))
    box.publisher.start()
    box.control = ControlSocket(control)
    wait_until(box.publisher.connected.is_set, "the box connected")

    def publish(action: str, **extra: object) -> bytes:
        payload = wire.encode("cmd", wire.cmd_message(SITE_ID, "box-a", action, time.time(),
                                                      **extra))
        dash.publish(box.publisher.cmd_topic, payload)
        return payload

    def local(text: bytes) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(text, str(control))

    def run_until(done, what: str) -> None:
        for _ in range(100):  # 6.4 s of audio at most
            box.step(next(blocks))
            if done():
                return
            time.sleep(0.01)  # paho's thread gets its turn
        raise AssertionError(f"the box did not take {what}")

    for _ in range(10):  # again until the box's subscription is in place
        publish("private_on")
        if any(box.step(next(blocks)) or box.private for _ in range(16)):
            break
    assert box.private
    resent_off = publish("private_off")
    run_until(lambda: not box.private, "private_off")
    local(b"private on")  # the agent's button
    run_until(lambda: box.private, "the agent's private on")
    stored = box.outbox.last_seq
    refused = box.cmd_refused
    dash.publish(box.publisher.cmd_topic, resent_off)  # paho's resend, 2 s later at most
    run_until(lambda: box.cmd_refused > refused or not box.private, "the resent private_off")
    for _ in range(16):  # a second of audio
        box.step(next(blocks))
    assert box.private, "a resent private_off ended the agent's private call"
    assert box.outbox.last_seq == stored, "metrics of the private call entered the outbox"
    local(b"private off")
    run_until(lambda: not box.private, "the agent's private off")
    resent_active = publish("call_state", call_state="active")
    run_until(lambda: box.call_state == "active", "call_state active")
    local(b"call hold")  # the softphone, locally
    run_until(lambda: box.call_state == "hold", "the local hold")
    refused = box.cmd_refused
    dash.publish(box.publisher.cmd_topic, resent_active)
    run_until(lambda: box.cmd_refused > refused or box.call_state != "hold",
              "the resent call_state")
    assert box.call_state == "hold" and box.cmd_refused == refused + 1
    publish("call_state", call_state="active")  # a new command is taken, as ever
    run_until(lambda: box.call_state == "active", "a new call_state active")
    assert box.status_fields()["cmd_refused"] == 2
    box.control.close()
    box.publisher.stop(box.status_fields())
    box.outbox.close()


def test_a_control_socket_path_that_names_a_file_never_deletes_it(tmp_path) -> None:
    """``control_socket`` set to a file's path (a typo: the outbox, the settings file): the real
    agent deleted the file to bind its socket there ("an old socket file is replaced"), measured
    on ``miroir edge run``: the file was gone. Only a socket is replaced now; anything else stays,
    the journal names the setting and the file, and the agent runs on without the socket."""
    import signal

    kept = tmp_path / "run" / "control"
    kept.parent.mkdir()
    kept.write_text("the operator's notes\n")
    proc, control, journal = _replaying_agent(tmp_path)
    assert control == kept
    try:
        wait_until(lambda: "no control socket" in journal.read_text() or proc.poll() is not None,
                   "the agent's word on its control socket")
        assert proc.poll() is None, journal.read_text()[-2000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    text = journal.read_text()
    assert code == 0, text[-2000:]
    assert kept.read_text() == "the operator's notes\n"
    assert f"no control socket at {kept}: control_socket {kept} is not a socket: " \
           "left as it is" in text, text[-2000:]
    import socket

    from edge.control import ControlSocket

    kept.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stale:  # a killed agent's socket
        stale.bind(str(kept))
    control_socket = ControlSocket(kept)  # is replaced, as before
    assert kept.is_socket()
    control_socket.close()


def _agent_on_broker(site, broker, tmp_path: Path, extra: str = "",
                     journal_name: str = "journal.log") -> tuple[subprocess.Popen[bytes], Path]:
    """The real `miroir edge run` as box-a on the site's broker (its certificate, the ACL),
    replaying an AMI headset pair in a loop (``extra``: more settings lines): the process and the
    file its stderr goes to."""
    cert = site.box("box-a")
    config = tmp_path / "box.toml"
    config.write_text(
        f'site = "{SITE_ID}"\nbox = "box-a"\nbroker_host = "127.0.0.1"\n'
        f'broker_port = {broker.port}\nca_file = "{site.ca_cert}"\ncert_file = "{cert.cert}"\n'
        f'key_file = "{cert.key}"\nstate_dir = "{tmp_path / "state"}"\n{extra}')
    journal = tmp_path / journal_name
    with journal.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "miroir", "edge", "run", "--config", str(config), "--replay",
             str(SHARED / "ami-headsets" / "source0.wav"),
             str(SHARED / "ami-headsets" / "source1.wav"), "--fast", "--loop"],
            stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    return proc, journal


def test_a_flood_of_bad_mqtt_commands_is_counted_not_written_line_by_line(
        site, broker, peer, tmp_path) -> None:
    """A dashboard gone wrong sends thousands of commands the box refuses (here: addressed to
    another box) on box-a's cmd topic, through the real broker: the real agent refuses and counts
    every one (cmd_refused in its status), runs on, and its journal holds a few of them and their
    total, not a line for each, as for the control socket's (3000 lines before)."""
    import signal

    dash = peer(site.dashboard, "dashboard")
    status_topic = wire.topic(SITE_ID, "box-a", "status")
    assert dash.subscribe(status_topic) == 1
    proc, journal = _agent_on_broker(site, broker, tmp_path)
    sent = 3000
    cmd = wire.topic(SITE_ID, "box-a", "cmd")
    try:
        dash.wait_for(lambda: any(t == status_topic and b'"online"' in p
                                  for t, p in dash.messages), "box-a online")
        for k in range(sent):
            bad = wire.cmd_message(SITE_ID, "box-b", "identify", time.time() + k * 1e-6)
            dash.client.publish(cmd, wire.encode("cmd", bad), qos=1)
        # then one it takes: the status it publishes at once counts what came before
        dash.publish(cmd, wire.encode("cmd", wire.cmd_message(SITE_ID, "box-a", "private_on",
                                                             time.time())))

        def refused_then_private() -> int | None:
            for t, p in dash.messages:
                status = json.loads(p) if t == status_topic else {}
                if status.get("private"):
                    return int(status["cmd_refused"])
            return None
        counted = dash.wait_for(refused_then_private, "the status after the private_on")
        assert proc.poll() is None, "the agent stopped"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    text = journal.read_text()
    assert code == 0, text[-2000:]
    assert counted == sent
    lines = [line for line in text.splitlines() if "command" in line and "refused" in line]
    print(f"{len(lines)} journal line(s) for {sent} refused MQTT commands")
    assert len(lines) <= 10, [*lines[:3], "...", *lines[-3:]]
    assert f"command for {SITE_ID}/box-b" in lines[0], lines[0]
    assert f"{sent} MQTT command(s) refused" in text, lines[-3:]


def test_a_reload_sent_again_does_not_restart_the_box_again(site, broker, peer, tmp_path) -> None:
    """The same `reload` again (paho's QoS 1 resend after a broken connection, the same bytes;
    or the message published twice) restarted the real agent once more (exit 75 both times):
    the box keeps the time of the last reload it applied in its state folder, across the
    restart, and refuses one sent no later (counted in cmd_refused, logged); a newer one
    restarts it."""
    import signal

    dash = peer(site.dashboard, "dashboard")
    status_topic = wire.topic(SITE_ID, "box-a", "status")
    assert dash.subscribe(status_topic) == 1
    cmd = wire.topic(SITE_ID, "box-a", "cmd")

    def send(action: str, ts: float | None = None) -> bytes:
        payload = wire.encode("cmd", wire.cmd_message(SITE_ID, "box-a", action,
                                                      time.time() if ts is None else ts))
        dash.publish(cmd, payload)
        return payload

    def statuses() -> list[dict]:
        return [json.loads(p) for t, p in list(dash.messages) if t == status_topic and p]

    def started(n: int) -> None:  # the n-th online status since the test began
        dash.wait_for(lambda: len(_onlines(statuses())) >= n, f"start {n} online")

    no_call = "call_start_on_speech = false\n"  # no call in progress: a reload restarts at once
    proc, journal = _agent_on_broker(site, broker, tmp_path, no_call)
    try:
        started(1)
        reload = send("reload")
        assert proc.wait(timeout=60) == 75, journal.read_text()[-2000:]
        # systemd starts it again (RestartForceExitStatus=75); the same reload comes again
        proc, journal = _agent_on_broker(site, broker, tmp_path, no_call, "journal-2.log")
        started(2)
        seen = len(statuses())
        dash.publish(cmd, reload)
        send("forget_baselines")  # its status, published at once, counts what came before
        after = dash.wait_for(lambda: _stop_or_refusal(statuses()[seen:]),
                              "a status after the reload sent again")
        assert after["state"] == "online", f"the box restarted again: {after}"
        assert after["cmd_refused"] == 1 and proc.poll() is None
        text = journal.read_text()
        assert "reload sent at" in text and "not after the last reload" in text, text[-2000:]
        send("reload")  # a newer one is applied
        assert proc.wait(timeout=60) == 75, journal.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def _stop_or_refusal(statuses: list[dict]) -> dict | None:
    """The first status that says the box stopped (offline) or counts a refused command."""
    return next((s for s in statuses if s["state"] == "offline" or s["cmd_refused"]), None)


def _onlines(statuses: list[dict]) -> list[dict]:
    """The first online status after each offline one (one per start of the agent)."""
    out, offline = [], True
    for status in statuses:
        if status["state"] == "online" and offline:
            out.append(status)
        offline = status["state"] == "offline"
    return out


def test_a_reload_dated_ahead_is_refused_not_kept_to_refuse_every_later_one(
        site, broker, peer, tmp_path) -> None:
    """A `reload` dated a day ahead (a sender's clock off, a ts typed by hand: the wire takes
    any up to 2100) restarted the real agent and was kept as the last reload applied, so every
    reload sent after it with the right time was refused as a resend until that day (exit 75,
    then the next reload refused). One sent more than CMD_MAX_AGE_S ahead of the box's clock is
    now refused as forget_baselines is (counted, logged), and the next reload restarts the box."""
    import signal

    dash = peer(site.dashboard, "dashboard")
    status_topic = wire.topic(SITE_ID, "box-a", "status")
    assert dash.subscribe(status_topic) == 1
    cmd = wire.topic(SITE_ID, "box-a", "cmd")

    def send(action: str, ts: float) -> None:
        dash.publish(cmd, wire.encode("cmd", wire.cmd_message(SITE_ID, "box-a", action, ts)))

    def statuses() -> list[dict]:
        return [json.loads(p) for t, p in list(dash.messages) if t == status_topic and p]

    proc, journal = _agent_on_broker(site, broker, tmp_path, "call_start_on_speech = false\n")
    try:
        dash.wait_for(lambda: _onlines(statuses()), "the box online")
        seen = len(statuses())
        send("reload", time.time() + 86400.0)
        send("forget_baselines", time.time())  # its status, published at once, counts the refusal
        after = dash.wait_for(lambda: _stop_or_refusal(statuses()[seen:]),
                              "a status after the reload dated ahead")
        assert after["state"] == "online", f"the box applied a reload a day ahead: {after}"
        assert after["cmd_refused"] == 1 and proc.poll() is None
        assert "reload sent 86400 s ahead" in journal.read_text(), journal.read_text()[-2000:]
        assert not (tmp_path / "state" / "last-reload").exists()
        send("reload", time.time())  # one with the right time is applied
        assert proc.wait(timeout=60) == 75, journal.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
