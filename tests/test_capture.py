"""Live capture through real PyAudio/PortAudio/ALSA, fed by ALSA file PCMs (no sound card)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.capture import (
    CaptureConfig,
    CaptureError,
    CaptureSource,
    DeviceNotFoundError,
    list_devices,
)
from edge.frames import RATE_HZ
from miroir.wire import decode, encode, status_message
from tests._fixtures_capture import AlsaHome, write_raw

Pair = Callable[[float], tuple[np.ndarray, np.ndarray]]


def decode_status(data: bytes) -> dict[str, Any]:
    """Decode a status payload through the wire contract."""
    return decode("status", data)


def fast_lag(captured: np.ndarray, reference: np.ndarray) -> tuple[int, float]:
    """Coarse FFT cross-correlation, then :func:`lag_of` around the peak."""
    a = captured.astype(np.float64)
    b = reference.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    xc = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    lag = int(np.argmax(xc))
    lag = lag - n if lag > n // 2 else lag
    m = min(len(a) - max(lag, 0), len(b) + min(lag, 0))
    seg_a = a[max(lag, 0):max(lag, 0) + m]
    seg_b = b[max(-lag, 0):max(-lag, 0) + m]
    corr = float(np.dot(seg_a, seg_b) / (np.linalg.norm(seg_a) * np.linalg.norm(seg_b) + 1e-12))
    return lag, corr


def collect(src: CaptureSource, limit_s: float = 60.0) -> np.ndarray:
    """Run the source to its end (failing after ``limit_s`` of wall time) and join the blocks."""
    out = []
    deadline = time.monotonic() + limit_s
    for block in src.blocks():
        assert block.dtype == np.float32 and block.ndim == 2 and block.shape[0] == 2
        out.append(block)
        assert time.monotonic() < deadline, "the source did not stop at the end of the data"
    return np.concatenate(out, axis=1) if out else np.zeros((2, 0), np.float32)


def test_stereo_device_left_is_near_right_is_far(alsa_home: AlsaHome, ami_pair: Pair,
                                                   tmp_path: Path) -> None:
    near, far = ami_pair(4.0)
    alsa_home.define("miroirtest", write_raw(tmp_path / "stereo.raw", near, far))
    assert "miroirtest" in list_devices()
    src = CaptureSource(CaptureConfig("miroirtest", max_seconds=4.0, realtime=False,
                                      queue_blocks=256))
    got = collect(src)
    assert src.device_rates_hz == [] and not src.overruns
    assert got.shape == (2, len(near)), "stops exactly at the end of the data"
    near_cap = np.round(got[0] * 32768).astype(np.int16)
    far_cap = np.round(got[1] * 32768).astype(np.int16)
    lag, corr = fast_lag(near_cap, near)
    assert corr > 0.999, corr
    m = len(near) - abs(lag)
    assert np.array_equal(near_cap[max(lag, 0):max(lag, 0) + m], near[max(-lag, 0):max(-lag, 0) + m])
    assert np.array_equal(far_cap[max(lag, 0):max(lag, 0) + m], far[max(-lag, 0):max(-lag, 0) + m])
    # and not the other way round: the two headsets are different signals
    assert fast_lag(far_cap, near)[1] < 0.5


def test_realtime_pacing_follows_the_wall_clock(alsa_home: AlsaHome, ami_pair: Pair,
                                                 tmp_path: Path) -> None:
    near, far = ami_pair(1.5)
    alsa_home.define("miroirtest", write_raw(tmp_path / "stereo.raw", near, far))
    src = CaptureSource(CaptureConfig("miroirtest", max_seconds=1.5, realtime=True,
                                      queue_blocks=64))
    t0 = time.monotonic()
    got = collect(src)
    elapsed_s = time.monotonic() - t0
    assert got.shape == (2, len(near))
    # a file PCM delivers everything at once; the source slows it down to (about) real time
    assert elapsed_s > 1.2, elapsed_s
    assert src.overruns == 0


def test_two_mono_devices(alsa_home: AlsaHome, ami_pair: Pair, tmp_path: Path) -> None:
    near, far = ami_pair(3.0)
    alsa_home.define("miroirnear", write_raw(tmp_path / "near.raw", near))
    alsa_home.define("miroirfar", write_raw(tmp_path / "far.raw", far))
    src = CaptureSource(CaptureConfig("miroirnear", far_device="miroirfar", max_seconds=3.0,
                                      realtime=False, queue_blocks=256, max_drift_s=10.0))
    got = collect(src)
    assert got.shape == (2, len(near))
    assert np.array_equal(np.round(got[0] * 32768).astype(np.int16), near)
    assert np.array_equal(np.round(got[1] * 32768).astype(np.int16), far)


def test_drift_between_two_mono_devices_is_trimmed() -> None:
    from edge.capture import _trim_drift

    near = np.arange(5000, dtype=np.float32)[None, :]
    far = np.arange(1000, dtype=np.float32)[None, :]
    kept_near, kept_far = _trim_drift([near, far], 3000)
    assert kept_near.shape[1] == kept_far.shape[1] == 1000
    assert kept_near[0, 0] == 4000  # the oldest samples of the ahead channel go
    same = _trim_drift([near[:, :3500], far], 3000)
    assert same[0].shape[1] == 3500


def test_8khz_device_is_resampled_to_16khz(alsa_home: AlsaHome, ami_pair: Pair,
                                           tmp_path: Path) -> None:
    import soxr

    seconds = 4.0
    near, far = ami_pair(seconds)
    near8 = np.round(soxr.resample(near.astype(np.float32), 16_000, 8_000)).astype(np.int16)
    far8 = np.round(soxr.resample(far.astype(np.float32), 16_000, 8_000)).astype(np.int16)
    alsa_home.define("miroirphone", write_raw(tmp_path / "phone8k.raw", near8, far8))
    src = CaptureSource(CaptureConfig("miroirphone", device_rate_hz=8_000, max_seconds=seconds,
                                      realtime=False, queue_blocks=256))
    got = collect(src)
    assert abs(got.shape[1] - seconds * RATE_HZ) <= 32, got.shape
    for ch, ref in ((0, near), (1, far)):
        # compare below 3.4 kHz, the band both signals share
        lo_cap = soxr.resample(got[ch].astype(np.float64), 16_000, 6_800)
        lo_ref = soxr.resample(ref.astype(np.float64) / 32768, 16_000, 6_800)
        lag, corr = fast_lag(lo_cap, lo_ref)
        assert abs(lag) <= 2, lag
        assert corr > 0.98, corr


def test_a_resampler_without_soxr_names_how_to_install_it(
        alsa_home: AlsaHome, ami_pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """soxr is imported only when a rate differs from 16 kHz: without it, the 8 kHz device's
    capture, the WAV resampler and its block-by-block stream each say which extra installs it."""
    from edge.source import _resample_stream, resample

    near, far = ami_pair(1.0)
    alsa_home.define("miroirphone", write_raw(tmp_path / "phone8k.raw", near, far))
    monkeypatch.setitem(sys.modules, "soxr", None)  # an install without the box extra
    hint = r"^soxr is not installed: `pip install 'miroir\[box\]'`$"
    src = CaptureSource(CaptureConfig("miroirphone", device_rate_hz=8_000, max_seconds=1.0,
                                      realtime=False))
    with pytest.raises(CaptureError, match=hint):
        src.open()
    src.close()
    with pytest.raises(RuntimeError, match=hint):
        resample(np.zeros(800, np.float32), 8_000)
    with pytest.raises(RuntimeError, match=hint):
        _resample_stream(8_000)


def test_overruns_are_counted_and_the_callback_never_waits(alsa_home: AlsaHome, ami_pair: Pair,
                                                            tmp_path: Path) -> None:
    near, far = ami_pair(5.0)
    alsa_home.define("miroirtest", write_raw(tmp_path / "stereo.raw", near, far))
    src = CaptureSource(CaptureConfig("miroirtest", max_seconds=5.0, realtime=False,
                                      queue_blocks=4, block_ms=64.0))
    src.open()
    inp = src._inputs[0]
    deadline = time.monotonic() + 30
    # the consumer stalls: the callback keeps running, dropping what the full queue cannot take
    while not inp.done:
        assert time.monotonic() < deadline, "the callback stalled with the consumer"
        time.sleep(0.05)
    assert inp.queue.full() and src.overruns > 0
    got = collect(src)
    kept = got.shape[1]
    assert kept == 4 * 1024, kept  # exactly the queue's four blocks, nothing invented
    assert kept + src.overruns * 1024 >= len(near) - 1024
    # what was kept is the beginning of the recording, unchanged
    assert np.array_equal(np.round(got[0] * 32768).astype(np.int16), near[:kept])
    assert src.status_fields()["overruns"] == src.overruns


def test_missing_device_error_names_it_and_lists_the_others(alsa_home: AlsaHome, ami_pair: Pair,
                                                            tmp_path: Path) -> None:
    near, far = ami_pair(0.5)
    alsa_home.define("miroirother", write_raw(tmp_path / "x.raw", near, far))
    src = CaptureSource(CaptureConfig("hw:CARD=Headset"))
    with pytest.raises(DeviceNotFoundError) as err:
        src.open()
    msg = str(err.value)
    assert "'hw:CARD=Headset' not found" in msg and "'miroirother'" in msg
    assert not src.device_ok


def test_mono_device_for_stereo_is_refused_clearly() -> None:
    pa = FakePa([{"index": 0, "name": "USB mic: Audio (hw:1,0)", "maxInputChannels": 1,
                  "defaultSampleRate": 48000.0}])
    from edge.capture import find_device
    with pytest.raises(DeviceNotFoundError, match="1 input channel"):
        find_device(pa, "USB mic", 2)
    assert find_device(pa, "usb MIC", 1)["index"] == 0


class FakePa:
    """A stand-in ``PyAudio`` for unit tests of device matching and rate probing only."""

    def __init__(self, devices: list[dict[str, Any]], rates_hz: tuple[int, ...] = ()) -> None:
        self.devices = devices
        self.rates_hz = rates_hz

    def get_device_count(self) -> int:
        return len(self.devices)

    def get_device_info_by_index(self, i: int) -> dict[str, Any]:
        return self.devices[i]

    def is_format_supported(self, rate: int, **_: Any) -> bool:
        if rate not in self.rates_hz:
            raise ValueError("Invalid sample rate")
        return True


@pytest.mark.parametrize(("rates_hz", "expected_hz"), [((8_000,), 8_000), ((44_100, 8_000), 44_100),
                                                       ((48_000, 16_000), 16_000)])
def test_rate_probe_prefers_16k_then_the_device_default(rates_hz: tuple[int, ...],
                                                        expected_hz: int) -> None:
    info = {"index": 0, "name": "phone", "maxInputChannels": 2, "defaultSampleRate": 44100.0}
    src = CaptureSource(CaptureConfig("phone"))
    src._pa = FakePa([info], rates_hz)
    assert src._pick_rate(info, 2) == expected_hz
    src._pa = FakePa([info], (22_050,))
    with pytest.raises(CaptureError, match="supports none of 16000, 44100, 48000, 8000 Hz"):
        src._pick_rate(info, 2)


def _until(blocks: Iterator[np.ndarray], cond: Callable[[], bool], limit_s: float = 30.0) -> list[
        np.ndarray]:
    """Consume blocks until ``cond()`` holds; fail after ``limit_s`` of wall time."""
    seen = []
    deadline = time.monotonic() + limit_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        seen.append(next(blocks))
    return seen


def test_device_lost_is_reported_and_reopened_without_restart(alsa_home: AlsaHome, ami_pair: Pair,
                                                              tmp_path: Path) -> None:
    near, far = ami_pair(3.0)
    first = write_raw(tmp_path / "first.raw", near, far)
    second = write_raw(tmp_path / "second.raw", far, near)  # swapped, to tell the two apart
    alsa_home.define("miroirtest", first)
    # no max_seconds: a live device that never ends; a file PCM then feeds junk at full speed
    src = CaptureSource(CaptureConfig("miroirtest", realtime=True, queue_blocks=16,
                                      backoff_s=0.1, backoff_max_s=0.4, idle_s=0.05))
    src.open()  # opened before reading, as `miroir edge run` does: the re-open still counts
    blocks = src.blocks()
    got = _until(blocks, lambda: src.device_ok)
    got += [next(blocks) for _ in range(3)]
    data = np.concatenate(got, axis=1)
    assert np.array_equal(np.round(data[0] * 32768).astype(np.int16), near[:data.shape[1]])
    assert src.reopen_count == 0
    # a driver hiccup: the stream stops but the device is still there, re-opened at once
    src._inputs[0].stream.stop_stream()
    _until(blocks, lambda: src.reopen_count == 1)
    assert src.device_ok

    # unplug: the device vanishes from ALSA and its stream stops under the source
    alsa_home.remove("miroirtest")
    src._inputs[0].stream.stop_stream()
    _until(blocks, lambda: not src.device_ok)
    assert src.last_error is not None and "miroirtest" in src.last_error
    # while it is gone: empty blocks keep the caller's loop alive, and re-opens keep failing
    idle = [next(blocks) for _ in range(10)]
    assert all(b.shape == (2, 0) for b in idle)
    assert not src.device_ok and "not found" in (src.last_error or "")
    assert src.status_fields()["capture_ok"] is False
    status = status_message("site-1", "box-1", "online", time.time(), **src.status_fields())
    sent = decode_status(encode("status", status))
    assert sent["capture_ok"] is False and "miroirtest" in sent["capture_error"]

    # plug back in: found again, re-opened, fresh data flows
    alsa_home.define("miroirtest", second)
    back = _until(blocks, lambda: src.device_ok)
    assert src.reopen_count == 2 and src.last_error is None
    assert src.status_fields()["capture_error"] == ""
    back += [next(blocks) for _ in range(3)]
    data = np.concatenate([b for b in back if b.shape[1]], axis=1)
    assert data.shape[1] > 0
    assert np.array_equal(np.round(data[0] * 32768).astype(np.int16), far[:data.shape[1]])
    src.stop_event.set()
    rest = list(blocks)  # the generator ends once stopped
    assert len(rest) <= 2
    assert src._pa is None, "PortAudio released on stop"


def test_a_dropped_block_becomes_silence_of_its_length() -> None:
    """A late consumer loses a block: what follows keeps its place in time (one stage, no device)."""
    from edge.capture import _drain, _Input

    src = CaptureSource(CaptureConfig("any", queue_blocks=2, block_ms=64.0))
    inp = _Input(src, {"name": "any", "index": 0}, 2, RATE_HZ, None)
    blocks = [np.full((1024, 2), k + 1, dtype="<i2") for k in range(5)]
    for b in blocks[:3]:  # the third finds the queue full
        time.sleep(1024 / RATE_HZ)  # callbacks come in real time, as from a device
        inp.callback(b.tobytes(), 1024, None, 0)
    first = inp.convert(_drain(inp.queue, 0.0))
    for b in blocks[3:]:
        time.sleep(1024 / RATE_HZ)
        inp.callback(b.tobytes(), 1024, None, 0)
    rest = inp.convert(_drain(inp.queue, 0.0))
    assert src.overruns == 1 and first.shape == (2, 2048) and rest.shape == (2, 3 * 1024)
    got = np.round(np.concatenate([first, rest], axis=1) * 32768).astype(int)
    want = np.concatenate([np.full(1024, v) for v in (1, 2, 0, 4, 5)])
    assert np.array_equal(got[0], want) and np.array_equal(got[1], want)


def test_frames_the_driver_lost_become_silence_of_their_length() -> None:
    """ALSA overruns (an xrun): the block after the gap comes flagged, late by the frames lost;
    silence takes their place, so the audio clock (and two mono devices) stay aligned."""
    from edge.capture import _PA_INPUT_OVERFLOW, _drain, _Input

    src = CaptureSource(CaptureConfig("any", queue_blocks=8, block_ms=64.0))
    inp = _Input(src, {"name": "any", "index": 0}, 2, RATE_HZ, None)
    block = np.full((1024, 2), 7, dtype="<i2").tobytes()
    inp._put_t = time.monotonic()
    time.sleep(1024 / RATE_HZ)
    inp.callback(block, 1024, None, 0)
    time.sleep(1024 / RATE_HZ + 0.25)  # 0.25 s the driver lost
    inp.callback(block, 1024, None, _PA_INPUT_OVERFLOW)
    got = inp.convert(_drain(inp.queue, 0.0))
    lost = got.shape[1] - 2048
    assert src.input_overflows == 1 and src.status_fields()["overruns"] == 1
    assert 0.2 * RATE_HZ <= lost <= 0.35 * RATE_HZ, lost  # the sleep's length, give or take the scheduler
    assert not got[:, 1024:1024 + lost].any() and (got[:, -1024:] > 0).all()
    # PortAudio's capture times, where the host API gives them, say exactly how much was lost
    # (the flagged block may come on time, its first sample 0.3 s after the last one's end)
    inp = _Input(src, {"name": "any", "index": 1}, 2, RATE_HZ, None)
    inp.callback(block, 1024, {"input_buffer_adc_time": 10.0}, 0)
    inp.callback(block, 1024, {"input_buffer_adc_time": 10.0 + 1024 / RATE_HZ + 0.3},
                 _PA_INPUT_OVERFLOW)
    got = inp.convert(_drain(inp.queue, 0.0))
    assert got.shape[1] == 2048 + round(0.3 * RATE_HZ) and src.input_overflows == 2


@pytest.mark.parametrize("pair", [False, True])
def test_a_device_that_opens_but_never_delivers_is_not_back(pair: bool,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A wedged USB adapter opens and stays silent: it is not reported back (no re-open counted),
    the caller's loop still gets empty blocks, and it is retried with a growing backoff. Of two
    mono devices, the one that delivers does not make the pair back, and its audio is no call:
    nothing is yielded with the wedged channel filled with silence (before, the pair was back at
    its first block, reopened at once, and made a call of each second of the other channel). Its
stall is written to the journal once, not at each re-open."""
    class Stream:
        def __init__(self, callback: Any = None) -> None:
            self.started = self.stopped = False
            self.callback = callback

        def start_stream(self) -> None:
            self.started = True
            for _ in range(60 if self.callback else 0):  # 3.8 s of voice, as fast as a file
                self.callback(np.full(1024, 3000, dtype="<i2").tobytes(), 1024, None, 0)

        def is_active(self) -> bool:
            return not self.stopped

        def stop_stream(self) -> None:
            self.stopped = True

        def close(self) -> None:
            self.stopped = True

    opens: list[float] = []

    class Pa(FakePa):
        def open(self, **kw: Any) -> Stream:
            assert kw["start"] is False  # opened first, started together
            if kw["input_device_index"] == 0:
                opens.append(time.monotonic())
                return Stream()
            return Stream(kw["stream_callback"])  # the pair's line device delivers

        def terminate(self) -> None:
            pass

    infos = [{"index": 0, "name": "wedged", "maxInputChannels": 1 if pair else 2,
              "defaultSampleRate": 16000.0},
             {"index": 1, "name": "line", "maxInputChannels": 1, "defaultSampleRate": 16000.0}]

    class Module:
        paInt16 = 8

        @staticmethod
        def PyAudio() -> Pa:
            return Pa(infos, (16_000,))

    src = CaptureSource(CaptureConfig("wedged", far_device="line" if pair else None, stall_s=0.2,
                                      idle_s=0.05, backoff_s=0.05, backoff_max_s=0.4, queue_blocks=64,
                                      realtime=False), pyaudio_module=Module)
    blocks = src.blocks()
    try:
        with caplog.at_level("ERROR", logger="edge.capture"):
            got = [next(blocks) for _ in range(40)]
    finally:
        src.stop_event.set()
    assert all(b.shape == (2, 0) for b in got)
    assert not src.device_ok and src.reopen_count == 0 and len(opens) >= 3
    assert [r.getMessage() for r in caplog.records] == [
        "capture: capture device 'wedged' delivered nothing for 0.2 s"]
    gaps = np.diff(opens)
    assert gaps[-1] > gaps[0], gaps  # the backoff grows


