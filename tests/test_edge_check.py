"""`miroir edge check`: levels, noise floor, clipping and swapped channels, on real speech
captured through PyAudio from an ALSA file PCM (no audio kept)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge.installcheck import check
from edge.pipeline import load_vad_model
from miroir.cli import main
from tests._fixtures_capture import AlsaHome, write_raw

CUE_S = 1.5
SECONDS = 4.0


def recording(ami_pair: Callable[[float], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """The agent quiet (room noise) until the cue, then speaking; the line carries real speech."""
    near, far = ami_pair(SECONDS + 20)
    n = int(SECONDS * 16_000)
    cue = int(CUE_S * 16_000)
    rng = np.random.default_rng(1)
    agent = np.concatenate([rng.normal(0, 20, cue), near[16_000 * 10:16_000 * 10 + n - cue]])
    line = far[:n].astype(np.float64) * 0.3  # the line is quieter than the agent's own mic
    return agent.astype(np.int16), line.astype(np.int16)


def test_check_on_arrays(ami_pair: Callable[[float], tuple[np.ndarray, np.ndarray]]) -> None:
    agent, line = (x / 32768.0 for x in recording(ami_pair))
    good = check(agent, line, CUE_S)
    assert good["ok"] and good["agent_heard"] and not good["swapped"], good
    bad = check(line, agent, CUE_S)
    assert bad["swapped"] and not bad["ok"]
    clipped = check(np.clip(agent * 200, -1, 1), line, CUE_S)
    problems = clipped["problems"]
    assert isinstance(problems, list) and any("clips" in p for p in problems)


@pytest.mark.parametrize("swap", [False, True])
def test_edge_check_through_alsa(alsa_home: AlsaHome, tmp_path: Path, swap: bool,
                                 ami_pair: Callable[[float], tuple[np.ndarray, np.ndarray]],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    agent, line = recording(ami_pair)
    raw = write_raw(tmp_path / "headset.raw", *((line, agent) if swap else (agent, line)))
    alsa_home.define("miroir_headset", raw)
    rc = main(["edge", "check", "--device", "miroir_headset", "--seconds", str(SECONDS),
               "--cue-s", str(CUE_S), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["swapped"] is swap and rc == (1 if swap else 0), report
    assert -60 < report["near"]["rms_dbfs"] < 0 and report["near"]["clipped_ratio"] == 0
    assert report["near"]["noise_floor_dbfs"] < report["near"]["rms_dbfs"]
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.name not in ("headset.raw", ".asoundrc")]


def test_edge_check_names_a_missing_device(alsa_home: AlsaHome, tmp_path: Path,
                                           ami_pair: Callable[[float], tuple[np.ndarray, np.ndarray]],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """No 12 s wait and no "only 0.0 s of audio": the error names the device and lists what exists."""
    import time

    agent, line = recording(ami_pair)
    alsa_home.define("miroir_other", write_raw(tmp_path / "other.raw", agent, line))
    start = time.monotonic()
    rc = main(["edge", "check", "--device", "miroir_headset", "--seconds", str(SECONDS)])
    err = capsys.readouterr().err
    assert rc == 2 and time.monotonic() - start < 5.0
    assert "'miroir_headset' not found" in err and "miroir_other" in err, err


def disclosed(folder: Path) -> Path:
    """A campaign file whose call script tells prospects about the affect model."""
    path = folder / "campaign.toml"
    path.write_text("[affect]\ndisclosed = true\n")
    return path


@pytest.mark.parametrize("swap", [False, True])
def test_the_affect_model_runs_only_on_channels_a_check_verified(
        alsa_home: AlsaHome, tmp_path: Path, swap: bool,
        ami_pair: Callable[[float], tuple[np.ndarray, np.ndarray]],
        capsys: pytest.CaptureFixture[str]) -> None:
    """With `--config`, the check keeps its verdict in the box's state directory. A box whose
    settings turn the prospect affect model on gets it only after a check of the same devices
    heard the agent on the agent's channel: swapped channels would read the agent's emotions."""
    from edge.box import Box
    from edge.settings import EdgeSettings

    state = tmp_path / "state"
    settings = EdgeSettings(site="site-a", box="box-a", broker_port=9, state_dir=state,
                            capture_device="miroir_headset", affect_enabled=True,
                            campaign_file=disclosed(tmp_path))
    box = Box(settings, load_vad_model(), version="test")
    assert box.pipeline.affect is None and box.affect_state == "blocked"  # no check yet
    box.outbox.close()
    # a campaign that does not disclose it: that is why it is off, whatever the check (no problem
    # for IT, the campaign's choice), and the model is not even loaded
    box = Box(dataclasses.replace(settings, campaign_file=None), load_vad_model(), version="test")
    assert box.pipeline.affect is None and box.affect_state == "undisclosed"
    box.outbox.close()
    agent, line = recording(ami_pair)
    raw = write_raw(tmp_path / "headset.raw", *((line, agent) if swap else (agent, line)))
    alsa_home.define("miroir_headset", raw)
    config = tmp_path / "box.toml"
    config.write_text(f'site = "site-a"\nbox = "box-a"\nstate_dir = "{state}"\n'
                      'capture_device = "miroir_headset"\n')
    rc = main(["edge", "check", "--config", str(config), "--seconds", str(SECONDS),
               "--cue-s", str(CUE_S), "--json"])
    capsys.readouterr()
    assert rc == (1 if swap else 0)
    verdict = json.loads((state / "install-check.json").read_text())
    assert verdict["swapped"] is swap and verdict["device"] == "miroir_headset"
    box = Box(settings, load_vad_model(), version="test")
    assert (box.pipeline.affect is not None) is not swap
    assert box.affect_state == ("blocked" if swap else "on")
    box.outbox.close()
    other = Box(EdgeSettings(site="site-a", box="box-a", broker_port=9, state_dir=state,
                             capture_device="another_headset", affect_enabled=True,
                             campaign_file=disclosed(tmp_path)),
                load_vad_model(), version="test")
    assert other.pipeline.affect is None  # a check of other devices says nothing of these
    other.outbox.close()


def test_an_affect_model_that_will_not_load_leaves_the_box_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged affect model file (its checksum no longer the manifest's): the box starts
    without the optional stage and says so in its status (it exited, and systemd gave up on it
    after ten restarts: no metrics at all)."""
    from edge.box import Box
    from edge.settings import EdgeSettings
    from miroir import wire
    from models import build

    real = build.manifest()
    damaged = {**real, "affect_int8_tflite": {**real["affect_int8_tflite"], "sha256": "0" * 64}}
    monkeypatch.setattr(build, "manifest", lambda: damaged)
    settings = EdgeSettings(site="site-a", box="box-a", broker_port=9, state_dir=tmp_path / "s",
                            affect_enabled=True, campaign_file=disclosed(tmp_path))
    box = Box(settings, load_vad_model(), version="test")
    try:
        assert box.pipeline.affect is None and box.affect_state == "failed"
        status = wire.status_message("site-a", "box-a", "online", 1.0, **box.status_fields())
        assert status["prospect_affect_state"] == "failed"
    finally:
        box.outbox.close()
    monkeypatch.setattr(build, "manifest", lambda: real)
    box = Box(settings, load_vad_model(), version="test")
    assert box.pipeline.affect is not None and box.affect_state == "on"
    box.outbox.close()
    # the campaign's script does not tell prospects: no model, and the status says why
    box = Box(dataclasses.replace(settings, campaign_file=None), load_vad_model(), version="test")
    assert box.pipeline.affect is None and box.affect_state == "undisclosed"
    box.outbox.close()


