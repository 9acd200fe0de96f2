"""A whole box: real PyAudio capture (ALSA file PCM) -> pipeline -> outbox -> real Mosquitto."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.box import Box
from edge.capture import CaptureConfig, CaptureSource
from edge.pipeline import analyze, load_vad_model
from edge.settings import EdgeSettings
from miroir import wire
from tests._fixtures_broker import SITE_ID, wait_until
from tests._fixtures_capture import NEAR_WAV, read_pcm16, write_raw

SECONDS = 12


def test_captured_call_reaches_the_broker_as_metrics_only(
        site, broker, peer, alsa_home, ami_pair, tmp_path: Path) -> None:
    near, far = ami_pair(SECONDS)
    alsa_home.define("headset", write_raw(tmp_path / "headset.raw", near, far))
    dash = peer(site.dashboard, "dashboard")
    for f in wire.site_filters(SITE_ID):
        dash.subscribe(f)

    state = tmp_path / "state"
    settings = EdgeSettings(site=SITE_ID, box="box-a", broker_host="127.0.0.1",
                            broker_port=broker.port, ca_file=site.ca_cert,
                            cert_file=site.box("box-a").cert, key_file=site.box("box-a").key,
                            state_dir=state)
    model = load_vad_model()
    box = Box(settings, model, version="test")
    capture = CaptureSource(CaptureConfig(device="headset", realtime=False,
                                          max_seconds=SECONDS, queue_blocks=1024))
    capture.open()
    box.source_status = capture.status_fields
    box.run(capture.blocks())
    capture.close()

    def received(kind: str) -> list[dict]:
        return [json.loads(p) for t, p in dash.messages if t.endswith("/" + kind)]

    wait_until(lambda: len(received("metrics")) >= SECONDS, "a metrics message per second")
    metrics = received("metrics")
    events = received("event")
    stream = sorted(m["seq"] for m in metrics + events)
    first = box.outbox.origin
    assert stream == list(range(first, first + len(stream))), "sequence numbers must be gapless"
    assert len(metrics) == SECONDS

    # The captured audio gives exactly what the offline analysis of the same samples gives.
    audio = np.stack([near, far]).astype(np.float32) / 32768.0
    offline = analyze(audio, model)
    for got, want in zip(metrics, offline["metrics"], strict=True):
        for key in ("near_speech_ratio", "far_speech_ratio", "talk_state"):
            assert got[key] == want[key], (got, want)
    assert sum(m["near_speech_ratio"] for m in metrics) > 1.0  # the headsets do speak

    # The last retained status carries the capture counters, and says offline after the stop.
    statuses = received("status")
    assert statuses[-1]["state"] == "offline" and statuses[-1]["capture_ok"] is True
    assert statuses[-1]["overruns"] == 0

    # Nothing but the outbox was written, and it holds only contract messages, no samples.
    files = sorted(p.name for p in state.iterdir())
    assert set(files) <= {"outbox.sqlite", "outbox.sqlite-wal", "outbox.sqlite-shm", "outbox.seq",
                          "heartbeat.json"}, files
    assert (state / "outbox.seq").read_text().strip().isdigit()  # one number: reserved seqs
    with sqlite3.connect(state / "outbox.sqlite") as db:
        for kind, payload in db.execute("SELECT kind, payload FROM outbox"):
            assert len(payload) < 2048  # scalars only: a second of samples would be 32 KB
            wire.decode(kind, payload)


def test_a_lost_headset_ends_the_call_and_the_next_audio_is_a_new_one(ami_pair, tmp_path: Path) -> None:
    """The source reports the device gone (as tests/test_capture.py proves it does): the box closes
    the call there, with its summary, instead of resuming it as the same call when it returns."""
    near, far = ami_pair(40)
    audio = np.stack([near, far]).astype(np.float32) / 32768.0
    # no broker listens on port 9: the box runs offline, its outbox keeps every message
    box = Box(EdgeSettings(site="site-a", box="box-a", broker_port=9, state_dir=tmp_path),
              load_vad_model(), version="test")
    status = {"capture_ok": True}
    box.source_status = lambda: dict(status)
    block = 1024
    for i in range(0, 20 * 16000, block):
        box.step(audio[:, i:i + block])
    status["capture_ok"] = False  # unplugged: empty blocks while it is gone
    for _ in range(20):
        box.step(np.zeros((2, 0), dtype=np.float32))
    status["capture_ok"] = True
    for i in range(20 * 16000, audio.shape[1], block):
        box.step(audio[:, i:i + block])
    events = [json.loads(p) for _, kind, p in box.outbox.pending(limit=100_000) if kind == "event"]
    calls = [(e["name"], e["t_audio_s"], e.get("call_end_reason")) for e in events
             if e["name"] in ("call_start", "call_end")]
    assert calls[0][0] == "call_start" and calls[1][0] == "call_end", calls
    assert 19.0 <= calls[1][1] <= 20.1, "the call ends where the audio stopped"
    assert len(calls) >= 3 and calls[2][0] == "call_start" and calls[2][1] >= 20.0, calls
    box.outbox.close()


def test_a_cti_site_starts_and_ends_calls_only_on_the_call_signal(ami_pair, tmp_path: Path) -> None:
    """With ``call_start_on_speech = false`` and ``call_end_silence_s = 0`` (a site whose softphone
    sends the call state), speech alone starts no call; the ``active`` and ``idle`` commands do."""
    near, far = ami_pair(30)
    audio = np.stack([near, far]).astype(np.float32) / 32768.0
    box = Box(EdgeSettings(site="site-a", box="box-a", broker_port=9, state_dir=tmp_path,
                           call_start_on_speech=False, call_end_silence_s=0.0),
              load_vad_model(), version="test")
    block = 1024
    for start_s, end_s, state in ((0, 10, None), (10, 20, "active"), (20, 30, "idle")):
        if state is not None:
            box.pipeline.call_state(state)  # what the cmd topic and the control socket call
        for i in range(start_s * 16000, end_s * 16000, block):
            box.step(audio[:, i:i + block])
    events = [json.loads(p) for _, kind, p in box.outbox.pending(limit=100_000) if kind == "event"]
    calls = [(e["name"], round(e["t_audio_s"])) for e in events if e["name"] in ("call_start", "call_end")]
    assert calls == [("call_start", 10), ("call_end", 20)], calls
    assert sum(e["name"] == "speech_start" and e["channel"] == "far" for e in events) >= 2
    box.outbox.close()


def test_a_message_outside_the_wire_contract_is_dropped_and_counted_not_fatal(tmp_path: Path) -> None:
    """A stage that emits a field outside the contract (a bug) loses that message, counted in
    the status's dropped, and the box runs on (the validation error ended the box's loop)."""
    from edge.pipeline import Message

    good = {"near_speech_ratio": 0.5, "far_speech_ratio": 0.0, "talk_state": "agent"}
    box = Box(EdgeSettings(site="site-a", box="box-a", broker_port=9, state_dir=tmp_path),
              pipeline=lambda block: [Message("metrics", {**good, "raw_samples": [1, 2]}),
                                      Message("metrics", good)], version="test")
    box.step(np.zeros((2, 512), dtype=np.float32))
    box.step(np.zeros((2, 512), dtype=np.float32))
    assert box.outbox.depth() == 2 and box.status_fields()["dropped"] == 2
    box.outbox.close()


def test_a_failing_stage_is_counted_and_the_box_runs_on(tmp_path: Path) -> None:
    """A stage raises on one block (a bug such as the cue stage's zip of a447346): the box logs
    and counts it in its status, its stages start again, the next blocks are processed."""
    from edge.pipeline import Pipeline

    pipe = Pipeline(load_vad_model())
    fed = {"n": 0}

    def flaky(block: np.ndarray) -> list:
        fed["n"] += 1
        if fed["n"] == 3:
            raise ValueError("a stage's bug")
        return pipe(block)

    flaky.interrupt = pipe.interrupt  # type: ignore[attr-defined]
    box = Box(EdgeSettings(site="site-a", box="box-a", broker_port=9, state_dir=tmp_path),
              pipeline=flaky, version="test")
    for _ in range(40):
        box.step(np.zeros((2, 1024), dtype=np.float32))
    assert fed["n"] == 40 and box.status_fields()["pipeline_errors"] == 1
    assert box.outbox.depth() > 0  # metrics went on after the failure
    box.outbox.close()


def test_reload_refuses_a_bad_campaign_and_restarts_on_a_good_one_after_the_call(
        ami_pair, tmp_path: Path) -> None:
    """``reload`` re-reads the files: a bad campaign is refused (counted, the box goes on as it
    was); a good one ends the loop once the call in progress has ended (its call_end is kept),
    with the exit status systemd restarts on. A malformed or failing command never stops the box."""
    from edge.box import EXIT_RELOAD

    near, far = ami_pair(12)
    audio = np.stack([near, far]).astype(np.float32) / 32768.0
    campaign = tmp_path / "campaign.toml"
    campaign.write_text("[monologue]\non_s = 30.0\n")
    box = Box(EdgeSettings(site="site-a", box="box-a", broker_port=9, state_dir=tmp_path / "state",
                           campaign_file=campaign), load_vad_model(), version="test")
    topic = box.publisher.cmd_topic
    _run(box, audio[:, : 8 * 16000])
    assert box.pipeline.conversation.in_call
    campaign.write_text("[monologue]\non_s = 3.0\n")  # out of range
    assert _send(box, "reload") == "reload"
    assert box.reload_refused == 1 and box.status_fields()["reload_refused"] == 1
    assert not box.reload_pending and box.pipeline.campaign.monologue.on_s == 30.0
    # malformed or failing commands: refused and counted, the loop goes on
    refused = box.cmd_refused
    assert box.handle_command(topic, b"[" * 3000) == "refused"
    assert box.handle_command(topic, wire.encode("cmd", wire.cmd_message(
        "site-a", "box-a", "resend", time.time(), from_seq=1))[:-1] + b',"to_seq":9223372036854775808}') \
        == "refused"
    box.outbox.resend = None  # type: ignore[assignment,method-assign]  # any failure inside
    assert _send(box, "resend", from_seq=1) == "refused"
    assert box.cmd_refused == refused + 3
    campaign.write_text("[monologue]\non_s = 45.0\n")
    assert _send(box, "reload") == "reload" and box.reload_pending
    _run(box, audio[:, 8 * 16000:])
    assert not box.stop_event.is_set() and box.exit_code == 0  # the call goes on
    _run(box, np.zeros((2, 40 * 16000), dtype=np.float32))  # the line falls silent: the call ends
    assert box.stop_event.is_set() and box.exit_code == EXIT_RELOAD
    assert [e["name"] for e in _events(box) if e["name"] in ("call_start", "call_end")] == \
        ["call_start", "call_end"]
    box.outbox.close()


def _offline_box(state: Path, **kw: object) -> Box:
    return Box(EdgeSettings(site="site-a", box="box-a", broker_port=9, state_dir=state, **kw),
               load_vad_model(), version="test")


def _events(box: Box) -> list[dict]:
    return [json.loads(p) for _, kind, p in box.outbox.pending(limit=100_000) if kind == "event"]


def _send(box: Box, action: str, **extra: object) -> str:
    """A ``cmd`` from the dashboard, sent now, handled by ``box``; returns its outcome."""
    msg = wire.cmd_message(box.settings.site, box.settings.box, action, time.time(), **extra)
    return box.handle_command(box.publisher.cmd_topic, wire.encode("cmd", msg))


def _run(box: Box, x: np.ndarray) -> None:
    """Step ``box`` through ``x`` in 1024-sample blocks until it stops."""
    for i in range(0, x.shape[1], 1024):
        box.step(x[:, i:i + 1024])
        if box.stop_event.is_set():
            return


def test_private_mode_outlives_a_restart_and_holds_a_reload(ami_pair, tmp_path: Path) -> None:
    """Private mode is kept in the state directory: a restart (an update, a reload) does not end
    it, and a pending reload waits for it to end (private mode drops the call, so 'no call in
    progress' alone would restart the box in the middle of the agent's private call)."""
    near, far = ami_pair(20)
    audio = np.stack([near, far]).astype(np.float32) / 32768.0
    box = _offline_box(tmp_path)

    for i in range(0, 5 * 16000, 1024):
        box.step(audio[:, i:i + 1024])
    assert _send(box, "private_on") == "private_on" and _send(box, "reload") == "reload"
    for i in range(5 * 16000, 10 * 16000, 1024):
        box.step(audio[:, i:i + 1024])
    assert box.private and not box.stop_event.is_set()  # the reload waits
    box.outbox.close()
    again = _offline_box(tmp_path)  # a restart in the middle of the private call
    assert again.private and again.status_fields()["private"] is True
    stored = len(again.outbox.pending(limit=100_000))
    for i in range(10 * 16000, 15 * 16000, 1024):
        again.step(audio[:, i:i + 1024])
    assert len(again.outbox.pending(limit=100_000)) == stored  # nothing about the private call
    assert _send(again, "private_off") == "private_off" and not (tmp_path / "private").exists()
    again.outbox.close()


def test_stopping_the_box_closes_the_call_and_its_cues(ami_pair, tmp_path: Path) -> None:
    """SIGTERM (an update, a shutdown) in the middle of a call: the call ends with its summary
    and every open cue gets its cue_off before the box drains its outbox."""
    near, far = ami_pair(25)
    audio = np.stack([near, far]).astype(np.float32) / 32768.0
    box = _offline_box(tmp_path)

    def blocks():
        for i in range(0, audio.shape[1], 1024):
            yield audio[:, i:i + 1024]
        box.stop_event.set()  # as the SIGTERM handler does
        yield np.zeros((2, 0), np.float32)

    box.run(blocks(), drain_s=0.0)
    events = [e for e in _events_after_close(tmp_path)]
    names = [e["name"] for e in events]
    assert names.count("call_start") == names.count("call_end") == 1, names
    on = [e["cue"] for e in events if e["name"] == "cue_on"]
    off = [e["cue"] for e in events if e["name"] == "cue_off"]
    assert sorted(set(on)) == sorted(set(off)), (on, off)


def _events_after_close(state: Path) -> list[dict]:
    from edge.outbox import Outbox

    outbox = Outbox(state / "outbox.sqlite", "site-a", "box-a")
    try:
        return [json.loads(p) for _, kind, p in outbox.pending(limit=100_000) if kind == "event"]
    finally:
        outbox.close()


def test_a_long_break_with_the_headset_unplugged_starts_a_new_shift(
        ami_pair, tmp_path: Path, monkeypatch) -> None:
    """The source sends empty blocks while the headset is gone, so no audio time passes: the
    wall-clock time it was gone counts as idle, and after a long break the agent's next words
    start a new shift (fatigue, vocal dose and the alert budget start over)."""
    import edge.box as box_mod

    near, far = ami_pair(30)
    audio = np.stack([near, far]).astype(np.float32) / 32768.0
    now = [1000.0]
    monkeypatch.setattr(box_mod.time, "monotonic", lambda: now[0])
    box = _offline_box(tmp_path)
    status = {"capture_ok": True}
    box.source_status = lambda: dict(status)
    for i in range(0, 15 * 16000, 1024):
        box.step(audio[:, i:i + 1024])
    assert box.pipeline.shifts == 0
    status["capture_ok"] = False
    box.step(np.zeros((2, 0), np.float32))
    now[0] += 3 * 3600.0  # lunch, headset unplugged
    status["capture_ok"] = True
    for i in range(15 * 16000, 30 * 16000, 1024):
        box.step(audio[:, i:i + 1024])
    assert box.pipeline.shifts == 1
    box.outbox.close()


def test_a_reload_pending_never_restarts_the_box_into_a_file_it_refuses(
        ami_pair, tmp_path: Path) -> None:
    """A good ``reload`` during a call waits for the call's end; if the file goes bad meanwhile
    (the operator's next edit, refused by a second ``reload`` or not), the box must not exit into
    it: systemd would start it again on a file that stops it at start, again and again."""
    near, far = ami_pair(12)
    audio = np.stack([near, far]).astype(np.float32) / 32768.0
    for second_reload in (True, False):
        campaign = tmp_path / f"campaign-{second_reload}.toml"
        campaign.write_text("[monologue]\non_s = 30.0\n")
        box = Box(EdgeSettings(site="site-a", box="box-a", broker_port=9,
                               state_dir=tmp_path / f"state-{second_reload}",
                               campaign_file=campaign), load_vad_model(), version="test")
        _run(box, audio[:, : 8 * 16000])
        assert box.pipeline.conversation.in_call
        campaign.write_text("[monologue]\non_s = 45.0\n")
        assert _send(box, "reload") == "reload" and box.reload_pending
        campaign.write_text("[monologue]\non_s = 3.0\n")  # out of range: the box cannot start on it
        if second_reload:
            assert _send(box, "reload") == "reload" and box.reload_refused == 1
        _run(box, audio[:, 8 * 16000:])
        _run(box, np.zeros((2, 40 * 16000), dtype=np.float32))  # the call ends
        assert not box.pipeline.conversation.in_call
        assert not box.stop_event.is_set() and box.exit_code == 0, second_reload
        assert box.status_fields()["reload_refused"] == 1 and not box.reload_pending
        assert box.pipeline.campaign.monologue.on_s == 30.0  # the box goes on as it was
        box.outbox.close()


def test_a_campaign_edited_bad_and_never_reloaded_starts_as_the_last_good_one(tmp_path: Path) -> None:
    """A campaign file edited bad and never reloaded, then a reboot: the box starts on the campaign
    it last started with (a copy in its state directory), and its status says why, key and range;
    a refused ``reload`` says the same until a good file is reloaded. A box that never started
    with a campaign has no copy and does not start (site IT is at hand)."""
    import pytest

    from edge.campaign import CampaignError

    campaign = tmp_path / "campaign.toml"
    campaign.write_bytes("\ufeff[monologue]\non_s = 45.0\n".encode())  # a Windows editor's BOM
    first = _offline_box(tmp_path / "state", campaign_file=campaign)
    assert first.pipeline.campaign.monologue.on_s == 45.0
    assert first.status_fields()["settings_error"] == ""
    first.outbox.close()
    campaign.write_text("[monologue]\non_s = 3.0\n")
    again = _offline_box(tmp_path / "state", campaign_file=campaign)
    assert again.pipeline.campaign.monologue.on_s == 45.0
    error = again.status_fields()["settings_error"]
    assert "monologue.on_s" in error and "5..600" in error, error
    wire.encode("status", wire.status_message("site-a", "box-a", "online", 1.8e9,
                                              **{"settings_error": error}))  # within the contract
    campaign.write_text("[monologue]\non_s = 50.0\n")
    assert again.reload() and again.status_fields()["settings_error"] == ""
    campaign.write_text("[monologue]\non_s = 3.0\n")
    assert not again.reload() and "monologue.on_s" in again.status_fields()["settings_error"]
    again.outbox.close()
    with pytest.raises(CampaignError, match=r"monologue\.on_s"):
        _offline_box(tmp_path / "fresh-state", campaign_file=campaign)


def test_systemctl_reload_sighup_checks_the_files_of_a_running_box(tmp_path: Path) -> None:
    """``systemctl reload miroir-box`` sends SIGHUP (``ExecReload``): the real ``miroir edge run``
    checks its campaign file then, refuses a bad one (the journal names the key) and runs on."""
    import os
    import signal
    import subprocess
    import sys

    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    campaign = tmp_path / "campaign.toml"
    campaign.write_text("[monologue]\non_s = 45.0\n")
    config = tmp_path / "box.toml"
    config.write_text(f'site = "site-a"\nbox = "box-a"\nbroker_port = 9\nstate_dir = "{tmp_path / "state"}"\n'
                      f'campaign_file = "{campaign}"\n')
    log = tmp_path / "journal.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "miroir", "edge", "run", "--config", str(config), "--replay",
             str(shared / "ami-headsets" / "source0.wav"), str(shared / "ami-headsets" / "source1.wav")],
            stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        wait_until(lambda: "replaying" in log.read_text(), "the box to start")
        campaign.write_text("[monologue]\non_s = 3.0\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in log.read_text(), "the reload to be refused")
        assert "monologue.on_s = 3.0 is outside the allowed range 5..600" in log.read_text()
        time.sleep(0.5)
        assert proc.poll() is None  # it runs on
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, log.read_text()[-2000:]


@pytest.mark.parametrize("which", ["campaign_file", "settings", "ca_file"])
def test_a_file_that_is_a_fifo_is_refused_at_a_reload_not_waited_on(tmp_path: Path,
                                                                    which: str) -> None:
    """A campaign file, the settings file or a TLS file that is a FIFO (no writer) at a reload
    (SIGHUP, as `systemctl reload` sends): the real agent's loop waited in open() for good, past
    SIGTERM, until the watchdog killed it. The file is refused in one line naming it (not a
    regular file), and the box runs on and stops on SIGTERM."""
    import os
    import signal
    import subprocess
    import sys

    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    campaign = tmp_path / "campaign.toml"
    campaign.write_text("[monologue]\non_s = 45.0\n")
    config = tmp_path / "box.toml"
    settings = (f'site = "site-a"\nbox = "box-a"\nbroker_port = 9\n'
                f'state_dir = "{tmp_path / "state"}"\ncampaign_file = "{campaign}"\n')
    config.write_text(settings)
    log = tmp_path / "journal.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "miroir", "edge", "run", "--config", str(config), "--replay",
             str(shared / "ami-headsets" / "source0.wav"),
             str(shared / "ami-headsets" / "source1.wav"), "--loop"],
            stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        wait_until(lambda: "replaying" in log.read_text(), "the box to start")
        fifo = {"campaign_file": campaign, "settings": config, "ca_file": tmp_path / "ca.pem"}[which]
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo)
        if which == "ca_file":
            config.write_text(settings + f'ca_file = "{fifo}"\n')
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in log.read_text() or proc.poll() is not None,
                   "the reload to be refused")
        assert proc.poll() is None, log.read_text()[-600:]
        [line] = [x for x in log.read_text().splitlines() if "reload refused" in x]
        assert str(fifo) in line and "a FIFO, not a regular file" in line, line
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert code == 0, log.read_text()[-600:]


@pytest.mark.parametrize("name", ["baselines.json", "install-check.json", "restarting.json",
                                  "releases/rolled-back.json"])
def test_a_state_file_nested_too_deep_is_a_bad_file_not_the_end_of_the_agent(tmp_path: Path,
                                                                             name: str) -> None:
    """A file of the box's state folder (the agent's baselines, the install check's verdict, an
    update's restart note; the updater's note of a release rolled back, which the status reports)
    holding 5000 nested arrays (a corrupt card): JSON's parser recursed past
    Python's limit and the real ``miroir edge run`` died at its start (exit 1, a RecursionError
    traceback). It is now a bad file like any other, ignored (or the affect model kept off, as for
    an unreadable check) and named in one line, and the agent runs."""
    import os
    import signal
    import subprocess
    import sys

    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    state = tmp_path / "state"
    (state / "releases").mkdir(parents=True)
    deep = "[" * 5000 + "]" * 5000
    (state / name).write_text('{"format": 2, "learned_ts": 1, "agent": ' + deep + "}"
                              if name == "baselines.json" else deep)
    campaign = tmp_path / "campaign.toml"
    campaign.write_text("[affect]\ndisclosed = true\n")
    config = tmp_path / "box.toml"
    config.write_text(f'site = "site-a"\nbox = "box-a"\nbroker_port = 9\nstate_dir = "{state}"\n'
                      f'campaign_file = "{campaign}"\naffect_enabled = true\n'
                      f'capture_device = "hw:9"\nreleases_root = "{state / "releases"}"\n')
    log = tmp_path / "journal.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "miroir", "edge", "run", "--config", str(config), "--replay",
             str(shared / "ami-headsets" / "source0.wav"),
             str(shared / "ami-headsets" / "source1.wav"), "--loop"],
            stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        wait_until(lambda: "replaying" in log.read_text() or proc.poll() is not None,
                   "the box to start")
        assert proc.poll() is None, log.read_text()[-600:]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    text = log.read_text()
    assert code == 0 and "Traceback" not in text, text[-600:]
    assert "signal 15: stopping" in text, text[-600:]  # said by the loop, not the handler
    if name == "releases/rolled-back.json":  # no release rolled back, as for a note unreadable
        return
    named = [line for line in text.splitlines() if str(state / name) in line
             or (name == "install-check.json" and "install check is unreadable" in line)]
    assert len(named) == 1 and "nested too deep" in named[0], named


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT"])
def test_a_replay_waiting_on_a_fifo_with_no_writer_stops_on_sigterm_and_ctrl_c(
        tmp_path: Path, stop: str) -> None:
    """`miroir edge run --replay NEAR FAR` where NEAR is a FIFO no one writes to yet waits in
    open(); the agent's own SIGTERM and SIGINT handlers (installed before) only asked the loop,
    not yet running, to stop, and open() went on waiting: SIGTERM or Ctrl-C did not stop it (30 s
    measured). They now stop it there: "miroir: interrupted", exit 130."""
    import os
    import signal
    import subprocess
    import sys

    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    near = tmp_path / "near.wav"
    os.mkfifo(near)
    config = tmp_path / "box.toml"
    config.write_text(f'site = "site-a"\nbox = "box-a"\nbroker_port = 9\n'
                      f'state_dir = "{tmp_path / "state"}"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "miroir", "edge", "run", "--config", str(config), "--replay",
         str(near), str(shared / "ami-headsets" / "source1.wav")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wchan = Path(f"/proc/{proc.pid}/wchan")
        wait_until(lambda: proc.poll() is not None or wchan.read_text() == "wait_for_partner",
                   "the agent to wait for the FIFO's writer")
        assert proc.poll() is None
        proc.send_signal(getattr(signal, stop))
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    assert code == 130, proc.stderr.read() if proc.stderr else ""
    assert proc.stderr is not None and "miroir: interrupted" in proc.stderr.read()


def test_a_campaign_file_nested_too_deep_is_refused_not_the_end_of_the_box(tmp_path: Path) -> None:
    """A campaign file of 2000 nested arrays (a corrupt or hostile edit): TOML's parser recursed
    past Python's limit and its RecursionError went through the loader's net, so the real ``miroir
    edge run`` died on ``systemctl reload`` (SIGHUP, exit 1 with a 2000-line traceback) and a box
    restarted on it never reached its last good campaign. Now it is a refused file, named, like any
    other: the running box goes on, a restart starts on the last good campaign."""
    import os
    import signal
    import subprocess
    import sys

    nested = "[monologue]\non_s = " + "[" * 2000 + "]" * 2000 + "\n"
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    campaign = tmp_path / "campaign.toml"
    campaign.write_text("[monologue]\non_s = 45.0\n")
    config = tmp_path / "box.toml"
    config.write_text(f'site = "site-a"\nbox = "box-a"\nbroker_port = 9\n'
                      f'state_dir = "{tmp_path / "state"}"\ncampaign_file = "{campaign}"\n')
    log = tmp_path / "journal.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "miroir", "edge", "run", "--config", str(config), "--replay",
             str(shared / "ami-headsets" / "source0.wav"),
             str(shared / "ami-headsets" / "source1.wav"), "--loop"],
            stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        wait_until(lambda: "replaying" in log.read_text(), "the box to start")
        campaign.write_text(nested)
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in log.read_text() or proc.poll() is not None,
                   "the reload to be refused")
        assert proc.poll() is None, log.read_text()[-600:]
        assert f"{campaign}: not valid TOML (nested too deep)" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, log.read_text()[-600:]
    again = _offline_box(tmp_path / "state", campaign_file=campaign)  # a reboot on the bad file
    assert again.pipeline.campaign.monologue.on_s == 45.0
    assert "nested too deep" in again.status_fields()["settings_error"]
    again.outbox.close()


def test_a_reload_refuses_settings_whose_tls_files_would_not_load(tmp_path: Path) -> None:
    """The settings file edited while the box runs, its ``cert_file`` now a path with no file (a
    typo): the reload checked only that the file parsed, so the real ``miroir edge run`` took it,
    exited 75 for systemd to start it again, and the start failed ('cert_file ...: No such file
    or directory', exit 2): a box down after 10 tries, where a bad file must leave it running on
    its last good settings. The reload now checks the TLS files as the start would, refuses, and
    names the key and the file."""
    import os
    import signal
    import subprocess
    import sys

    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    config = tmp_path / "box.toml"
    good = (f'site = "site-a"\nbox = "box-a"\nbroker_port = 9\nstate_dir = "{tmp_path / "state"}"\n'
            "call_start_on_speech = false\n")  # no call in progress: a good reload exits at once
    config.write_text(good)
    log = tmp_path / "journal.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "miroir", "edge", "run", "--config", str(config), "--replay",
             str(shared / "ami-headsets" / "source0.wav"),
             str(shared / "ami-headsets" / "source1.wav"), "--loop"],
            stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    missing = tmp_path / "credentials" / "box.pem"
    try:
        wait_until(lambda: "replaying" in log.read_text(), "the box to start")
        config.write_text(good + f'ca_file = "{tmp_path}"\ncert_file = "{missing}"\n')
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in log.read_text() or proc.poll() is not None,
                   "the reload to be refused")
        assert proc.poll() is None, f"exit {proc.poll()}: {log.read_text()[-600:]}"
        # the same for a state_dir the start cannot use (a file: the outbox goes nowhere)
        config.write_text(good.replace(str(tmp_path / "state"), str(config)))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: log.read_text().count("reload refused") == 2 or proc.poll() is not None,
                   "the second reload to be refused")
        assert proc.poll() is None, f"exit {proc.poll()}: {log.read_text()[-600:]}"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    text = log.read_text()
    assert code == 0, text[-600:]
    assert f"{config}: ca_file {tmp_path}: Is a directory" in text, text[-600:]
    assert f"{config}: state_dir {config}: not a directory" in text, text[-600:]


def test_a_reload_refuses_a_model_backend_whose_runtime_is_not_installed(tmp_path: Path) -> None:
    """The settings edited while the box runs on LiteRT to ``model_backend = "onnx"`` on a box
    without ONNX Runtime (here hidden from the real ``miroir edge run`` by a package of that name
    that fails to import, as a missing one does): the reload took it, the agent exited 75, and its
    start then stopped on "onnxruntime is not installed" (a box down after 10 tries). The reload now loads the
    VAD model as the start would, refuses it naming the key, and the box runs on."""
    import os
    import signal
    import subprocess
    import sys

    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    hidden = tmp_path / "hidden" / "onnxruntime"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named \'onnxruntime\'", name="onnxruntime")\n')
    config = tmp_path / "box.toml"
    good = (f'site = "site-a"\nbox = "box-a"\nbroker_port = 9\nstate_dir = "{tmp_path / "state"}"\n'
            'call_start_on_speech = false\nmodel_backend = "litert"\n')  # a reload exits at once
    config.write_text(good)
    log = tmp_path / "journal.log"
    path = os.pathsep.join([str(hidden.parent), os.environ.get("PYTHONPATH", "")])
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "miroir", "edge", "run", "--config", str(config), "--replay",
             str(shared / "ami-headsets" / "source0.wav"),
             str(shared / "ami-headsets" / "source1.wav"), "--loop"],
            stdout=subprocess.DEVNULL, stderr=err,
            env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=path))
    try:
        wait_until(lambda: "replaying" in log.read_text(), "the box to start")
        config.write_text(good.replace('"litert"', '"onnx"'))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in log.read_text() or proc.poll() is not None,
                   "the reload to be refused")
        assert proc.poll() is None, f"exit {proc.poll()}: {log.read_text()[-600:]}"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    text = log.read_text()
    assert code == 0, text[-600:]
    [line] = [x for x in text.splitlines() if "reload refused" in x]
    assert f"{config}: model_backend onnx: onnxruntime is not installed" in line, line


def test_a_start_on_a_model_backend_whose_runtime_is_missing_is_one_line(tmp_path: Path) -> None:
    """`miroir edge run` with ``model_backend = "onnx"`` on a box without ONNX Runtime (hidden
    as in the test above) ended in a RuntimeError traceback (exit 1) in the journal: it is one
    line naming the settings file and the key, exit 2, as a missing model file is."""
    import os
    import subprocess
    import sys

    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    hidden = tmp_path / "hidden" / "onnxruntime"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named \'onnxruntime\'", name="onnxruntime")\n')
    config = tmp_path / "box.toml"
    config.write_text(f'site = "site-a"\nbox = "box-a"\nbroker_port = 9\n'
                      f'state_dir = "{tmp_path / "state"}"\nmodel_backend = "onnx"\n')
    path = os.pathsep.join([str(hidden.parent), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-m", "miroir", "edge", "run", "--config", str(config), "--replay",
         str(shared / "ami-headsets" / "source0.wav"), str(shared / "ami-headsets" / "source1.wav")],
        capture_output=True, text=True, timeout=120, check=False,
        env=dict(os.environ, PYTHONPATH=path))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-600:]
    assert done.stderr.splitlines()[-1] == (
        f"miroir: error: {config}: model_backend onnx: onnxruntime is not installed: install the "
        "box extra, `pip install 'miroir[box]'`"), done.stderr[-600:]


def test_the_stop_signal_handler_writes_no_log_line_the_loop_does(caplog: pytest.LogCaptureFixture
                                                                   ) -> None:
    """SIGTERM landing while the box's loop was writing a log line made the handler's own
    ``signal 15: stopping`` a reentrant write on the same stream: logging printed
    "--- Logging error ---" and a traceback into the journal (seen once in a full suite run, in
    the nested-state-file test above). The handler now only records the signal and sets the stop
    event; the loop logs the line once it has left the block it was on."""
    import signal
    import threading
    from types import SimpleNamespace

    fake = SimpleNamespace(stop_event=threading.Event(), reload_asked=False, stop_signal=0)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        Box.install_signal_handlers(fake)  # type: ignore[arg-type]
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        with caplog.at_level("DEBUG"):
            handler(signal.SIGTERM, None)
        assert caplog.records == [], [r.getMessage() for r in caplog.records]
        assert fake.stop_event.is_set() and fake.stop_signal == signal.SIGTERM
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)


STOP_CHILD = """
import faulthandler, signal, sys
from types import SimpleNamespace
from edge.box import Box
from edge.capture import CaptureConfig, CaptureSource
faulthandler.dump_traceback_later(30, exit=True)  # a hang says where, and ends
src = CaptureSource(CaptureConfig(device="none", idle_s=0.0002))
box = SimpleNamespace(stop_event=src.stop_event, reload_asked=False, stop_signal=0)
Box.install_signal_handlers(box)  # as `miroir edge run` does, on the capture's stop event
print("ready", flush=True)
stops = 0
while stops < int(sys.argv[1]):
    for _ in src._wait(1.0):  # the capture's wait for a lost device, an empty block each idle_s
        pass
    if src.stop_event.is_set():  # a stop: counted, and the next one waited for
        stops += 1
        src.stop_event.clear()
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the signals still on their way: not a death
print("stopped", stops, flush=True)
"""


def test_a_stop_signal_while_the_capture_waits_never_hangs_the_box() -> None:
    """The SIGTERM handler set a threading.Event: set() takes the Event's lock, which the capture
    loop holds, in the same thread, for a moment at each of its waits on that Event. A signal
    landing in that moment blocked the handler on a lock its own thread held (measured: SIGTERM
    every millisecond to the box's handler on the capture's stop event, waiting as it does for
    a lost device: hung after 179 signals and for good once they stopped; here, each further
    signal nests one more blocked handler up to a RecursionError, 6 runs in 6). The stop flag
    is now set without a lock (edge.stop.StopFlag)."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    wanted = 5000
    proc = subprocess.Popen([sys.executable, "-c", STOP_CHILD, str(wanted)],
                            cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout))  # type: ignore[arg-type]
    reader.start()
    try:
        while reader.is_alive() and proc.poll() is None and not "".join(out).count("stopped"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            time.sleep(0.001)  # the signals' pace: one a handler can end before the next
        reader.join(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(60)
    assert out[-1:] == [f"stopped {wanted}\n"], "".join(out)[-3000:]
    assert proc.returncode == 0


def test_a_stop_signal_while_the_capture_device_opens_stops_the_box(alsa_home, tmp_path: Path
                                                                    ) -> None:
    """`miroir edge run` installed its stop handlers, opened the capture device (seconds for a
    slow USB adapter), then made the capture's stop event the box's: a SIGTERM during the open
    set the event that was then replaced, and the box ran on (measured: still running 30 s after
    the SIGTERM, its journal saying it captures). The box and the capture now share one stop
    flag from before the open: the box stops, exit 0."""
    import errno
    import os
    import signal
    import subprocess
    import sys
    import threading

    fifo = tmp_path / "headset.fifo"  # the device's audio: its open waits for the writer below
    os.mkfifo(fifo)
    alsa_home.define("miroir_slow", fifo)
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "box.toml"
    config.write_text(f'site = "site-a"\nbox = "box-a"\nbroker_port = 9\nstate_dir = "{state}"\n'
                      'capture_device = "miroir_slow"\n')
    near, _ = read_pcm16(NEAR_WAV)
    audio = near[:16_000 * 5].astype("<i2").tobytes()
    reading = threading.Event()
    done = threading.Event()

    def feed() -> None:  # the device's audio, for every open of it, until the test ends
        while not done.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:  # no reader yet
                assert exc.errno == errno.ENXIO
                done.wait(0.01)
                continue
            reading.set()
            try:
                while not done.is_set():
                    with contextlib.suppress(BlockingIOError):
                        os.write(fd, audio)
                    done.wait(0.01)
            except BrokenPipeError:
                pass
            finally:
                os.close(fd)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    log = tmp_path / "journal.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "miroir", "edge", "run", "--config",
                                 str(config)], stdout=subprocess.DEVNULL, stderr=err,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        assert reading.wait(60), log.read_text()[-600:]  # the box is opening the device now
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        done.set()
        feeder.join(10)
    text = log.read_text()
    assert code == 0, text[-800:]
    assert "signal 15: stopping" in text and "Traceback" not in text, text[-800:]


def test_a_capture_device_that_opens_and_stays_silent_lets_the_box_stop(alsa_home, tmp_path: Path
                                                                        ) -> None:
    """A device that opens and delivers nothing (an ALSA file PCM on a FIFO whose writer stays
    silent): PortAudio's callback thread blocks in the driver's read, and the capture's close
    waited for it in Pa_StopStream (Pa_AbortStream too: the read is where PortAudio holds off its
    cancel). Measured: the box never came back from its close after the 2-s stall, and was still
    running 10 s after a SIGTERM (systemd's SIGKILL then: no offline status, the outbox not
    closed). The close is left to a thread of its own after CLOSE_WAIT_S (logged), the device is
    not opened again meanwhile, and the box stops on SIGTERM, exit 0."""
    import errno
    import os
    import signal
    import subprocess
    import sys

    fifo = tmp_path / "headset.fifo"
    os.mkfifo(fifo)
    alsa_home.define("miroir_silent", fifo)
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "box.toml"
    config.write_text(f'site = "site-a"\nbox = "box-a"\nbroker_port = 9\nstate_dir = "{state}"\n'
                      'capture_device = "miroir_silent"\n')
    log = tmp_path / "journal.log"
    writer = -1
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "miroir", "edge", "run", "--config",
                                 str(config)], stdout=subprocess.DEVNULL, stderr=err,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        deadline = time.monotonic() + 60
        while writer < 0:  # the writer: there, and silent (the device's open waits for one)
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-600:]
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:  # no reader yet: the box is still starting
                assert exc.errno == errno.ENXIO
                time.sleep(0.05)
        deadline = time.monotonic() + 15  # the stall (2 s), then the close that does not end
        while (not (stuck := "left to close in the background" in log.read_text())
               and time.monotonic() < deadline and proc.poll() is None):
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        try:
            code: int | None = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        stopped_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if writer >= 0:
            os.close(writer)
    text = log.read_text()
    assert stuck and "capture device 'miroir_silent': did not stop within" in text, text[-800:]
    assert code == 0 and stopped_s < 5, (code, stopped_s, text[-800:])
    assert "signal 15: stopping" in text and "Traceback" not in text, text[-800:]