def test_portaudio_that_fails_to_start_is_a_lost_device_not_a_crash() -> None:
    """PortAudio's own start fails (``PyAudio()`` raises OSError): the source reports it and
    retries, the caller's loop runs on (before, the error ended the box's service)."""
    class Module:
        paInt16 = 8
        tries = 0

        @classmethod
        def PyAudio(cls) -> Any:
            cls.tries += 1
            raise OSError(-9999, "Unanticipated host error")

    src = CaptureSource(CaptureConfig("any", idle_s=0.02, backoff_s=0.02, backoff_max_s=0.05),
                        pyaudio_module=Module)
    blocks = src.blocks()
    try:
        got = [next(blocks) for _ in range(10)]
    finally:
        src.stop_event.set()
    assert all(b.shape == (2, 0) for b in got) and Module.tries >= 2
    assert not src.device_ok and "PortAudio failed to start" in (src.last_error or "")


def _fake_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """``edge.capture``'s monotonic clock, moved by hand: callbacks at chosen times, no sleeping."""
    import edge.capture

    now = [1000.0]
    monkeypatch.setattr(edge.capture.time, "monotonic", lambda: now[0])
    return now


def test_a_driver_overflow_while_the_queue_is_full_is_not_counted_twice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The consumer stalls 10 s: the full queue drops blocks and the driver overflows every second
    (one block lost each time). What the reader gets back is exactly what the device's clock ran,
    no more: the dropped blocks were counted once, not again in the overflow's wall-time gap (that
    made 62 s of audio of 10 s)."""
    from edge.capture import _PA_INPUT_OVERFLOW, _drain, _Input

    now = _fake_clock(monkeypatch)
    src = CaptureSource(CaptureConfig("any", queue_blocks=1, block_ms=64.0))
    inp = _Input(src, {"name": "any", "index": 0}, 1, RATE_HZ, None)
    block = np.full(1024, 9, dtype="<i2").tobytes()
    dt = 1024 / RATE_HZ
    produced = 0
    for k in range(1, 157):  # 10 s
        lost = k % 16 == 0  # the driver loses this block and flags the next
        now[0] += dt
        produced += 1024
        if lost:
            continue
        inp.callback(block, 1024, None, _PA_INPUT_OVERFLOW if k % 16 == 1 and k > 1 else 0)
    first = inp.convert(_drain(inp.queue, 0.0))  # the consumer is back...
    now[0] += dt
    produced += 1024
    inp.callback(block, 1024, None, 0)  # ...and the next block gets in, the silence before it
    got = np.concatenate([first, inp.convert(_drain(inp.queue, 0.0))], axis=1)
    assert src.input_overflows == 9 and src.overruns > 100
    assert got.shape[1] == produced, (got.shape[1] / RATE_HZ, produced / RATE_HZ)


def test_a_capture_clock_that_jumps_an_hour_adds_no_hour_of_silence(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver's capture time jumps an hour at an overflow: the silence put back is capped by the
    wall time since the last block (plus ``ADC_SLACK_S``), not 57.6 million frames."""
    from edge.capture import _PA_INPUT_OVERFLOW, ADC_SLACK_S, _drain, _Input

    now = _fake_clock(monkeypatch)
    src = CaptureSource(CaptureConfig("any", queue_blocks=8, block_ms=64.0))
    inp = _Input(src, {"name": "any", "index": 0}, 1, RATE_HZ, None)
    block = np.full(1024, 9, dtype="<i2").tobytes()
    now[0] += 0.064
    inp.callback(block, 1024, {"input_buffer_adc_time": 50.0}, 0)
    now[0] += 0.128
    inp.callback(block, 1024, {"input_buffer_adc_time": 3650.0}, _PA_INPUT_OVERFLOW)
    got = inp.convert(_drain(inp.queue, 0.0))
    assert got.shape[1] <= 2048 + (0.128 + ADC_SLACK_S) * RATE_HZ


