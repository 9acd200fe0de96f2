"""Render the demo floor's two-channel French calls with espeak-ng, with exact speech truth.

Demo-only generator: the box never writes audio; these files are the demo's *input* (each
simulated box replays one call in a loop through the real edge pipeline, a pause between two calls,
see :func:`replay_files`).

Each utterance is rendered by espeak-ng (22050 Hz), resampled by sox to 16 kHz float, trimmed of
its leading and trailing silence, then placed on the agent (near) or prospect (far) timeline. The
truth of each channel is the list of its speech islands ``[start_s, end_s)``: the non-silent
sample spans of each placed utterance, split where espeak left an internal silence of at least
:data:`TRUTH_MIN_PAUSE_S` (sentence and comma pauses). Variants are rendered without their
synthetic echo (see :func:`_dry_overlay`) so that no echo tail is mistaken for speech. The far
channel is then band-limited to the telephone band, both channels are levelled and get a seeded
white-noise floor.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import tempfile
import wave
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from demo.scripts import SCRIPTS, CallScript, Voice
from miroir.files import atomic_write

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
"""Bumped whenever the rendering or assembly below changes the output."""

RATE_HZ = 16000
"""Sample rate of the rendered calls: the box's (:data:`edge.frames.RATE_HZ`, a test keeps them
equal), so that its source reads them as they are. Not imported: ``edge.frames`` loads numpy, which
the demo loads only when it renders."""
LEAD_IN_S = 0.8
TAIL_S = 1.2
TRUTH_MIN_PAUSE_S = 0.2
"""Internal silences at least this long split an utterance into separate truth segments."""
SAME_CHANNEL_MIN_GAP_S = 0.25
"""Two turns of the same party never start closer than this after each other's end."""
SILENCE_THRESHOLD = 1e-3
"""Absolute sample level (full scale 1.0) under which espeak's output counts as silence."""
NEAR_PEAK_DBFS = -6.0
FAR_PEAK_DBFS = -9.0
NOISE_DBFS = -65.0
PHONE_BAND_HZ = (300.0, 3400.0)
PHONE_ROLLOFF_HZ = 100.0

BETWEEN_CALLS_S = 10.0
"""Line time a demo box replays after each call before the call starts again: the prospect hangs up
(the busy tone below), then the noise floor until the next dial."""
BUSY_HZ = 440.0
BUSY_CADENCE_S = (0.5, 0.5)
"""The French busy tone: 440 Hz, 0.5 s on, 0.5 s off."""
BUSY_S = 4.0
"""How long the busy tone plays: a box takes 3 s of it as the prospect's hang-up and ends the call
where it began."""
BUSY_DBFS = -20.0

CACHE_KEY_FILE = "cache_key.txt"
MANIFEST_FILE = "manifest.json"


class DemoToolError(RuntimeError):
    """A required Debian tool (espeak-ng or sox) is missing or failed."""


@dataclass(frozen=True)
class DemoCall:
    """One rendered call: two mono 16 kHz PCM16 WAV files and its truth JSON."""

    name: str
    near: Path
    far: Path
    truth: Path
    duration_s: float


@dataclass(frozen=True)
class _Clip:
    """A trimmed utterance and its speech islands, in samples relative to the clip start."""

    samples: FloatArray
    islands: tuple[tuple[int, int], ...]


def _require_tools() -> tuple[str, str]:
    """Return the paths of espeak-ng and sox, or raise naming the apt packages to install."""
    missing = [name for name in ("espeak-ng", "sox") if shutil.which(name) is None]
    if missing:
        raise DemoToolError(
            f"demo calls need {' and '.join(missing)} on PATH: "
            f"install the Debian package(s) with `apt-get install {' '.join(missing)}`"
        )
    espeak = shutil.which("espeak-ng")
    sox = shutil.which("sox")
    assert espeak is not None and sox is not None
    return espeak, sox


def _tool_version(exe: str) -> str:
    """Return the output of ``exe --version``, stripped."""
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).strip()


def _espeak_data_dir(espeak: str) -> Path:
    """Return espeak-ng's data directory, as reported by ``espeak-ng --version``."""
    version = _tool_version(espeak)
    marker = "Data at:"
    if marker not in version:
        raise DemoToolError(f"cannot find espeak-ng's data directory in {version!r}")
    return Path(version.split(marker, 1)[1].strip().splitlines()[0].strip())


