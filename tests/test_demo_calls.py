"""The demo's espeak-ng calls: format, durations, exact truth, behaviours per seat, caching."""

from __future__ import annotations

import hashlib
import itertools
import json
import wave
from pathlib import Path

import numpy as np
import pytest

from demo.calls import (
    BETWEEN_CALLS_S,
    RATE_HZ,
    DemoCall,
    DemoToolError,
    build_calls,
    load_truth,
    replay_files,
    speech_ratio_truth,
)
from demo.scripts import SCRIPTS
from edge.pipeline import analyze, load_vad_model
from edge.source import pair, read_wav

EDGE_MARGIN_S = 0.02


def _read(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE_HZ)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768


def _by_name(calls: list[DemoCall]) -> dict[str, DemoCall]:
    return {c.name: c for c in calls}


def _merge(segments: list[list[float]], max_gap_s: float) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s, e in segments:
        if out and s - out[-1][1] <= max_gap_s:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def _mask(segments: list[list[float]], n: int, pad_s: float = 0.0) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    for s, e in segments:
        m[max(0, round((s - pad_s) * RATE_HZ)) : round((e + pad_s) * RATE_HZ)] = True
    return m


def _db(a: float, b: float) -> float:
    return float(20 * np.log10(a / b))


def _f0_spread_semitones(x: np.ndarray, segments: list[list[float]]) -> float:
    """10-90 percentile spread of a crude autocorrelation F0 over voiced frames, in semitones."""
    frame, hop = 640, 160
    starts = [i for s, e in segments
              for i in range(round(s * RATE_HZ), round(e * RATE_HZ) - frame, hop)]
    frames = np.stack([x[i : i + frame] for i in starts])
    frames = frames - frames.mean(axis=1, keepdims=True)
    spec = np.fft.rfft(frames, n=2 * frame, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :frame]
    lo, hi = RATE_HZ // 400, RATE_HZ // 60
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    peak = ac[np.arange(len(lag)), lag] / np.maximum(ac[:, 0], 1e-12)
    loud = np.sqrt(ac[:, 0] / frame) > 0.02
    f0 = RATE_HZ / lag[(peak > 0.6) & loud]
    assert f0.size > 200
    st = 12 * np.log2(f0)
    return float(np.percentile(st, 90) - np.percentile(st, 10))


def test_eight_distinct_calls_with_truth_files(demo_calls: list[DemoCall]) -> None:
    assert len(demo_calls) == 8
    assert len({c.name for c in demo_calls}) == 8
    assert [c.name for c in demo_calls] == [s.name for s in SCRIPTS]
    variants = {(s.agent.variant, s.agent.speed_wpm, s.agent.pitch) for s in SCRIPTS}
    assert len(variants) == 8
    for c in demo_calls:
        truth = load_truth(c)
        assert set(truth) == {"name", "duration_s", "rate_hz", "near", "far", "description"}
        assert truth["name"] == c.name and truth["rate_hz"] == RATE_HZ
        assert truth["duration_s"] == pytest.approx(c.duration_s)
        assert truth["description"]


def test_wav_format_and_durations(demo_calls: list[DemoCall]) -> None:
    for c in demo_calls:
        near, far = _read(c.near), _read(c.far)
        assert near.size == far.size
        assert near.size / RATE_HZ == pytest.approx(c.duration_s, abs=1e-6)
        assert 45.0 <= c.duration_s <= 90.0, c.name
        # near at a headset level (peak -6 dBFS), far quieter, neither clipped
        assert _db(np.abs(near).max(), 1.0) == pytest.approx(-6.0, abs=0.5)
        assert -15.0 < _db(np.abs(far).max(), 1.0) < -6.0


def test_far_channel_is_telephone_band(demo_calls: list[DemoCall]) -> None:
    c = demo_calls[0]
    for path, expect_band_limited in ((c.far, True), (c.near, False)):
        x = _read(path)
        power = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(x.size, 1 / RATE_HZ)
        out_of_band = power[(f < 200) | (f > 3600)].sum() / power.sum()
        if expect_band_limited:
            assert out_of_band < 1e-3
        else:
            assert out_of_band > 1e-2


def test_truth_segments_are_sorted_and_disjoint(demo_calls: list[DemoCall]) -> None:
    for c in demo_calls:
        truth = load_truth(c)
        for chan in ("near", "far"):
            segs = truth[chan]
            assert len(segs) >= 5, (c.name, chan)
            for s, e in segs:
                assert 0.0 <= s < e <= c.duration_s
            for (_, e0), (s1, _) in itertools.pairwise(segs):
                assert e0 < s1, (c.name, chan)


