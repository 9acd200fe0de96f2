"""Audio sources: WAV files read into memory (analysis and replay). No audio is ever written."""

from __future__ import annotations

import logging
import struct
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.frames import RATE_HZ

log = logging.getLogger(__name__)

MIN_RATE_HZ = 8_000
"""Lowest usable rate: narrow-band telephone audio."""
MAX_RATE_HZ = 192_000


class AudioInputError(ValueError):
    """A recording that cannot be used, with a one-line reason."""


@dataclass(frozen=True)
class Recording:
    """A mono recording at :data:`edge.frames.RATE_HZ`, in memory."""

    samples: np.ndarray
    """float32 samples, full scale +-1.0."""
    rate_hz: int
    """Always :data:`RATE_HZ` after loading."""
    source_rate_hz: int
    """The file's own sample rate (resampled if different)."""

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.rate_hz


def resample(samples: np.ndarray, from_hz: int, to_hz: int = RATE_HZ) -> np.ndarray:
    """Resample a mono float32 signal with soxr (high quality, lazy import)."""
    if from_hz == to_hz:
        return samples
    try:
        import soxr
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("soxr is not installed: `pip install 'miroir[box]'`") from exc
    return np.asarray(soxr.resample(samples, from_hz, to_hz, quality="HQ"), dtype=np.float32)


_PCM_SCALE = {1: 128.0, 2: 32768.0, 3: 8388608.0, 4: 2147483648.0}
"""Bytes per sample -> full scale of WAV PCM (8-bit is unsigned, the others signed)."""


def _pcm(raw: bytes, width: int) -> np.ndarray:
    """Little-endian PCM samples as float32, full scale +-1.0."""
    if width == 1:
        x = np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        x = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8).astype(np.float32)
    else:
        x = np.frombuffer(raw, dtype="<i2" if width == 2 else "<i4").astype(np.float32)
    return x / np.float32(_PCM_SCALE[width])


_EXTENSIBLE = 0xFFFE
_SUBFORMAT_TAIL = bytes.fromhex("000000001000800000aa00389b71")
"""The GUID of an extensible WAV's subformat after its first two bytes (the format tag)."""


class _WaveReader(wave.Wave_read):
    """Python's WAV reader, also for PCM in the extensible format (sox and ffmpeg write 24- and
    32-bit PCM that way; Python's own reader takes it only from 3.12)."""

    def _read_fmt_chunk(self, chunk: Any) -> None:
        fmt = chunk.read(40)
        if len(fmt) < 16:
            raise EOFError
        tag, self._nchannels, self._framerate, _, _, bits = struct.unpack_from("<HHLLHH", fmt)
        if tag == _EXTENSIBLE:
            if len(fmt) < 40:
                raise EOFError
            if fmt[26:40] == _SUBFORMAT_TAIL:
                tag = int.from_bytes(fmt[24:26], "little")  # the subformat: 1 is PCM, 3 float
        if tag != wave.WAVE_FORMAT_PCM:
            raise wave.Error(f"unknown format: {tag}")
        self._sampwidth = (bits + 7) // 8
        if not self._sampwidth:
            raise wave.Error("bad sample width")
        if not self._nchannels:
            raise wave.Error("bad # of channels")
        self._framesize = self._nchannels * self._sampwidth
        self._comptype = "NONE"
        self._compname = "not compressed"


def read_wav(path: Path, *, notice: bool = True) -> Recording:
    """Read a mono 8-, 16-, 24- or 32-bit PCM WAV file (plain or extensible format) into memory,
    resampled to 16 kHz.

    A file cut short (an interrupted recorder, a streaming header) is read as far as it goes, with
    a warning.

    Raises:
        AudioInputError: not a readable WAV file, not mono, float samples, or empty.
    """
    try:
        with _WaveReader(str(path)) as wf:
            channels, width, rate_hz = wf.getnchannels(), wf.getsampwidth(), wf.getframerate()
            n = wf.getnframes()
            raw = wf.readframes(n)
    except FileNotFoundError:
        raise AudioInputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise AudioInputError(f"{path}: is a directory, not a WAV file") from None
    except (wave.Error, EOFError) as exc:
        why = str(exc) or "empty, or cut short in its header"
        convert = "convert them first, e.g. `sox IN.wav -b 16 -e signed OUT.wav`"
        if why.endswith("format: 3"):  # float samples (plain or extensible)
            why = f"float samples; {convert}"
        elif why.endswith(("format: 6", "format: 7")):  # G.711, as phone systems record calls
            law = "A-law" if why.endswith("6") else "mu-law"
            why = f"{law} samples (G.711, a phone system's recording); {convert}"
        raise AudioInputError(f"{path}: not a readable PCM WAV file ({why})") from None
    except OSError as exc:  # no permission, a path through a file
        raise AudioInputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if channels != 1:
        raise AudioInputError(f"{path}: has {channels} channels, expected mono "
                              "(give the agent and the line as two files: NEAR --far FAR)")
    if width not in _PCM_SCALE:
        raise AudioInputError(f"{path}: {8 * width}-bit samples, expected 8-, 16-, 24- or 32-bit "
                              "PCM (`sox IN.wav -b 16 -e signed OUT.wav` converts)")
    held = len(raw) // width
    if held < n:
        log.warning("%s: cut short: its header says %d samples, it holds %d; reading those",
                    path, n, held)
    if held == 0:
        raise AudioInputError(f"{path}: holds no audio")
    if not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ:
        raise AudioInputError(f"{path}: sample rate {rate_hz} Hz is outside "
                              f"{MIN_RATE_HZ}..{MAX_RATE_HZ} Hz")
    samples = _pcm(raw[: held * width], width)
    if rate_hz != RATE_HZ:
        if notice:
            log.warning("%s: resampling from %d Hz to %d Hz", path, rate_hz, RATE_HZ)
        samples = resample(samples, rate_hz)
    return Recording(samples, RATE_HZ, rate_hz)


def pair(near: Recording, far: Recording | None) -> np.ndarray:
    """Stack near and far into a (2, n) array; a missing far channel is digital silence."""
    n = len(near.samples) if far is None else max(len(near.samples), len(far.samples))
    out = np.zeros((2, n), dtype=np.float32)
    out[0, : len(near.samples)] = near.samples
    if far is not None:
        out[1, : len(far.samples)] = far.samples
    return out


class ReplaySource:
    """Replays a two-channel recording block by block, paced in real time or as fast as possible.

    Args:
        audio: (2, n) float32 samples at ``rate_hz``.
        rate_hz: sample rate.
        block_samples: samples per block (the size a sound card would deliver).
        realtime: pace blocks to the wall clock.
        loop: start again at the end (demo floor) instead of stopping.
    """

    def __init__(self, audio: np.ndarray, rate_hz: int = RATE_HZ, block_samples: int = 1024,
                 realtime: bool = True, loop: bool = False) -> None:
        self.audio = audio
        self.rate_hz = rate_hz
        self.block_samples = block_samples
        self.realtime = realtime
        self.loop = loop

    def blocks(self) -> Iterator[np.ndarray]:
        """Yield (2, block_samples) blocks (the last one may be shorter) until the end."""
        n = self.audio.shape[1]
        t0 = time.monotonic()
        sent = 0
        while True:
            for i in range(0, n, self.block_samples):
                block = self.audio[:, i:i + self.block_samples]
                if self.realtime:
                    delay = t0 + sent / self.rate_hz - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                sent += block.shape[1]
                yield block
            if not self.loop:
                return