def test_a_check_holds_only_for_the_usb_adapters_it_was_made_with(tmp_path: Path) -> None:
    """The box names any USB adapter the same (udev): a verdict made with one adapter said nothing
    of another model, which may carry agent and line the other way round, yet the affect model ran
    on it (a reviewer fed it the agent's voice). /proc/asound as the kernel lays it out."""
    from edge.installcheck import save_verdict, verified

    proc = tmp_path / "asound"
    (proc / "card0").mkdir(parents=True)  # the Pi's own audio: no usbid
    (proc / "card1").mkdir()
    (proc / "card1" / "usbid").write_text("0d8c:0014\n")
    state = tmp_path / "state"
    report = {"swapped": False, "agent_heard": True}
    save_verdict(state, "miroir_headset", None, report, proc_asound=proc)
    assert json.loads((state / "install-check.json").read_text())["adapters"] == ["0d8c:0014"]
    assert verified(state, "miroir_headset", None, proc_asound=proc) is None
    (proc / "card1" / "usbid").write_text("1b3f:2008\n")  # another model, same card name
    why = verified(state, "miroir_headset", None, proc_asound=proc)
    assert why is not None and "1b3f:2008" in why and "run it again" in why
    save_verdict(state, "miroir_headset", None, report, proc_asound=proc)  # checked again
    assert verified(state, "miroir_headset", None, proc_asound=proc) is None