def _wakeups() -> int:
    """How often this thread has slept and been woken (its voluntary context switches)."""
    status = Path("/proc/thread-self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("voluntary_ctxt_switches:")))


def test_the_stop_flag_sleeps_through_its_wait_and_wakes_at_once_on_a_set() -> None:
    """StopFlag.wait slept in 10-ms slices (a lock-free wait): the box waiting for a lost device
    woke a hundred times a second where the threading.Event it replaced slept (measured on
    `miroir edge run` with no such device, 30 s: 4,897 context switches and 0.50 % of a core,
    against 413 and 0.26 % before bab6732). It now blocks on a pipe that set() writes: still no
    lock in the handler, no polling, and a set from another thread (or a handler) ends it."""
    import threading

    from edge.stop import StopFlag

    flag = StopFlag()
    before = _wakeups()
    t0 = time.monotonic()
    assert flag.wait(0.5) is False
    slept_s = time.monotonic() - t0
    woken = _wakeups() - before
    assert slept_s >= 0.5 and woken <= 5, (slept_s, woken)

    setter = threading.Timer(0.2, flag.set)
    setter.start()
    t0 = time.monotonic()
    assert flag.wait(30) is True  # ended by the set, not by the 30 s
    setter.join()
    assert time.monotonic() - t0 < 10
    flag.clear()
    assert not flag.is_set() and flag.wait(0.05) is False  # the set's wake-up gone with it


def _control_answer(control: Path, text: bytes) -> bytes:
    """What the agent listening on the control socket ``control`` answers to ``text``."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("")  # an address, for the agent's answer
        sock.settimeout(30.0)
        sock.sendto(text, str(control))
        return sock.recv(512)


def test_a_second_agent_on_the_same_state_directory_refuses_to_start_and_touches_nothing(
        tmp_path: Path) -> None:
    """Site IT running ``miroir edge run`` by hand beside the service (same settings): the real
    second agent started, shared the outbox (every message it stored was lost, "UNIQUE constraint
    failed: outbox.seq", 25 in its first 8 s) and took the control socket over, whose file its
    stop then removed, leaving the first agent with none. It now refuses to start in one line
    (the state directory, the first one's pid; exit 2, as the CLI's other refusals) before it
    opens anything, the first's socket still answers, and the lock goes with a ``kill -9``."""
    import os
    import signal
    import subprocess
    import sys

    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    state = tmp_path / "state"
    control = tmp_path / "run" / "control"
    config = tmp_path / "box.toml"
    config.write_text(f'site = "site-a"\nbox = "box-a"\nbroker_port = 9\nstate_dir = "{state}"\n'
                      f'control_socket = "{control}"\ncontrol_group = "no-such-group-here"\n')
    run = [sys.executable, "-m", "miroir", "edge", "run", "--config", str(config), "--replay",
           str(shared / "ami-headsets" / "source0.wav"),
           str(shared / "ami-headsets" / "source1.wav"), "--loop"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    def start(log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as err:
            proc = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=err, env=env)
        wait_until(lambda: "replaying" in log.read_text() or proc.poll() is not None,
                   "the agent to start")
        assert proc.poll() is None, log.read_text()[-600:]
        return proc

    first = start(tmp_path / "first.log")
    third = None
    try:
        wait_until(control.is_socket, "the first agent's control socket")
        socket_inode = control.stat().st_ino
        second = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60)
        assert second.returncode == 2, second.stderr[-600:]
        assert second.stderr.splitlines() == [
            f"miroir: error: {config}: state_dir {state}: in use by another agent (pid "
            f"{first.pid}): stop it first (`sudo systemctl stop miroir-box` for the service); "
            "nothing was changed"], second.stderr
        assert control.stat().st_ino == socket_inode  # the first's socket, never taken over
        assert _control_answer(control, b"identify") == b"ok identify"
        first.kill()  # kill -9: no clean-up ran, the kernel let the lock go
        first.wait(timeout=30)
        third = start(tmp_path / "third.log")
    finally:
        for proc in (first, third):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    assert third.returncode == 0, (tmp_path / "third.log").read_text()[-600:]
    assert "lost" not in (tmp_path / "first.log").read_text()


def test_edge_run_keeps_its_state_in_the_directory_state_dir_names(tmp_path: Path) -> None:
    """``miroir edge run --state-dir DIR`` (README: DIR in place of the settings' state_dir, as
    site IT runs an agent by hand beside the service) refused to start, whatever DIR: the option
    is read as a path and the settings took only text for one ("setting 'state_dir': expected
    Path, got PosixPath(...)", exit 2). The agent now runs with its outbox and its lock in DIR,
    nothing in the settings' state_dir."""
    import subprocess
    import sys

    emodb = Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb" / "wav"
    settings_dir, given = tmp_path / "settings-state", tmp_path / "given"
    config = tmp_path / "box.toml"
    config.write_text(f'site = "site-a"\nbox = "box-a"\nbroker_port = 9\n'
                      f'state_dir = "{settings_dir}"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "miroir", "edge", "run", "--config", str(config), "--state-dir",
         str(given), "--fast", "--replay", str(emodb / "03a01Fa.wav"), str(emodb / "03a01Nc.wav")],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert {"outbox.sqlite", "agent.lock"} <= {p.name for p in given.iterdir()}
    with sqlite3.connect(given / "outbox.sqlite") as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] > 0
    assert not settings_dir.exists()


def test_a_second_agent_of_the_same_box_on_another_state_directory_refuses_to_start(
        tmp_path: Path) -> None:
    """Site IT running ``miroir edge run`` by hand with the service's settings and
    ``--state-dir`` elsewhere: the state directory's lock does not stop it, and the real second
    agent started (without the control socket, left to the first) and connected to the broker as
    the same box, the two closing each other's connection in turn. An agent answering on the
    settings' control socket is now the same box: the second refuses in one line naming it, exit
    2, its state directory not even made; the first keeps its socket and runs on."""
    import os
    import signal
    import subprocess
    import sys

    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    control = tmp_path / "run" / "control"
    config = tmp_path / "box.toml"
    config.write_text(f'site = "site-a"\nbox = "box-a"\nbroker_port = 9\n'
                      f'state_dir = "{tmp_path / "state"}"\ncontrol_socket = "{control}"\n'
                      'control_group = "no-such-group-here"\n')
    run = [sys.executable, "-m", "miroir", "edge", "run", "--config", str(config), "--replay",
           str(shared / "ami-headsets" / "source0.wav"),
           str(shared / "ami-headsets" / "source1.wav"), "--loop"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    first_log = tmp_path / "first.log"
    with first_log.open("wb") as err:
        first = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        wait_until(lambda: "replaying" in first_log.read_text() or first.poll() is not None,
                   "the agent to start")
        assert first.poll() is None, first_log.read_text()[-600:]
        wait_until(control.is_socket, "the first agent's control socket")
        socket_inode = control.stat().st_ino
        elsewhere = tmp_path / "state-2"
        second = subprocess.run([*run, "--state-dir", str(elsewhere)], capture_output=True,
                                text=True, env=env, timeout=60)
        assert second.returncode == 2, second.stderr[-600:]
        assert second.stderr.splitlines() == [
            f"miroir: error: {config}: box box-a already runs: another agent listens on its "
            f"control_socket {control} (its state elsewhere; both would connect to the broker "
            "as this box, each closing the other's connection): stop it first (`sudo systemctl "
            "stop miroir-box` for the service); nothing was changed"], second.stderr
        assert not elsewhere.exists()
        assert control.stat().st_ino == socket_inode  # the first's, never taken over
        assert _control_answer(control, b"identify") == b"ok identify"
        assert first.poll() is None
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGTERM)
            first.wait(timeout=30)
    assert first.returncode == 0, first_log.read_text()[-600:]


def test_a_revoked_box_says_once_in_its_journal_that_the_broker_shuts_it_out(site: Any,
                                                                             tmp_path: Path) -> None:
    """A box whose certificate the site revoked: with TLS 1.3 the broker's refusal reaches it as
    a bare EOF after the handshake, and the real agent wrote only "disconnected from the broker:
    Unspecified error" at each retry, forever, saying nothing site IT could act on. It now says
    once that the broker closed the connection after the TLS handshake without answering, why
    (certificate revoked, expired, foreign; a full broker) and the provision commands to run;
    the retries after that are counted, not written."""
    import os
    import signal
    import subprocess
    import sys

    from provisioning import pki
    from provisioning.broker import write_config

    crl = pki.revoke(site.ca, site.dir / "crl.pem", [site.box("box-a").cert])
    write_config(site.dir, port=site.port, ca=site.ca, server=site.server, acl=site.acl, crl=crl)
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "ami-headsets"
    config = tmp_path / "box.toml"
    box = site.box("box-a")
    log = tmp_path / "agent.log"
    with site.broker() as broker:
        config.write_text(
            f'site = "{SITE_ID}"\nbox = "box-a"\nbroker_host = "localhost"\n'
            f'broker_port = {broker.port}\nstate_dir = "{tmp_path / "state"}"\n'
            f'ca_file = "{site.ca_cert}"\ncert_file = "{box.cert}"\nkey_file = "{box.key}"\n')
        with log.open("wb") as err:
            agent = subprocess.Popen(
                [sys.executable, "-m", "miroir", "edge", "run", "--config", str(config),
                 "--replay", str(shared / "source0.wav"), str(shared / "source1.wav"), "--loop"],
                stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:  # the first try at once, then 1 s and 2 s after: three handshakes refused
            wait_until(lambda: site.log.read_text().count("certificate verify failed") >= 3
                       or agent.poll() is not None, "three of the box's connections refused")
            assert agent.poll() is None, log.read_text()[-600:]
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=60)
    text = log.read_text()
    said = (f"the broker at localhost:{broker.port} closed the connection after the TLS "
            "handshake without answering (no CONNACK): it refuses this box's certificate "
            "(revoked, expired, or not signed by the site's CA: cert_days_left in the box's "
            "health) or takes no more connections; site IT: `sudo miroir provision expiry --all` "
            "lists the active boxes' certificates (box box-a not among them was revoked: enrol "
            "it again under a new id), `sudo miroir provision rotate box-a` renews an active one "
            "(IT guide, section 5); the box retries, further closes are counted")
    assert text.count(said) == 1, text[-2000:]
    assert "disconnected from the broker" not in text, text[-2000:]
    assert agent.returncode == 0, text[-600:]
