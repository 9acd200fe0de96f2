"""Audio sources: WAV files read block by block or into memory (analysis and replay). No audio is
ever written."""

from __future__ import annotations

import logging
import os
import stat
import struct
import threading
import time
import wave
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edge.frames import RATE_HZ

log = logging.getLogger(__name__)

MIN_RATE_HZ = 8_000
"""Lowest usable rate: narrow-band telephone audio."""
MAX_RATE_HZ = 192_000
"""Highest rate accepted: the highest a sound card or recorder commonly offers (resampled to 16 kHz)."""


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


def import_soxr(error: type[Exception] = RuntimeError) -> ModuleType:
    """The soxr module, imported when a resampler is first needed, or ``error`` with the install hint."""
    try:
        import soxr
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise error("soxr is not installed: `pip install 'miroir[box]'`") from exc
    return soxr


def resample(samples: np.ndarray, from_hz: int, to_hz: int = RATE_HZ) -> np.ndarray:
    """Resample a mono float32 signal with soxr (high quality, lazy import)."""
    if from_hz == to_hz:
        return samples
    return np.asarray(import_soxr().resample(samples, from_hz, to_hz, quality="HQ"), dtype=np.float32)


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


def _alaw_pcm16() -> np.ndarray:
    """The 16-bit value of each A-law code, as ITU-T G.711 defines its decoding.

    On the line every other bit is inverted (XOR 0x55); then bit 7 is the sign (set: positive),
    bits 6-4 the segment and bits 3-0 the step in it. G.711 decodes a step to the middle of its
    interval of the 13-bit signal: (2 * step + 1) units in segment 0, (2 * step + 33) units
    doubled for each segment past 1, a unit being 8 at 16 bits."""
    code = np.arange(256) ^ 0x55
    segment, step = (code >> 4) & 7, code & 0x0F
    middle = np.where(segment == 0, 16 * step + 8,
                      (16 * step + 264) << np.maximum(segment - 1, 0))
    return np.where(code & 0x80, middle, -middle).astype(np.int16)


def _mulaw_pcm16() -> np.ndarray:
    """The 16-bit value of each mu-law code, as ITU-T G.711 defines its decoding.

    On the line every bit is inverted; then bit 7 is the sign (set: negative), bits 6-4 the
    segment and bits 3-0 the step in it. G.711 decodes a step to the middle of its interval of
    the 14-bit signal: (2 * step + 33) units doubled for each segment, less the bias of 33, a
    unit being 4 at 16 bits (so that 0xFF and 0x7F both decode to 0)."""
    code = ~np.arange(256) & 0xFF
    segment, step = (code >> 4) & 7, code & 0x0F
    middle = ((8 * step + 132) << segment) - 132
    return np.where(code & 0x80, -middle, middle).astype(np.int16)


ALAW, MULAW = 6, 7
"""The WAV format tags of G.711's two laws."""
G711_LAWS = {ALAW: "A-law", MULAW: "mu-law"}
"""Format tag -> the law's name."""
G711_PCM16 = {ALAW: _alaw_pcm16(), MULAW: _mulaw_pcm16()}
"""Format tag -> int16 value of each of the 256 codes (the values sox and telephony stacks give)."""
_G711_FLOAT = {tag: table.astype(np.float32) / np.float32(32768.0) for tag, table in G711_PCM16.items()}
"""Format tag -> each code as float32, full scale +-1.0 (as 16-bit PCM of the same values reads)."""


_EXTENSIBLE = 0xFFFE
_SUBFORMAT_TAIL = bytes.fromhex("000000001000800000aa00389b71")
"""The GUID of an extensible WAV's subformat after its first two bytes (the format tag)."""


_OTHER_FORMATS = {2: "Microsoft ADPCM samples", 0x11: "IMA ADPCM samples", 0x31: "GSM 6.10 samples",
                  0x55: "MP3 samples", _EXTENSIBLE: "samples of an unknown extensible subformat"}
"""Format tags of WAVs that recorders write and that are not read, as the error names them."""
CONVERT = "convert them first, e.g. `sox IN.wav -b 16 -e signed OUT.wav`"
"""What an error about samples that are not read says to do."""


STREAMED_DATA_BYTES = (0xFFFFFFFF, 0x7FFFF000)
"""Data chunk sizes that a writer which cannot go back to its header leaves there, not a length:
the largest (ffmpeg and most streaming writers) and sox's, writing to a pipe."""