def _dry_overlay(data_dir: Path, root: Path) -> Path:
    """Build an espeak-ng ``--path`` overlay whose variants ``dry-<v>`` are ``<v>`` without echo.

    Several espeak-ng variants (f2, f3, f4, f5, m2) add a synthetic echo whose tail fills the
    pauses between words; without it the non-silent samples are exactly the speech. The overlay
    is symlinks to the system data plus the rewritten variant files.

    Args:
        data_dir: The system ``espeak-ng-data`` directory.
        root: An empty directory to build the overlay in.

    Returns:
        The directory to pass as ``--path``.
    """
    top = root / "espeak-ng-data"
    variants = top / "voices" / "!v"
    variants.mkdir(parents=True)
    for entry in data_dir.iterdir():
        if entry.name != "voices":
            (top / entry.name).symlink_to(entry)
    for entry in (data_dir / "voices").iterdir():
        if entry.name != "!v":
            (top / "voices" / entry.name).symlink_to(entry)
    for entry in (data_dir / "voices" / "!v").iterdir():
        if entry.is_file():
            lines = entry.read_text(errors="replace").splitlines()
            kept = [ln for ln in lines if not ln.strip().lower().startswith("echo")]
            (variants / f"dry-{entry.name}").write_text("\n".join(kept) + "\n")
    return root


def _dry_variant(variant: str) -> str:
    """Map ``"fr+f2"`` to the overlay's echo-free ``"fr+dry-f2"`` (a bare language stays)."""
    lang, sep, var = variant.partition("+")
    return f"{lang}+dry-{var}" if sep else variant


def cache_key(scripts: Sequence[CallScript] = SCRIPTS) -> str:
    """Hash of the scripts, voices, parameters and tool versions that determine the output."""
    espeak, sox = _require_tools()
    payload = {
        "generator": GENERATOR_VERSION,
        "scripts": [asdict(s) for s in scripts],
        "params": {
            "rate_hz": RATE_HZ,
            "lead_in_s": LEAD_IN_S,
            "tail_s": TAIL_S,
            "truth_min_pause_s": TRUTH_MIN_PAUSE_S,
            "same_channel_min_gap_s": SAME_CHANNEL_MIN_GAP_S,
            "silence_threshold": SILENCE_THRESHOLD,
            "near_peak_dbfs": NEAR_PEAK_DBFS,
            "far_peak_dbfs": FAR_PEAK_DBFS,
            "noise_dbfs": NOISE_DBFS,
            "phone_band_hz": PHONE_BAND_HZ,
            "phone_rolloff_hz": PHONE_ROLLOFF_HZ,
        },
        "espeak": _tool_version(espeak),
        "sox": _tool_version(sox),
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


def _ssml(text: str, voice: Voice) -> str:
    """Wrap ``text`` in SSML carrying the voice's pitch range."""
    return f'<speak><prosody range="{voice.pitch_range}">{escape(text)}</prosody></speak>'


def _render(text: str, voice: Voice, espeak: str, sox: str, overlay: Path) -> _Clip:
    """Render one utterance with espeak-ng, resample to 16 kHz with sox, trim and segment it."""
    import numpy as np

    if voice.variant.startswith("mb") or "+mb" in voice.variant:
        raise ValueError(f"mbrola voices are not allowed: {voice.variant}")
    with tempfile.TemporaryDirectory(prefix="miroir-demo-") as tmp:
        wav = os.path.join(tmp, "u.wav")
        cmd = [espeak, f"--path={overlay}", "-b", "1", "-m", "-z",
               "-v", _dry_variant(voice.variant), "-s", str(voice.speed_wpm),
               "-p", str(voice.pitch), "-w", wav, _ssml(text, voice)]
        res = subprocess.run(cmd, capture_output=True, check=False)
        if res.returncode != 0 or not os.path.exists(wav):
            raise DemoToolError(f"espeak-ng failed ({res.returncode}): {res.stderr.decode()!r}")
        res = subprocess.run(
            [sox, wav, "-t", "raw", "-e", "floating-point", "-b", "32", "-L", "-c", "1",
             "-r", str(RATE_HZ), "-"],
            capture_output=True, check=False,
        )
        if res.returncode != 0:
            raise DemoToolError(f"sox failed ({res.returncode}): {res.stderr.decode()!r}")
    x = np.frombuffer(res.stdout, dtype="<f4").astype(np.float64)
    active = np.flatnonzero(np.abs(x) > SILENCE_THRESHOLD)
    if active.size == 0:
        raise DemoToolError(f"espeak-ng rendered silence for {text!r}")
    x = x[active[0] : active[-1] + 1]
    active = active - active[0]
    breaks = np.flatnonzero(np.diff(active) > round(TRUTH_MIN_PAUSE_S * RATE_HZ))
    starts = [int(active[0])] + [int(active[i + 1]) for i in breaks]
    ends = [int(active[i]) + 1 for i in breaks] + [int(active[-1]) + 1]
    return _Clip(samples=x, islands=tuple(zip(starts, ends, strict=True)))


def _bandlimit(x: FloatArray, low_hz: float, high_hz: float, rolloff_hz: float) -> FloatArray:
    """Zero-phase telephone band-pass with raised-cosine edges (no delay, so truth stays exact)."""
    import numpy as np

    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(x.size, 1.0 / RATE_HZ)
    gain = np.zeros_like(f)
    gain[(f >= low_hz) & (f <= high_hz)] = 1.0
    lo = (f > low_hz - rolloff_hz) & (f < low_hz)
    gain[lo] = 0.5 - 0.5 * np.cos(np.pi * (f[lo] - (low_hz - rolloff_hz)) / rolloff_hz)
    hi = (f > high_hz) & (f < high_hz + rolloff_hz)
    gain[hi] = 0.5 + 0.5 * np.cos(np.pi * (f[hi] - high_hz) / rolloff_hz)
    out: FloatArray = np.fft.irfft(spec * gain, n=x.size)
    return out


def _assemble(
    script: CallScript, clips: Sequence[_Clip]
) -> tuple[FloatArray, FloatArray, dict[str, list[list[float]]], float]:
    """Place clips on both timelines; return near, far, truth segments and duration in s."""
    import numpy as np

    placed: list[tuple[str, int, _Clip]] = []
    floor_end = round(LEAD_IN_S * RATE_HZ)
    chan_end = {"near": 0, "far": 0}
    min_gap = round(SAME_CHANNEL_MIN_GAP_S * RATE_HZ)
    for i, (turn, clip) in enumerate(zip(script.turns, clips, strict=True)):
        chan = "near" if turn.speaker == "agent" else "far"
        start = floor_end if i == 0 else floor_end + round(turn.gap_s * RATE_HZ)
        start = max(start, chan_end[chan] + min_gap if chan_end[chan] else 0, 0)
        end = start + clip.samples.size
        placed.append((chan, start, clip))
        chan_end[chan] = end
        floor_end = max(floor_end, end)
    n = floor_end + round(TAIL_S * RATE_HZ)
    tracks = {"near": np.zeros(n), "far": np.zeros(n)}
    segments: dict[str, list[list[float]]] = {"near": [], "far": []}
    for chan, start, clip in placed:
        tracks[chan][start : start + clip.samples.size] += clip.samples
        for s, e in clip.islands:
            segments[chan].append(
                [round((start + s) / RATE_HZ, 6), round((start + e) / RATE_HZ, 6)]
            )
    for segs in segments.values():
        segs.sort()
    rng = np.random.default_rng(zlib.crc32(script.name.encode()))
    noise_rms = 10 ** (NOISE_DBFS / 20)
    near = tracks["near"] * (10 ** (NEAR_PEAK_DBFS / 20) / np.max(np.abs(tracks["near"])))
    far = _bandlimit(tracks["far"], *PHONE_BAND_HZ, PHONE_ROLLOFF_HZ)
    far *= 10 ** (FAR_PEAK_DBFS / 20) / np.max(np.abs(far))
    near = near + rng.normal(0.0, noise_rms, n)
    far = far + rng.normal(0.0, noise_rms, n)
    return near, far, segments, n / RATE_HZ


def _write_wav(path: Path, x: FloatArray) -> None:
    """Write a mono 16 kHz PCM16 WAV atomically (:func:`miroir.files.atomic_write`: two builds of
    the same folder at once, a demo and a test, take turns and each replace the file whole; its
    mode follows the umask, as the manifest's; a failed write leaves no temporary file)."""
    import numpy as np

    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE_HZ)
        w.writeframes(pcm.tobytes())
    atomic_write(path, buf.getvalue(), sync=False)  # rebuilt from the scripts if a crash took it


