"""Live capture from the box's headset adapter with PyAudio (PortAudio over ALSA).

One stereo device (left = agent mic / near, right = line / far) or two mono devices, chosen by
ALSA device name. The PortAudio callback only hands the driver's bytes to a bounded queue (a full
queue counts an overrun and drops the block); conversion, resampling to 16 kHz, pacing and
device-loss handling all happen in the consumer, :meth:`CaptureSource.blocks`.

PortAudio enumerates devices once per ``PyAudio()`` instance, so the source creates a fresh instance
for every (re)open: an unplugged headset that comes back is found again without a restart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.frames import RATE_HZ
from edge.source import import_soxr
from edge.stop import StopFlag
from miroir import wire

log = logging.getLogger(__name__)

INSTALL_HINT = ("PyAudio is not installed: `pip install 'miroir[box]'` "
                "(building it needs PortAudio's headers: `apt-get install portaudio19-dev`)")
PROBE_RATES_HZ = (RATE_HZ, 48_000, 44_100, 8_000)
"""Rates tried, in order, when the device rate is not configured."""
PACE_SLACK = 1.02
"""Pacing lets audio run this much faster than the wall clock, so that a real device whose clock is
a little fast is never throttled (which would fill the queue), while a file PCM is still slowed down."""
_PA_INT16 = 8  # paInt16
_PA_CONTINUE = 0
_PA_COMPLETE = 1
_PA_INPUT_OVERFLOW = 2
_stderr_lock = threading.Lock()


class CaptureError(RuntimeError):
    """A capture device that cannot be used, with a one-line reason naming it."""


class DeviceNotFoundError(CaptureError):
    """No input device matches the configured name (the message lists the available ones)."""


def import_pyaudio() -> Any:
    """Import PyAudio lazily, or raise :class:`CaptureError` with the install hint."""
    try:
        import pyaudio
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise CaptureError(INSTALL_HINT) from exc
    return pyaudio


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Divert file descriptor 2 while PortAudio/ALSA/JACK print their probing noise.

    The noise is logged at DEBUG level instead. Anything another thread writes to descriptor 2
    during the (short) diversion is logged the same way, not lost; the ``miroir`` command's own
    log has a descriptor of its own, so its lines are never diverted.
    """
    fd = 2  # the C library's stderr, whatever Python's sys.stderr is (pytest replaces it)
    try:
        os.fstat(fd)
    except OSError:
        yield
        return
    with _stderr_lock, tempfile.TemporaryFile() as sink:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        saved = os.dup(fd)
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            noise = sink.read().decode(errors="replace").strip()
            if noise:
                log.debug("PortAudio/ALSA said on stderr:\n%s", noise)


def open_pyaudio(pyaudio_module: Any = None) -> Any:
    """Create a ``PyAudio`` instance (device enumeration happens here) without stderr noise."""
    pa = pyaudio_module or import_pyaudio()
    with quiet_stderr():
        return pa.PyAudio()


def _input_devices(pa: Any) -> list[dict[str, Any]]:
    devices = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        if int(info.get("maxInputChannels", 0)) > 0:
            devices.append(info)
    return devices


def list_devices() -> list[str]:
    """Names of the input devices PortAudio sees now (for ``miroir edge devices``)."""
    pa = open_pyaudio()
    try:
        return [str(d["name"]) for d in _input_devices(pa)]
    finally:
        pa.terminate()


def find_device(pa: Any, name: str, channels: int = 1) -> dict[str, Any]:
    """Find the input device called ``name``: an exact match, else a unique substring match.

    Args:
        pa: a ``PyAudio`` instance.
        name: the configured device name, e.g. ``"hw:1,0"``, ``"USB Audio"`` or an asoundrc PCM.
        channels: input channels the device must offer.

    Returns:
        PortAudio's device info dictionary.

    Raises:
        DeviceNotFoundError: no match, or several, or too few input channels.
    """
    devices = _input_devices(pa)
    names = [str(d["name"]) for d in devices]
    available = ", ".join(repr(n) for n in names) or "none"
    matches = [d for d in devices if d["name"] == name]
    if not matches:
        matches = [d for d in devices if name.lower() in str(d["name"]).lower()]
    if not matches:
        raise DeviceNotFoundError(f"capture device {name!r} not found; available input devices: "
                                  f"{available}")
    if len(matches) > 1:
        listed = ", ".join(repr(str(d["name"])) for d in matches)
        raise DeviceNotFoundError(f"capture device {name!r} is ambiguous: it matches {listed}; "
                                  "give a longer name")
    info = matches[0]
    if int(info["maxInputChannels"]) < channels:
        raise DeviceNotFoundError(
            f"capture device {info['name']!r} has {info['maxInputChannels']} input channel(s), "
            f"{channels} needed (give agent and line as two mono devices: device and far_device)")
    return info