class _WaveReader(wave.Wave_read):
    """Python's WAV reader, also for PCM in the extensible format (sox and ffmpeg write 24- and
    32-bit PCM that way; Python's own reader takes it only from 3.12) and for G.711 A-law and
    mu-law (plain or extensible), whose codes :attr:`format_tag` says how to decode."""

    _format_tag = wave.WAVE_FORMAT_PCM

    @property
    def format_tag(self) -> int:
        """1 (PCM), :data:`ALAW` or :data:`MULAW` (an extensible file's subformat)."""
        return self._format_tag

    @property
    def length_unset(self) -> bool:
        """The header's data size is a streaming writer's placeholder (the file is read to its
        end), not a length the file may fall short of."""
        return int(self._data_chunk.chunksize) in STREAMED_DATA_BYTES  # type: ignore[attr-defined]

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
        if tag in G711_LAWS:
            if bits != 8:
                raise wave.Error(f"{G711_LAWS[tag]} samples of {bits} bits, while G.711 has 8")
            self._comptype, self._compname = ("ALAW", "A-law") if tag == ALAW else ("ULAW", "mu-law")
        elif tag == wave.WAVE_FORMAT_PCM:
            self._comptype, self._compname = "NONE", "not compressed"
        elif tag == 3:  # plain or extensible
            raise wave.Error(f"float samples; {CONVERT}")
        else:
            what = f"{_OTHER_FORMATS[tag]}, format tag" if tag in _OTHER_FORMATS else "format tag"
            raise wave.Error(f"{what} {tag}, neither PCM nor G.711; {CONVERT}")
        self._sampwidth = (bits + 7) // 8
        if not self._sampwidth:
            raise wave.Error("bad sample width")
        if not self._nchannels:
            raise wave.Error("bad # of channels")
        self._framesize = self._nchannels * self._sampwidth
        self._format_tag = tag


BLOCK_S = 1.0
"""Seconds of the file read at a time (a second at the file's own rate)."""


TWO_FILES = "give the agent and the line as two mono files"
"""What a stereo file's error says to do (a command adds its own syntax)."""


