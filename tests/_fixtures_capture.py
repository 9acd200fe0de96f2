"""Fixtures for capture tests: ALSA `file` PCMs in a test HOME, fed from real recordings.

An ALSA ``file`` PCM over the ``null`` slave hands PortAudio the bytes of a raw file: no sound card
needed. It delivers them as fast as they are read and junk past the end of the file.
"""

from __future__ import annotations

import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

AMI = Path(__file__).resolve().parents[2] / "shared" / "data" / "ami-headsets"
NEAR_WAV = AMI / "source0.wav"
FAR_WAV = AMI / "source1.wav"


def read_pcm16(path: Path) -> tuple[np.ndarray, int]:
    """Read a mono 16-bit WAV file as int16 samples and its rate in Hz."""
    with wave.open(str(path), "rb") as wf:
        assert wf.getnchannels() == 1 and wf.getsampwidth() == 2
        return np.frombuffer(wf.readframes(wf.getnframes()), dtype="<i2").copy(), wf.getframerate()


def write_raw(path: Path, *channels: np.ndarray) -> Path:
    """Write int16 channels interleaved as raw S16_LE (the layout ALSA's file PCM reads)."""
    n = min(len(c) for c in channels)
    np.stack([c[:n] for c in channels], axis=1).astype("<i2").tofile(path)
    return path


class AlsaHome:
    """A HOME whose ``.asoundrc`` defines file PCMs; set as HOME before PortAudio starts."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.pcms: dict[str, Path] = {}

    def define(self, name: str, infile: Path) -> None:
        """Define (or redefine) ``pcm.<name>`` reading ``infile``, and rewrite the asoundrc."""
        self.pcms[name] = infile
        self.write()

    def remove(self, name: str) -> None:
        """Drop ``pcm.<name>``, as if its device were unplugged."""
        self.pcms.pop(name, None)
        self.write()

    def write(self) -> None:
        """Write the asoundrc for the current PCMs."""
        text = "".join(
            f'pcm.{name} {{\n  type file\n  slave.pcm "null"\n  file "/dev/null"\n'
            f'  infile "{infile}"\n  format "raw"\n}}\n'
            for name, infile in self.pcms.items())
        (self.home / ".asoundrc").write_text(text)


@pytest.fixture
def alsa_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AlsaHome:
    """A test HOME with an (initially empty) ``.asoundrc``, set in the environment.

    XDG_RUNTIME_DIR goes with it: ALSA's pulse plugin, probed by PortAudio, otherwise makes a new
    ``/tmp/pulse-XXXXXXXX`` for every HOME without its link and leaves it there.
    """
    home = tmp_path / "home"
    home.mkdir()
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("ALSA_CONFIG_PATH", raising=False)
    ah = AlsaHome(home)
    ah.write()
    return ah


@pytest.fixture(scope="session")
def ami_pair() -> Callable[[float], tuple[np.ndarray, np.ndarray]]:
    """Return ``seconds`` of the near (source0) and far (source1) AMI headsets as int16 at 16 kHz."""
    near, rate_near = read_pcm16(NEAR_WAV)
    far, rate_far = read_pcm16(FAR_WAV)
    assert rate_near == rate_far == 16_000

    def take(seconds: float) -> tuple[np.ndarray, np.ndarray]:
        n = round(seconds * 16_000)
        return near[:n], far[:n]
    return take