@dataclass(frozen=True)
class CaptureConfig:
    """Which device(s) to open and how the source behaves."""

    device: str
    """Stereo device (left near, right far), or the near (agent) device if ``far_device`` is set."""
    far_device: str | None = None
    """The far (line) device when the adapter shows up as two mono devices."""
    device_rate_hz: int | None = None
    """Rate to open the device(s) at; ``None`` probes 16 kHz, then the device's default rate,
    then 48, 44.1 and 8 kHz."""
    block_ms: float = 64.0
    """Length of one PortAudio buffer (one callback)."""
    queue_blocks: int = 64
    """Bound of each callback queue, in blocks (64 x 64 ms = 4 s of stalled consumer)."""
    realtime: bool = True
    """Never yield audio (much) faster than the wall clock: a file PCM delivers instantly. Its
    whole data must then fit in the queue (``queue_blocks``), or the excess counts as overruns."""
    max_seconds: float | None = None
    """Stop after this much audio per device open (the length of a file PCM's data)."""
    stall_s: float = 2.0
    """No data for this long from an open stream means the device is gone."""
    idle_s: float = 0.5
    """While the device is gone, yield an empty block this often so the main loop keeps running."""
    backoff_s: float = 0.5
    """First wait before re-opening a lost device; doubles up to ``backoff_max_s``."""
    backoff_max_s: float = 10.0
    """Longest wait between two re-open attempts."""
    max_drift_s: float = 1.0
    """Two mono devices: the most one channel may run ahead of the other before it is trimmed
    (their clocks drift apart over hours; file PCMs in tests deliver one after the other)."""

    def __post_init__(self) -> None:
        if self.device_rate_hz is not None and not 8_000 <= self.device_rate_hz <= 192_000:
            raise CaptureError(f"device_rate_hz {self.device_rate_hz} is outside 8000..192000 Hz")
        if self.block_ms <= 0 or self.queue_blocks < 1:
            raise CaptureError("block_ms must be > 0 and queue_blocks >= 1")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise CaptureError("max_seconds must be > 0")


CLOSE_WAIT_S = 1.0
"""How long closing the stream(s) may take before it is left to a thread of its own: PortAudio's
stop (and its abort) wait for the callback thread, which a device that opened and delivers nothing
can hold in the driver's read for good (an ALSA file PCM on a silent FIFO: the box never came
back from the close, and a SIGTERM then found it there)."""
ADC_SLACK_S = 1.0
"""Silence put back for a driver overflow may exceed the wall time since the last block by this
much (PortAudio's capture times are exact where a late callback shortened that wall time); a
capture clock that jumps further is not believed."""