@pytest.mark.parametrize("cue_s", [0.0, 5.0])
def test_a_cue_that_leaves_no_quiet_or_no_speech_is_refused_before_recording(
        alsa_home: AlsaHome, tmp_path: Path, cue_s: float,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`--cue-s 0`: nothing before the cue to compare with, so room noise alone counted as the
    agent heard: a muted microphone passed the check, and its verdict unlocked the affect model.
    `--cue-s 5` in a 4-s recording: the agent never told to speak, and blamed ("not heard:
    check the headset microphone"), the failed verdict kept. Both are refused before anything is
    recorded or kept, naming the range; so is a --seconds of 0 (a traceback)."""
    rng = np.random.default_rng(2)
    n = int(SECONDS * 16_000)
    muted = rng.normal(0, 20, n).astype(np.int16)  # the agent's microphone: room noise alone
    idle = rng.normal(0, 5, n).astype(np.int16)  # no call on the line
    alsa_home.define("miroir_headset", write_raw(tmp_path / "headset.raw", muted, idle))
    state = tmp_path / "state"
    config = tmp_path / "box.toml"
    config.write_text(f'site = "site-a"\nbox = "box-a"\nstate_dir = "{state}"\n'
                      'capture_device = "miroir_headset"\n')
    rc = main(["edge", "check", "--config", str(config), "--seconds", str(SECONDS),
               "--cue-s", str(cue_s), "--json"])
    out, err = capsys.readouterr()
    assert (rc, out) == (2, ""), (rc, out)
    assert err.splitlines()[-1] == (
        f"miroir: error: --cue-s {cue_s:g} with --seconds {SECONDS:g}: the agent must be quiet "
        "for 1 s before the cue and speak for 1 s after it; give a --cue-s from 1 to "
        f"{SECONDS - 1:g}"), err
    assert not (state / "install-check.json").exists()
    with pytest.raises(SystemExit) as usage:
        main(["edge", "check", "--config", str(config), "--seconds", "0"])
    assert usage.value.code == 2
    assert "argument --seconds: 0 is not a positive number" in capsys.readouterr().err


def test_the_cue_second_is_taken_in_plain_digits_only(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`--cue-s` was read with Python's ``float``: '٢' (Arabic-Indic 2) was 2 s, '1_5' 15 s,
    and '٠' was refused as "--cue-s 0", a value nobody typed. Each is now a usage error naming
    the option and the rule, before anything is recorded."""
    config = tmp_path / "box.toml"
    config.write_text(f'site = "site-a"\nbox = "box-a"\nstate_dir = "{tmp_path / "state"}"\n')
    for typed in ("٠", "٢", "1_5", " 2"):
        with pytest.raises(SystemExit) as usage:
            main(["edge", "check", "--config", str(config), "--seconds", str(SECONDS),
                  "--cue-s", typed])
        assert usage.value.code == 2, typed
        assert (f"argument --cue-s: {typed} is not a number written with the digits 0-9 and at "
                "most one '.' only") in capsys.readouterr().err, typed
    assert not (tmp_path / "state").exists()


def test_a_cue_second_past_a_float_s_range_is_refused_as_typed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--cue-s` of 400 digits (plain, so taken) became infinity, and the refusal echoed
    "--cue-s inf", a value nobody typed. It is now a usage error saying it is too large (too far
    below 0 with a '-'), before anything is recorded."""
    config = tmp_path / "box.toml"
    config.write_text(f'site = "site-a"\nbox = "box-a"\nstate_dir = "{tmp_path / "state"}"\n')
    for typed, said in (("1" + "0" * 400, "too large"), ("-1" + "0" * 400, "too far below 0")):
        with pytest.raises(SystemExit) as usage:
            main(["edge", "check", "--config", str(config), "--seconds", str(SECONDS),
                  "--cue-s", typed])
        assert usage.value.code == 2, said
        err = capsys.readouterr().err
        assert f"argument --cue-s: {typed} is {said}" in err, err
        assert "inf" not in err, err
    assert not (tmp_path / "state").exists()