def test_truth_matches_audio_energy(demo_calls: list[DemoCall]) -> None:
    for c in demo_calls:
        truth = load_truth(c)
        for chan, path in (("near", c.near), ("far", c.far)):
            x = _read(path)
            inside = _mask(truth[chan], x.size)
            gaps = ~_mask(truth[chan], x.size, pad_s=EDGE_MARGIN_S)
            assert gaps.sum() > RATE_HZ  # there is silence to compare with
            rms_gap = float(np.sqrt(np.mean(x[gaps] ** 2)))
            assert _db(float(np.sqrt(np.mean(x[inside] ** 2))), rms_gap) > 30.0, (c.name, chan)
            for s, e in truth[chan]:
                seg = x[round(s * RATE_HZ) : round(e * RATE_HZ)]
                assert _db(float(np.sqrt(np.mean(seg**2))), rms_gap) > 25.0, (c.name, chan, s)
            # the noise floor is there, low and not digital silence
            assert -75.0 < _db(rms_gap, 1.0) < -55.0


def test_monologue_call_has_30s_of_agent_speech(demo_calls: list[DemoCall]) -> None:
    longest = {
        c.name: max(e - s for s, e in _merge(load_truth(c)["near"], max_gap_s=0.5))
        for c in demo_calls
    }
    assert longest["monologue"] >= 30.0
    assert longest["balanced"] < 15.0


def test_talk_over_call_has_agent_started_overlaps(demo_calls: list[DemoCall]) -> None:
    def agent_started(c: DemoCall) -> int:
        truth = load_truth(c)
        return sum(any(fs < s < fe for fs, fe in truth["far"]) for s, _ in truth["near"])

    counts = {c.name: agent_started(c) for c in demo_calls}
    assert counts["talk-over"] >= 3
    assert counts["balanced"] == 0


def _agent_latencies(c: DemoCall) -> list[float]:
    """Gaps from the end of a prospect turn to the next agent onset, with nobody speaking."""
    truth = load_truth(c)
    near = _merge(truth["near"], 0.5)
    far = _merge(truth["far"], 0.5)
    out = []
    for _, fe in far:
        nxt = [s for s, _ in near if s > fe]
        if nxt and not any(fe < s < nxt[0] for s, _ in far):
            out.append(nxt[0] - fe)
    return out


def test_long_gaps_call_has_slow_agent_responses(demo_calls: list[DemoCall]) -> None:
    calls = _by_name(demo_calls)
    slow = _agent_latencies(calls["long-gaps"])
    assert sum(lat >= 2.5 for lat in slow) >= 5
    assert max(_agent_latencies(calls["balanced"])) < 1.5


def test_monotone_agent_has_narrow_pitch(demo_calls: list[DemoCall]) -> None:
    calls = _by_name(demo_calls)
    spreads = {
        name: _f0_spread_semitones(_read(calls[name].near), load_truth(calls[name])["near"])
        for name in ("monotone", "balanced")
    }
    assert spreads["monotone"] < 2.0
    assert spreads["balanced"] > 2 * spreads["monotone"]


def test_speech_ratio_truth_helpers() -> None:
    segs = [[1.0, 2.0], [2.5, 4.0]]
    assert speech_ratio_truth(segs, 0.0, 1.0) == 0.0
    assert speech_ratio_truth(segs, 1.0, 2.0) == 1.0
    assert speech_ratio_truth(segs, 1.5, 3.0) == pytest.approx(0.5 / 1.5 + 0.5 / 1.5)
    assert speech_ratio_truth(segs, 3.0, 3.0) == 0.0


def test_second_build_is_a_cache_hit(demo_calls: list[DemoCall], demo_calls_dir: Path) -> None:
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for c in demo_calls
              for p in (c.near, c.far, c.truth)}
    lines: list[str] = []
    again = build_calls(demo_calls_dir, progress=lines.append)
    assert again == demo_calls
    assert len(lines) == 1 and "cache hit" in lines[0]
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in before} == before


def test_rebuild_is_deterministic(demo_calls: list[DemoCall], tmp_path: Path) -> None:
    lines: list[str] = []
    fresh = build_calls(tmp_path, force=True, progress=lines.append)
    assert len(lines) == 8 and all("cache hit" not in ln for ln in lines)

    def digest(c: DemoCall) -> list[str]:
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in (c.near, c.far, c.truth)]

    assert [digest(c) for c in fresh] == [digest(c) for c in demo_calls]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [m["name"] for m in manifest["calls"]] == [c.name for c in demo_calls]