class _Input:
    """One open PortAudio input stream and its bounded queue; the callback is the only writer.

    A block the full queue cannot take is dropped and counted; the next block that gets in carries
    how many frames were lost before it (the dropped blocks and the driver's own losses, at most the
    wall-clock time since the last block got in), and the reader puts that much silence back in
    its place, so the audio clock and the two channels of two mono devices stay aligned.
    """

    def __init__(self, owner: CaptureSource, info: dict[str, Any], channels: int, rate_hz: int,
                 max_frames: int | None) -> None:
        self.owner = owner
        self.name = str(info["name"])
        self.index = int(info["index"])
        self.channels = channels
        self.rate_hz = rate_hz
        self.frame_bytes = 2 * channels
        self.queue: queue.Queue[tuple[int, bytes]] = queue.Queue(maxsize=owner.config.queue_blocks)
        """(frames lost just before, raw PCM16 bytes) per callback."""
        self._lost_frames = 0
        self._put_t = self._called_t = time.monotonic()
        self._next_adc_s: float | None = None
        """Capture time of the sample after the last block (PortAudio's ADC clock), if it gives one."""
        self._overflow_lost = False
        self.remaining = max_frames
        self.delivered = False
        """The reader has taken audio from this stream since it opened."""
        self.done = False
        self.last_data = time.monotonic()
        self.stream: Any = None
        self.resampler: Any = None
        if rate_hz != RATE_HZ:
            self.resampler = import_soxr(CaptureError).ResampleStream(
                rate_hz, RATE_HZ, channels, dtype="float32", quality="HQ")

    def callback(self, in_data: bytes | None, frame_count: int, time_info: Any,
                 status: int) -> tuple[None, int]:
        """PortAudio's callback: hand the bytes over, never block, never compute."""
        now = time.monotonic()
        adc_s = time_info.get("input_buffer_adc_time") if isinstance(time_info, dict) else None
        if status & _PA_INPUT_OVERFLOW:
            self.owner.input_overflows += 1
            # the driver lost frames before this block (silence in their place keeps the audio
            # clock and two mono devices aligned): from the capture times PortAudio gives, else as
            # many as the wall time since the last callback (blocks the full queue dropped since
            # are counted already) exceeds this block's length
            if adc_s and self._next_adc_s is not None:
                gap = round((adc_s - self._next_adc_s) * self.rate_hz)
            else:
                gap = round((now - self._called_t) * self.rate_hz) - frame_count
            self._lost_frames += max(0, gap)
            self._overflow_lost = True
        self._called_t = now
        if adc_s:
            self._next_adc_s = adc_s + frame_count / self.rate_hz
        data = in_data or b""
        last = False
        if self.remaining is not None:
            last = frame_count >= self.remaining
            data = data[: self.remaining * self.frame_bytes]
            self.remaining -= min(frame_count, self.remaining)
        try:
            # silence for the frames lost before this block, no more than the time since the last
            # block got in (a file PCM delivers far faster than the wall clock: nothing to restore);
            # capture times may run ahead of it after a late callback, never by an hour
            slack_s = ADC_SLACK_S if self._overflow_lost else 0.0
            # (never below none: the opener may have set _put_t after this callback read the clock)
            lost = max(0, min(self._lost_frames, round((now - self._put_t + slack_s) * self.rate_hz)))
            self.queue.put_nowait((lost, data))
            self._lost_frames = 0
            self._overflow_lost = False
            self._put_t = now
        except queue.Full:
            self.owner.overruns += 1
            self._lost_frames += len(data) // self.frame_bytes
        if last:
            self.done = True  # after the put: done and empty means everything was taken
            return None, _PA_COMPLETE
        return None, _PA_CONTINUE

    def active(self) -> bool:
        """True while PortAudio still runs the stream."""
        try:
            return bool(self.stream is not None and self.stream.is_active())
        except OSError:
            return False

    def convert(self, chunks: list[tuple[int, bytes]], last: bool = False) -> np.ndarray:
        """Turn queued chunks into (channels, n) float32 samples at 16 kHz (silence for lost ones)."""
        raw = b"".join(bytes(lost * self.frame_bytes) + data for lost, data in chunks)
        x = np.frombuffer(raw[: len(raw) - len(raw) % self.frame_bytes], dtype="<i2")
        x = (x.astype(np.float32) / 32768.0).reshape(-1, self.channels)
        if self.resampler is not None:
            x = np.asarray(self.resampler.resample_chunk(x, last=last), dtype=np.float32)
            x = x.reshape(-1, self.channels)
        return np.ascontiguousarray(x.T)

    def close(self) -> None:
        """Stop and close the stream, ignoring a device that is already gone."""
        if self.stream is None:
            return
        with contextlib.suppress(OSError):
            self.stream.stop_stream()
        with contextlib.suppress(OSError):
            self.stream.close()
        self.stream = None