class WavStream:
    """A mono 8-, 16-, 24- or 32-bit PCM or 8-bit G.711 (A-law, mu-law: a phone system's
    recording) WAV file, plain or extensible format, read block by block and resampled to 16 kHz
    as it goes: a long recording is never held in memory.

    Opening it checks the header and reads the first block, so that every one-line error
    (:class:`AudioInputError`) comes before any analysis. A file cut short (an interrupted
    recorder, a streaming header) is read as far as it goes, with a warning at its end.

    Raises:
        AudioInputError: not a readable WAV file, not mono, float or other compressed samples
            (G.711 aside), or empty.
    """

    def __init__(self, path: Path, *, notice: bool = True,
                 two_files: str = TWO_FILES) -> None:
        self.path = path
        self._two_files = two_files
        """What a stereo file's error says to do instead (each command its own syntax)."""
        self._wf = _open_wav(path)
        try:
            self._check_header(notice)
            self._first = self._read(self._block_frames)
            if not len(self._first):
                said = f" (its header says {self._header_frames} samples: cut short)" \
                    if self._header_frames and not self._wf.length_unset else ""
                raise AudioInputError(f"{path}: holds no audio{said}")
        except BaseException:
            self._wf.close()
            raise

    def _check_header(self, notice: bool) -> None:
        wf, path = self._wf, self.path
        channels, width = wf.getnchannels(), wf.getsampwidth()
        self.source_rate_hz: int = wf.getframerate()
        """The file's own sample rate (resampled if different)."""
        self._header_frames = wf.getnframes()
        if channels != 1:
            raise AudioInputError(f"{path}: has {channels} channels, expected mono "
                                  f"({self._two_files})")
        if width not in _PCM_SCALE:
            raise AudioInputError(f"{path}: {8 * width}-bit samples, expected 8-, 16-, 24- or "
                                  "32-bit PCM (`sox IN.wav -b 16 -e signed OUT.wav` converts)")
        if not MIN_RATE_HZ <= self.source_rate_hz <= MAX_RATE_HZ:
            raise AudioInputError(f"{path}: sample rate {self.source_rate_hz} Hz is outside "
                                  f"{MIN_RATE_HZ}..{MAX_RATE_HZ} Hz")
        self._width = width
        self._g711 = _G711_FLOAT.get(wf.format_tag)
        """Each G.711 code as float32 (None: PCM)."""
        self._block_frames = max(1, round(BLOCK_S * self.source_rate_hz))
        self._held = 0
        self._resampler: Any = None
        if self.source_rate_hz != RATE_HZ:
            if notice:
                log.warning("%s: resampling from %d Hz to %d Hz", path, self.source_rate_hz, RATE_HZ)
            self._resampler = _resample_stream(self.source_rate_hz)

    @property
    def expected_s(self) -> float | None:
        """The recording's length as its header says (at most what a file on disk holds),
        seconds; None when nothing says it (a pipe whose writer left no length in the header)."""
        try:
            info: os.stat_result | None = self.path.stat()
        except OSError:
            info = None
        if info is not None and stat.S_ISREG(info.st_mode):
            return min(self._header_frames, info.st_size // self._width) / self.source_rate_hz
        if self._wf.length_unset:  # a pipe or a device has no size to bound it
            return None
        return self._header_frames / self.source_rate_hz

    def _read(self, frames: int) -> np.ndarray:
        """Up to ``frames`` samples at the file's rate (fewer at its end)."""
        try:
            raw = self._wf.readframes(frames)
        except (wave.Error, EOFError, OSError) as exc:
            raise AudioInputError(f"{self.path}: cannot read ({exc})") from None
        whole = len(raw) // self._width  # a sample cut in two at the end is dropped
        self._held += whole
        if self._g711 is not None:  # one byte a sample
            return self._g711[np.frombuffer(raw, dtype=np.uint8)]
        return _pcm(raw[: whole * self._width], self._width)

    def _warn_cut_short(self, held: int) -> None:
        if held < self._header_frames and (held == 0 or not self._wf.length_unset):
            log.warning("%s: cut short: its header says %d samples, it holds %d; reading those",
                        self.path, self._header_frames, held)

    def blocks(self) -> Iterator[np.ndarray]:
        """Yield the recording's float32 samples at 16 kHz, full scale +-1.0, block by block."""
        try:
            block = self._first
            self._first = np.zeros(0, dtype=np.float32)
            while len(block):
                yield block if self._resampler is None else self._resampler.resample_chunk(block)
                block = self._read(self._block_frames)
            self._warn_cut_short(self._held)
            if self._resampler is not None:  # the resampler's last samples
                yield self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        finally:
            self._wf.close()

    def close(self) -> None:
        """Close the file (reading it to its end closes it too)."""
        self._wf.close()


PIPE_NOTICE_S = 1.0
"""A named pipe nothing writes to yet is said to be waited on after this many seconds."""


def _waiting_notice(path: Path) -> threading.Timer | None:
    """For a named pipe (opening it waits for a writer), a started timer that says so unless
    cancelled first; None for anything else."""
    try:
        if not stat.S_ISFIFO(path.stat().st_mode):
            return None
    except OSError:  # missing: the open below says so
        return None
    timer = threading.Timer(PIPE_NOTICE_S, log.warning, (
        "%s: a named pipe that nothing writes to yet: waiting for a writer (Ctrl-C stops)", path))
    timer.daemon = True
    timer.start()
    return timer


def _open_wav(path: Path) -> _WaveReader:
    """Open a WAV file's header, with a one-line :class:`AudioInputError` for what cannot be read
    (a named pipe is waited on, with a notice when no writer comes within :data:`PIPE_NOTICE_S`)."""
    notice = _waiting_notice(path)
    try:
        return _WaveReader(str(path))
    except FileNotFoundError:
        raise AudioInputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise AudioInputError(f"{path}: is a directory, not a WAV file") from None
    except (wave.Error, EOFError) as exc:
        why = str(exc) or "empty, or cut short in its header"
        raise AudioInputError(f"{path}: not a readable WAV file ({why})") from None
    except OSError as exc:  # no permission, a path through a file
        raise AudioInputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    finally:
        if notice is not None:
            notice.cancel()


def _resample_stream(from_hz: int, to_hz: int = RATE_HZ) -> Any:
    """A soxr resampler fed block by block (the same samples as :func:`resample` of the whole)."""
    return import_soxr().ResampleStream(from_hz, to_hz, 1, dtype="float32", quality="HQ")


def read_wav(path: Path, *, notice: bool = True, two_files: str = TWO_FILES) -> Recording:
    """Read a whole mono PCM or G.711 WAV file (see :class:`WavStream`) into memory, resampled to
    16 kHz.

    Raises:
        AudioInputError: not a readable WAV file, not mono, float or other compressed samples
            (G.711 aside), or empty.
    """
    stream = WavStream(path, notice=notice, two_files=two_files)
    return Recording(np.concatenate(list(stream.blocks())), RATE_HZ, stream.source_rate_hz)


def rebuffer(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Re-cut 1-d blocks into blocks of exactly ``size`` samples (the last one may be shorter)."""
    held: list[np.ndarray] = []
    n = 0
    for block in blocks:
        held.append(block)
        n += len(block)
        if n >= size:
            joined = np.concatenate(held)
            whole = n // size * size
            yield from (joined[i:i + size] for i in range(0, whole, size))
            held, n = [joined[whole:]], n - whole
    if n:
        yield np.concatenate(held)


def pair_blocks(near: WavStream, far: WavStream | None,
                block_samples: int = RATE_HZ) -> Iterator[np.ndarray]:
    """Near and far as (2, block_samples) float32 blocks (the last one may be shorter), as
    :func:`pair` stacks them: a missing or shorter far (or near) channel is digital silence."""
    empty = np.zeros(0, dtype=np.float32)
    sides = [rebuffer(near.blocks(), block_samples),
             rebuffer(far.blocks() if far is not None else iter(()), block_samples)]
    while True:
        got = [next(side, empty) for side in sides]
        n = max(len(g) for g in got)
        if n == 0:
            return
        out = np.zeros((2, n), dtype=np.float32)
        for i, g in enumerate(got):
            out[i, : len(g)] = g
        yield out


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