def _call_paths(out_dir: Path, name: str, duration_s: float) -> DemoCall:
    d = out_dir / name
    return DemoCall(name, d / "near.wav", d / "far.wav", d / "truth.json", duration_s)


def _cached(out_dir: Path, key: str) -> list[DemoCall] | None:
    """Return the calls recorded in ``out_dir`` if they were built with ``key`` and still exist."""
    try:
        if (out_dir / CACHE_KEY_FILE).read_text().strip() != key:
            return None
        manifest = json.loads((out_dir / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    calls = [_call_paths(out_dir, c["name"], float(c["duration_s"])) for c in manifest["calls"]]
    if all(p.is_file() for c in calls for p in (c.near, c.far, c.truth)):
        return calls
    return None


def build_calls(
    out_dir: Path,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = print,
    scripts: Sequence[CallScript] = SCRIPTS,
) -> list[DemoCall]:
    """Render the demo calls into ``out_dir/<name>/{near.wav,far.wav,truth.json}``.

    Idempotent: when ``out_dir`` already holds calls built from the same scripts, parameters and
    tool versions (see :func:`cache_key`), they are returned at once without rendering.

    Args:
        out_dir: Directory to write into (created if needed).
        force: Re-render even when the cache key matches.
        progress: Called with one human-readable line per call (``None`` for silence).
        scripts: The calls to render; defaults to the eight demo calls.

    Returns:
        One :class:`DemoCall` per script, in script order.
    """
    say = progress or (lambda _msg: None)
    espeak, sox = _require_tools()
    out_dir = Path(out_dir)
    key = cache_key(scripts)
    if not force and (hit := _cached(out_dir, key)) is not None:
        say(f"demo calls: cache hit in {out_dir} ({len(hit)} calls)")
        return hit
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CACHE_KEY_FILE).unlink(missing_ok=True)

    jobs = {(t.text, s.agent if t.speaker == "agent" else s.prospect)
            for s in scripts for t in s.turns}
    with (
        tempfile.TemporaryDirectory(prefix="miroir-espeak-") as tmp,
        ThreadPoolExecutor(max_workers=max(2, 2 * (os.cpu_count() or 1))) as pool,
    ):
        overlay = _dry_overlay(_espeak_data_dir(espeak), Path(tmp))
        futures = {job: pool.submit(_render, *job, espeak, sox, overlay) for job in jobs}
        rendered = {job: fut.result() for job, fut in futures.items()}

    calls: list[DemoCall] = []
    for script in scripts:
        clips = [rendered[(t.text, script.agent if t.speaker == "agent" else script.prospect)]
                 for t in script.turns]
        near, far, segments, duration_s = _assemble(script, clips)
        call = _call_paths(out_dir, script.name, duration_s)
        call.near.parent.mkdir(parents=True, exist_ok=True)
        _write_wav(call.near, near)
        _write_wav(call.far, far)
        truth = {
            "name": script.name,
            "duration_s": duration_s,
            "rate_hz": RATE_HZ,
            "near": segments["near"],
            "far": segments["far"],
            "description": script.description,
        }
        atomic_write(call.truth, json.dumps(truth, ensure_ascii=False, indent=1), sync=False)
        calls.append(call)
        say(f"demo call {script.name}: {duration_s:.1f} s, agent "
            f"{speech_ratio_truth(segments['near'], 0, duration_s):.0%} speech, prospect "
            f"{speech_ratio_truth(segments['far'], 0, duration_s):.0%}")
    manifest = {"calls": [{"name": c.name, "duration_s": c.duration_s} for c in calls]}
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    (out_dir / CACHE_KEY_FILE).write_text(key + "\n")
    log.info("rendered %d demo calls into %s", len(calls), out_dir)
    return calls


def _busy_tone(n: int) -> FloatArray:
    """``n`` samples of the French busy tone from its start, then silence."""
    import numpy as np

    t = np.arange(n) / RATE_HZ
    on_s, off_s = BUSY_CADENCE_S
    gate = (t < BUSY_S) & (t % (on_s + off_s) < on_s)
    out: FloatArray = 10 ** (BUSY_DBFS / 20) * np.sin(2 * np.pi * BUSY_HZ * t) * gate
    return out


def replay_files(call: DemoCall, out_dir: Path,
                 pause_s: float = BETWEEN_CALLS_S) -> tuple[Path, Path]:
    """Write the call then ``pause_s`` of line (a hang-up, then the noise floor): a box's loop."""
    import numpy as np

    rng = np.random.default_rng(zlib.crc32(f"{call.name} pause".encode()))
    out = Path(out_dir) / call.name
    out.mkdir(parents=True, exist_ok=True)
    n = round(pause_s * RATE_HZ)
    tones = {"near": np.zeros(n), "far": _busy_tone(n)}
    for chan, src in (("near", call.near), ("far", call.far)):
        with wave.open(str(src), "rb") as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        pause = tones[chan] + rng.normal(0.0, 10 ** (NOISE_DBFS / 20), n)
        _write_wav(out / src.name, np.concatenate([pcm / 32767.0, pause]))
    return out / call.near.name, out / call.far.name


def load_truth(call: DemoCall) -> dict[str, Any]:
    """Read a call's truth.json."""
    data: dict[str, Any] = json.loads(call.truth.read_text())
    return data


def speech_ratio_truth(segments: Sequence[Sequence[float]], start_s: float, end_s: float) -> float:
    """Fraction of ``[start_s, end_s)`` covered by the (non-overlapping) ``segments``.

    Args:
        segments: ``[start_s, end_s]`` pairs in seconds, non-overlapping.
        start_s: Window start in seconds.
        end_s: Window end in seconds.

    Returns:
        Covered fraction in [0, 1]; 0.0 for an empty window.
    """
    if end_s <= start_s:
        return 0.0
    covered = sum(max(0.0, min(e, end_s) - max(s, start_s)) for s, e in segments)
    return min(1.0, covered / (end_s - start_s))