def test_stale_cache_key_forces_a_rebuild(tmp_path: Path) -> None:
    one = SCRIPTS[:1]
    build_calls(tmp_path, progress=None, scripts=one)
    (tmp_path / "cache_key.txt").write_text("stale\n")
    lines: list[str] = []
    build_calls(tmp_path, progress=lines.append, scripts=one)
    assert lines and "cache hit" not in lines[0]
    lines.clear()
    build_calls(tmp_path, progress=lines.append, scripts=one)
    assert lines and "cache hit" in lines[0]


def test_missing_espeak_names_the_apt_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DemoToolError, match=r"apt-get install espeak-ng sox"):
        build_calls(tmp_path / "out", progress=None)
    assert not (tmp_path / "out").exists()


def test_a_box_looping_a_demo_call_sees_each_replay_end(demo_calls: list[DemoCall],
                                                      tmp_path: Path) -> None:
    """What demo boxes loop over, the eight replays one after another through the real pipeline:
    each is a call that the prospect's hang-up (the busy tone) ends, with no cue after it (looping
    the bare call made one call that never ended)."""
    replays = []
    for call in demo_calls:
        near, far = replay_files(call, tmp_path)
        assert _read(near).size == _read(far).size == round((call.duration_s + BETWEEN_CALLS_S)
                                                            * RATE_HZ)
        assert np.array_equal(_read(far)[: round(call.duration_s * RATE_HZ)], _read(call.far))
        replays.append(pair(read_wav(near), read_wav(far)))
    result = analyze(np.concatenate(replays, axis=1), load_vad_model())
    ends = [(s["call_end_reason"], s["call_duration_s"]) for s in result["call_summaries"]]
    assert [reason for reason, _ in ends] == ["hangup"] * len(demo_calls), ends
    assert all(d < c.duration_s for (_, d), c in zip(ends, demo_calls, strict=True)), ends
    hung_up_s = [e["t_audio_s"] for e in result["events"] if e["name"] == "call_end"]
    late = [c for c in result["cues"] if any(0 <= c["start_s"] - t < BETWEEN_CALLS_S
                                             for t in hung_up_s)]
    assert late == [], late


def test_two_builds_writing_the_same_call_at_once_each_replace_it_whole(tmp_path: Path) -> None:
    """A demo and a test building the same folder at once wrote through one temporary name
    (``near.tmp``): one's replace took the other's file away (FileNotFoundError)."""
    import threading

    from demo.calls import _write_wav

    path = tmp_path / "near.wav"
    errors: list[BaseException] = []

    def write(level: float) -> None:
        try:
            for _ in range(200):
                _write_wav(path, np.full(1600, level))
        except BaseException as exc:  # the test reports it below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(level,)) for level in (0.25, 0.5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    with wave.open(str(path)) as w:  # one build's whole file, whichever came last
        assert w.getnframes() == 1600 and w.getframerate() == RATE_HZ
    assert sorted(p.name for p in tmp_path.iterdir()) == ["near.wav"]  # no temporary left
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_call_file_follows_the_umask_and_a_failed_write_leaves_no_temporary(
        tmp_path: Path) -> None:
    """A call's WAV was made 0644 whatever the umask (a umask of 077 still gave every user the
    recordings), and a write that failed part-way (a full disk; here the file size limit) left its
    ``tmpXXXX.tmp`` in the calls' folder. It now follows the umask, as the manifest beside it
    does, and a failed write leaves the folder as it was."""
    import subprocess
    import sys

    script = """
import os, resource, signal, sys
import numpy as np
from pathlib import Path
from demo.calls import _write_wav
os.umask(int(sys.argv[2], 8))
if sys.argv[3] != "0":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails (EFBIG) instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
try:
    _write_wav(Path(sys.argv[1]), np.full(16000, 0.25))
except OSError as exc:
    sys.exit(f"failed: {exc}")
"""
    root = Path(__file__).resolve().parents[1]
    for umask, limit, mode in (("077", "0", 0o600), ("027", "0", 0o640), ("022", "0", 0o644),
                               ("022", "8000", None)):
        folder = tmp_path / f"{umask}-{limit}"
        folder.mkdir()
        done = subprocess.run([sys.executable, "-c", script, str(folder / "near.wav"), umask,
                               limit], capture_output=True, text=True, timeout=60, cwd=root)
        if mode is None:
            assert done.returncode == 1 and "failed: " in done.stderr, done.stderr
            assert sorted(folder.iterdir()) == [], sorted(folder.iterdir())
        else:
            assert done.returncode == 0, done.stderr
            assert (folder / "near.wav").stat().st_mode & 0o777 == mode, umask