class CaptureSource:
    """Captures near and far from PyAudio, yielding (2, n) float32 blocks at 16 kHz.

    Counters for the box status: :attr:`overruns` (blocks dropped because the consumer was late),
    :attr:`input_overflows` (the driver's own overflows), :attr:`reopen_count` (successful
    re-opens after a loss) and :attr:`device_ok`.

    Args:
        config: devices and behaviour.
        pyaudio_module: the ``pyaudio`` module (default: imported lazily).
    """

    def __init__(self, config: CaptureConfig, pyaudio_module: Any = None) -> None:
        self.config = config
        self._pyaudio_module = pyaudio_module
        self.overruns = 0
        self.input_overflows = 0
        self.reopen_count = 0
        self.opens = 0
        """Successful :meth:`open` calls (the first open, wherever it was made, is not a re-open)."""
        self.device_ok = False
        self.last_error: str | None = None
        self.stop_event = StopFlag()
        self._pa: Any = None
        self._inputs: list[_Input] = []
        self._delivered = False
        """The open stream(s) delivered audio (a device can open and never deliver)."""
        self._closing: threading.Thread | None = None
        """The close of streams whose driver did not let go within :data:`CLOSE_WAIT_S`, still
        waiting (no re-open until it ends: PortAudio takes one call at a time)."""

    # -- opening -------------------------------------------------------------------------------

    @property
    def device_rates_hz(self) -> list[int]:
        """The rates the open device(s) run at (empty when closed)."""
        return [i.rate_hz for i in self._inputs]

    def open(self) -> None:
        """Enumerate devices and start the stream(s).

        Raises:
            DeviceNotFoundError: a configured device is missing (the message lists what exists).
            CaptureError: a device refuses every rate or fails to start.
        """
        self.close()
        if self._closing is not None:
            if self._closing.is_alive():
                raise CaptureError(f"{self._closing.name}: closed, and still held by the driver; "
                                   "not opened again before it lets go")
            self._closing = None
        module = self._pyaudio_module or import_pyaudio()
        self._pyaudio_module = module
        try:
            self._pa = open_pyaudio(module)
        except OSError as exc:  # PortAudio could not start (ALSA misconfigured, no /dev/snd)
            raise CaptureError(f"PortAudio failed to start: {exc}") from None
        try:
            cfg = self.config
            max_s = cfg.max_seconds
            if cfg.far_device is None:
                wanted = [(find_device(self._pa, cfg.device, 2), 2)]
            else:
                wanted = [(find_device(self._pa, cfg.device, 1), 1),
                          (find_device(self._pa, cfg.far_device, 1), 1)]
            for info, channels in wanted:
                rate_hz = self._pick_rate(info, channels)
                max_frames = None if max_s is None else round(max_s * rate_hz)
                self._inputs.append(_Input(self, info, channels, rate_hz, max_frames))
            for inp in self._inputs:  # opening is slow: open both, then start them back to back,
                self._open_stream(inp)  # so that two mono devices start together
            for inp in self._inputs:
                # before the start: the callback thread may run before start_stream() returns
                inp.last_data = inp._put_t = time.monotonic()
                try:
                    inp.stream.start_stream()
                except OSError as exc:
                    raise CaptureError(f"capture device {inp.name!r} failed to start: {exc}") from None
        except BaseException:
            self.close()
            raise
        self.opens += 1
        self._delivered = False  # device_ok waits for the first audio (a wedged device opens)
        log.info("capturing from %s", ", ".join(f"{i.name!r} at {i.rate_hz} Hz"
                                                 for i in self._inputs))

    def _pick_rate(self, info: dict[str, Any], channels: int) -> int:
        if self.config.device_rate_hz is not None:
            return self.config.device_rate_hz
        tried = []
        candidates = [*PROBE_RATES_HZ[:1], int(info.get("defaultSampleRate") or 0), *PROBE_RATES_HZ[1:]]
        for rate_hz in candidates:
            if rate_hz <= 0 or rate_hz in tried:
                continue
            tried.append(rate_hz)
            try:
                with quiet_stderr():
                    ok = self._pa.is_format_supported(rate_hz, input_device=int(info["index"]),
                                                      input_channels=channels,
                                                      input_format=_PA_INT16)
            except ValueError:
                ok = False
            if ok:
                if rate_hz != RATE_HZ:
                    log.info("%r does not do %d Hz: opening it at %d Hz and resampling",
                             info["name"], RATE_HZ, rate_hz)
                return rate_hz
        raise CaptureError(f"capture device {info['name']!r} supports none of "
                           f"{', '.join(map(str, tried))} Hz for {channels}-channel 16-bit input")

    def _open_stream(self, inp: _Input) -> None:
        frames = max(1, round(self.config.block_ms / 1000 * inp.rate_hz))
        try:
            with quiet_stderr():
                inp.stream = self._pa.open(format=_PA_INT16, channels=inp.channels, rate=inp.rate_hz,
                                           input=True, input_device_index=inp.index, start=False,
                                           frames_per_buffer=frames, stream_callback=inp.callback)
        except (OSError, ValueError) as exc:
            raise CaptureError(f"capture device {inp.name!r} failed to open at {inp.rate_hz} Hz: "
                               f"{exc}") from None

    def close(self) -> None:
        """Stop the stream(s) and release PortAudio, waiting for it at most :data:`CLOSE_WAIT_S`.

        A driver that holds PortAudio's callback thread would hold the close, and the box's loop
        with it, for good: past that wait the close goes on in a thread of its own (logged), the
        device is not opened again until it ends, and a box that is stopping exits meanwhile.
        """
        inputs, pa = self._inputs, self._pa
        self._inputs, self._pa = [], None
        if not inputs and pa is None:
            return
        names = " and ".join(repr(inp.name) for inp in inputs)
        what = f"capture device{'s' if len(inputs) > 1 else ''} {names}" if inputs else "PortAudio"
        closer = threading.Thread(target=_release, args=(inputs, pa), daemon=True, name=what)
        closer.start()
        closer.join(CLOSE_WAIT_S)
        if closer.is_alive():
            self._closing = closer
            log.warning("%s: did not stop within %g s (its driver holds PortAudio's thread): "
                        "left to close in the background", closer.name, CLOSE_WAIT_S)

    # -- reading -------------------------------------------------------------------------------

    def blocks(self) -> Iterator[np.ndarray]:
        """Yield (2, n) float32 blocks at 16 kHz until :attr:`stop_event` or the end of the data.

        A lost device is reported (:attr:`device_ok` false, :attr:`last_error`) and re-opened with
        backoff; meanwhile empty (2, 0) blocks come every ``idle_s`` so the caller's loop runs on.
        A device is back (:attr:`device_ok`, a re-open counted) when it delivers audio, not when it
        opens (both of two mono devices): one that opens and stays silent is retried with a growing
        backoff, and the other's audio alone is not yielded. Audio already
        captured when a device is lost is still yielded. The data ends only with ``max_seconds``:
        a real device never ends.
        """
        cfg = self.config
        if self._pyaudio_module is None:
            self._pyaudio_module = import_pyaudio()  # a missing install fails now, not in retries
        backoff_s = cfg.backoff_s
        first = True
        try:
            while not self.stop_event.is_set():
                if not self._inputs:
                    try:
                        self.open()
                    except CaptureError as exc:
                        self._lost(str(exc), first)
                        first = False
                        yield from self._wait(backoff_s)
                        backoff_s = min(2 * backoff_s, cfg.backoff_max_s)
                        continue
                    first = False
                loss = yield from self._read()
                if loss is None:
                    return
                self._lost(loss, False)
                # a device that delivered is retried at once; one that never did, ever later
                backoff_s = cfg.backoff_s if self._delivered else min(2 * backoff_s, cfg.backoff_max_s)
                self.close()
                yield from self._wait(backoff_s)
        finally:
            self.close()

    def _lost(self, reason: str, first: bool) -> None:
        if self.device_ok or first or reason != self.last_error:
            log.error("capture: %s", reason)
        self.device_ok = False
        self.last_error = reason

    def _wait(self, delay_s: float) -> Iterator[np.ndarray]:
        """Wait ``delay_s`` (or until stopped), yielding empty blocks every ``idle_s``."""
        deadline = time.monotonic() + delay_s
        while not self.stop_event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.stop_event.wait(min(left, self.config.idle_s))
            yield np.zeros((2, 0), dtype=np.float32)

    def _read(self) -> Generator[np.ndarray, None, str | None]:
        """Yield blocks from the open inputs; return None at the end of the data (or a stop), why
        on a loss."""
        cfg = self.config
        inputs = self._inputs
        pending = [np.zeros((inp.channels, 0), dtype=np.float32) for inp in inputs]
        t0 = time.monotonic()
        yielded_t = t0
        sent = 0
        max_drift = round(cfg.max_drift_s * RATE_HZ)
        block = max(1, round(cfg.block_ms / 1000 * RATE_HZ))
        while not self.stop_event.is_set():
            for k, inp in enumerate(inputs):
                chunks = _drain(inp.queue, wait_s=0.05 if k == 0 else 0.0)
                finished = inp.done and inp.queue.empty() and inp.resampler is not None
                if chunks and not inp.delivered:
                    inp.delivered = True
                    if all(i.delivered for i in inputs):
                        self._back()  # both devices of a pair: one alone is no capture
                if chunks or finished:
                    inp.last_data = time.monotonic()
                    pending[k] = np.concatenate([pending[k], inp.convert(chunks, last=finished)],
                                                axis=1)
                    if finished:
                        inp.resampler = None
            ended = all(inp.done and inp.queue.empty() and inp.resampler is None for inp in inputs)
            if len(inputs) == 2 and not ended:
                pending = _trim_drift(pending, max_drift)
            n = min(p.shape[1] for p in pending)
            for i in range(0, n, block):
                chunk = self._stack(pending, i, min(n, i + block))
                if cfg.realtime:
                    delay_s = t0 + sent / (RATE_HZ * PACE_SLACK) - time.monotonic()
                    if delay_s > 0 and self.stop_event.wait(delay_s):
                        return None
                sent += chunk.shape[1]
                yielded_t = time.monotonic()
                yield chunk
            pending = [p[:, n:] for p in pending]
            if ended:
                return None
            if n:
                continue
            reason = self._check_alive(inputs)
            if reason is not None:
                yield from self._tail(inputs, pending, block)
                return reason
            if time.monotonic() - yielded_t >= cfg.idle_s:  # no audio yet: the caller's loop runs on
                yielded_t = time.monotonic()
                yield np.zeros((2, 0), dtype=np.float32)
        return None

    def _back(self) -> None:
        """The first audio since an open: the device is delivering (a re-open after a loss)."""
        self._delivered = True
        self.device_ok = True
        self.last_error = None  # (kept until then: a device that opens and stays silent is
        # written to the journal once, not at each re-open)
        if self.opens > 1:
            self.reopen_count += 1
            log.warning("capture device back after a loss (re-open #%d)", self.reopen_count)

    def _tail(self, inputs: list[_Input], pending: list[np.ndarray], block: int
              ) -> Iterator[np.ndarray]:
        """What was captured before a loss: the resamplers' last samples and whatever one channel
        had beyond the other (the missing channel silent), so that nothing captured is lost; none
        if a device of the pair never delivered (no call is made of one channel and invented
        silence)."""
        if not self._delivered:
            return
        for k, inp in enumerate(inputs):
            if inp.resampler is not None:
                tail = inp.convert([], last=True)
                inp.resampler = None
                pending[k] = np.concatenate([pending[k], tail], axis=1)
        n = max(p.shape[1] for p in pending)
        if not n:
            return
        padded = [np.pad(p, ((0, 0), (0, n - p.shape[1]))) for p in pending]
        for i in range(0, n, block):
            yield self._stack(padded, i, min(n, i + block))

    @staticmethod
    def _stack(pending: list[np.ndarray], start: int, stop: int) -> np.ndarray:
        if len(pending) == 1:
            return np.ascontiguousarray(pending[0][:, start:stop])
        return np.stack([pending[0][0, start:stop], pending[1][0, start:stop]])

    def _check_alive(self, inputs: list[_Input]) -> str | None:
        now = time.monotonic()
        for inp in inputs:
            if inp.done:
                continue
            if not inp.active():
                return f"capture device {inp.name!r} stopped (unplugged or driver error)"
            if now - inp.last_data > self.config.stall_s:
                return (f"capture device {inp.name!r} delivered nothing for "
                        f"{self.config.stall_s:g} s")
        return None

    def status_fields(self) -> dict[str, int | bool | str]:
        """Fields for the box's retained status (allow-listed in :mod:`miroir.wire`); while the
        device is lost, ``capture_error`` says why (empty otherwise)."""
        error = "" if self.device_ok else (self.last_error or "capture device lost")
        return {"capture_ok": self.device_ok, "overruns": self.overruns + self.input_overflows,
                "capture_reopens": self.reopen_count,
                "capture_error": error[:wire.MAX_TEXT_CHARS]}


