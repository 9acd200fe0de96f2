"""The box settings file: validated, unknown keys refused by name."""

from pathlib import Path

import pytest

from edge.settings import EdgeSettings, SettingsError, load


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "box.toml"
    path.write_text(text)
    return path


def test_load_good(tmp_path):
    cfg = load(_write(tmp_path, 'site = "s"\nbox = "b-1"\nbroker_port = 9883\nca_file = "/x/ca.pem"\n'))
    assert cfg == EdgeSettings(site="s", box="b-1", broker_port=9883, ca_file=Path("/x/ca.pem"))


@pytest.mark.parametrize("text,match", [
    ('site = "s"\nbox = "b"\nbroker_prot = 1\n', "broker_prot"),
    ('site = "s"\nbox = "b"\nbroker_port = "x"\n', "broker_port"),
    ('site = "s"\nbox = "b"\nbroker_port = 70000\n', "broker_port"),
    ('site = "s"\nbox = "B/1"\n', "box"),
    ('site = "s"\n', "box"),
    ('site = "s"\nbox = "b"\nvad_on_threshold = 0.2\n', "vad_off_threshold"),
    ('site = "s"\nbox = "b"\ncall_end_silence_s = 2.0\n', "call_end_silence_s .* 5..600"),
    ('site = "s"\nbox = "b"\ncall_start_on_speech = 1\n', "call_start_on_speech"),
    ("site = [", "TOML"),
    ('site = "s"\nbox = "b"\nwindow_s = nan\n', "window_s nan .* 0.5..10"),
    ('site = "s"\nbox = "b"\nkeepalive_s = 0\n', "keepalive_s 0 .* 1..3600"),
    ('site = "s"\nbox = "b"\nvad_min_speech_ms = -100\n', "vad_min_speech_ms .* 0..1000"),
    ('site = "s"\nbox = "b"\nvad_min_silence_ms = inf\n', "vad_min_silence_ms"),
    ('site = "s"\nbox = "b"\ncapture_rate_hz = -16000\n', "capture_rate_hz .* 8000..192000"),
    ('site = "s"\nbox = "b"\nbaseline_max_age_h = nan\n', "baseline_max_age_h"),
    ('site = "s"\nbox = "b"\nbox = "c"\n', "TOML"),
    # 2000 nested arrays: TOML's parser recursed past Python's limit, a RecursionError and a
    # 2000-line traceback at `miroir edge run`, not the file's name
    ('site = "s"\nbox = "b"\nkeepalive_s = ' + "[" * 2000 + "]" * 2000 + "\n",
     "box.toml: not valid TOML \\(nested too deep\\)"),
    # a NUL in a path: `miroir edge run` died with "ValueError: embedded null byte" and a traceback
    ('site = "s"\nbox = "b"\nca_file = "/etc/miroir/ca.pem\\u0000"\n',
     "box.toml: setting 'ca_file': a NUL character .*'/etc/miroir/ca.pem\\\\x00'"),
    ('site = "s"\nbox = "b"\nstate_dir = "/var/lib/\\u0000miroir"\n', "setting 'state_dir': a NUL"),
    ('site = "s"\nbox = "b"\ncontrol_group = "miroir-control\\u0000"\n', "'control_group': a NUL"),
    # an empty broker_host: `miroir edge run` died in paho's connect with "ValueError: Invalid host."
    ('site = "s"\nbox = "b"\nbroker_host = ""\n', "box.toml: broker_host '' is empty"),
    ('site = "s"\nbox = "b"\nbroker_host = " "\n', "broker_host ' ' is empty"),
])
def test_bad_files_refused_with_the_key(tmp_path, text, match):
    with pytest.raises(SettingsError, match=match):
        load(_write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(SettingsError, match="no such"):
        load(tmp_path / "nope.toml")


def test_an_unreadable_path_is_a_clear_error(tmp_path):
    with pytest.raises(SettingsError, match="cannot read the settings file"):
        load(tmp_path)  # a directory


def test_the_box_names_its_settings_file_and_the_range_as_the_campaign_file_does(tmp_path):
    """`miroir edge run --config box.toml` said "broker_port 70000 is not a TCP port (1..65535)"
    and "setting 'keepalive_s': expected int, got 'x'": which file, and for a wrong type what the
    key accepts, it did not say, where a campaign file's error starts with its path. Both do."""
    import os
    import subprocess
    import sys

    cases = [("broker_port = 70000", "broker_port 70000 is not a TCP port (1..65535)"),
             ('keepalive_s = "x"', "setting 'keepalive_s': expected int, got 'x' (allowed range "
                                   "1..3600)")]
    taken = tmp_path / "a-file"
    taken.write_text("")
    # state_dir unusable: a 30-line traceback from the outbox's mkdir, naming neither the setting
    # nor the settings file
    cases += [(f'state_dir = "{taken}"', f"state_dir {taken}: not a directory"),
              (f'state_dir = "{taken}/state"', f"state_dir {taken}/state: cannot be made (Not a "
                                                "directory)")]
    for line, message in cases:
        path = _write(tmp_path, f'site = "s"\nbox = "b"\n{line}\n')
        done = subprocess.run([sys.executable, "-m", "miroir", "edge", "run", "--config",
                               str(path)], capture_output=True, text=True, timeout=60,
                              env={**os.environ})
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines() == [f"miroir: error: {path}: {message}"], done.stderr