def test_a_first_block_read_before_the_opener_noted_the_start_is_no_negative_silence(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """PortAudio's callback thread runs as soon as the stream starts: it may read the clock just
    before the opening thread notes the start time. That block has nothing lost before it; it was
    queued with a negative count of lost frames, and reading it raised "negative count" (seen under
    load, in `miroir edge check` through ALSA)."""
    import edge.capture
    from edge.capture import _drain, _Input

    src = CaptureSource(CaptureConfig("any", queue_blocks=8, block_ms=64.0))
    inp = _Input(src, {"name": "any", "index": 0}, 1, RATE_HZ, None)
    inp._put_t = 1000.0

    def clock() -> float:  # the callback reads 1000.0; the opener then notes its start, 10 ms on
        inp._put_t = 1000.01
        return 1000.0

    monkeypatch.setattr(edge.capture.time, "monotonic", clock)
    block = np.full(1024, 9, dtype="<i2").tobytes()
    inp.callback(block, 1024, None, 0)
    got = inp.convert(_drain(inp.queue, 0.0))
    assert got.shape == (1, 1024)
    assert np.all(np.round(got * 32768) == 9)


def test_another_threads_log_line_is_not_diverted_while_portaudio_probes() -> None:
    """PortAudio's probing noise is diverted from descriptor 2 for a moment; an error the MQTT
    thread logs meanwhile still reaches the journal (the command's log has its own descriptor)."""
    import subprocess
    import sys
    script = """
import logging, threading, time
from miroir.cli import _log_stream
from edge.capture import quiet_stderr
logging.basicConfig(level=logging.INFO, stream=_log_stream(), format="%(levelname)s %(message)s")
t = threading.Thread(target=lambda: (time.sleep(0.05), logging.getLogger("x").error("broker refused")))
t.start()
with quiet_stderr():
    time.sleep(0.3)
t.join()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert "ERROR broker refused" in done.stderr


def test_portaudio_probing_in_a_test_home_leaves_nothing_in_tmp(alsa_home: AlsaHome,
                                                               tmp_path: Path) -> None:
    """ALSA's pulse plugin, probed by PortAudio, makes a client runtime dir: with no
    XDG_RUNTIME_DIR it is a fresh /tmp/pulse-XXXXXXXX for every new HOME, linked from
    ~/.config/pulse and left behind when the test's HOME goes. It must live in the test's tree."""
    from edge.capture import open_pyaudio
    open_pyaudio().terminate()
    made = [p for p in alsa_home.home.rglob("*") if p.is_symlink()]
    outside = [f"{p} -> {p.resolve()}" for p in made if not p.resolve().is_relative_to(tmp_path)]
    assert not outside, outside


def test_a_device_that_opens_and_stays_silent_is_in_the_journal_once(
        alsa_home: AlsaHome, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A device that opened and never delivered (an ALSA file PCM on a FIFO whose writer stays
    silent) was lost without a word in the journal: the read noted the reason as the last error
    before the loss compared the two, so only a device that had delivered was logged (measured on
    `miroir edge run`: nothing after "capturing from", for good). The stall is written once now,
    and the same reason is not written again at each retry."""
    import errno
    import os
    import threading

    fifo = tmp_path / "headset.fifo"
    os.mkfifo(fifo)
    alsa_home.define("miroirsilent", fifo)
    writer: list[int] = []
    done = threading.Event()

    def open_writer() -> None:  # there, and silent (the device's open waits for one)
        while not done.is_set() and not writer:
            try:
                writer.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError as exc:  # no reader yet
                assert exc.errno == errno.ENXIO
                done.wait(0.01)

    opener = threading.Thread(target=open_writer, daemon=True)
    opener.start()
    src = CaptureSource(CaptureConfig("miroirsilent", stall_s=0.3, idle_s=0.05, backoff_s=0.05,
                                      backoff_max_s=0.1))
    blocks = src.blocks()
    deadline = time.monotonic() + 30
    try:
        with caplog.at_level("ERROR", logger="edge.capture"):
            while src.opens < 1 or src._closing is None or len(caplog.records) < 2:
                assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
                assert next(blocks).shape == (2, 0)
            for _ in range(20):  # retries with the same reason
                next(blocks)
    finally:
        src.stop_event.set()
        list(blocks)
        done.set()
        opener.join(10)
        closing = src._closing
        for fd in writer:  # the driver's read ends, and the close left to the background with it
            os.close(fd)
        if closing is not None:
            closing.join(30)
    assert closing is not None and not closing.is_alive()
    assert [r.getMessage() for r in caplog.records] == [
        "capture: capture device 'miroirsilent' delivered nothing for 0.3 s",
        "capture: capture device 'miroirsilent': closed, and still held by the driver; not opened "
        "again before it lets go"]