def _release(inputs: list[_Input], pa: Any) -> None:
    """Close the streams, then PortAudio (the closer thread of :meth:`CaptureSource.close`)."""
    for inp in inputs:
        inp.close()
    if pa is not None:
        with contextlib.suppress(Exception):
            pa.terminate()


def _drain(q: queue.Queue[tuple[int, bytes]], wait_s: float) -> list[tuple[int, bytes]]:
    """Take everything queued now, waiting up to ``wait_s`` seconds for the first chunk."""
    out: list[tuple[int, bytes]] = []
    try:
        out.append(q.get(timeout=wait_s) if wait_s > 0 else q.get_nowait())
        while True:
            out.append(q.get_nowait())
    except queue.Empty:
        pass
    return out


def _trim_drift(pending: list[np.ndarray], max_samples: int) -> list[np.ndarray]:
    """Drop the oldest samples of a channel that runs more than ``max_samples`` ahead."""
    a, b = pending[0].shape[1], pending[1].shape[1]
    if a - b > max_samples:
        log.warning("near channel %d samples ahead of far: dropping the excess", a - b)
        return [pending[0][:, a - b:], pending[1]]
    if b - a > max_samples:
        log.warning("far channel %d samples ahead of near: dropping the excess", b - a)
        return [pending[0], pending[1][:, b - a:]]
    return pending

