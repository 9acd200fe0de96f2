"""Install check of a box's headset: levels, noise floor, clipping, agent/line swapped.

The installer runs ``miroir edge check``: a few seconds are captured into RAM; the agent stays
quiet until the cue, then speaks. Only numbers come out of this module; the samples are dropped
when the check returns (nothing is written, nothing is sent).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.frames import RATE_HZ
from miroir.files import atomic_write, read_json

FRAME = 512
CLIP_LEVEL = 0.99
SPEECH_RISE_DB = 10.0
"""The agent's channel must rise this much after the cue for the agent to count as heard."""
SWAP_MARGIN_DB = 6.0
"""The line's channel must rise this much more than the agent's after the cue for the channels to
count as swapped: the agent's voice can reach both, only a clearly louder line is a swap."""
MAX_CLIPPED_RATIO = 0.001
PART_MIN_S = 1.0
"""Each part of the recording, quiet before the cue and speaking after it, lasts this at least:
with none before it, room noise alone rose from nothing and counted as the agent heard."""


@dataclass(frozen=True)
class ChannelReport:
    """Numbers about one channel (dBFS: 0 is full scale)."""

    rms_dbfs: float
    peak_dbfs: float
    noise_floor_dbfs: float
    clipped_ratio: float
    rise_after_cue_db: float


def _frame_db(x: np.ndarray) -> np.ndarray:
    n = len(x) // FRAME
    if n == 0:
        return np.array([-120.0])
    frames = x[: n * FRAME].reshape(n, FRAME).astype(np.float64)
    return 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-6)


def channel_report(x: np.ndarray, cue_sample: int) -> ChannelReport:
    """Levels of one channel (float samples in -1..1) and its rise after the cue."""
    db = _frame_db(x)
    before = _frame_db(x[:cue_sample])
    after = _frame_db(x[cue_sample:])
    return ChannelReport(
        rms_dbfs=round(float(20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-6)), 1),
        peak_dbfs=round(float(20 * np.log10(np.max(np.abs(x)) + 1e-6)), 1),
        noise_floor_dbfs=round(float(np.percentile(db, 10)), 1),
        clipped_ratio=round(float(np.mean(np.abs(x) >= CLIP_LEVEL)), 5),
        rise_after_cue_db=round(float(np.percentile(after, 90) - np.percentile(before, 90)), 1),
    )


def check(near: np.ndarray, far: np.ndarray, cue_s: float) -> dict[str, object]:
    """Judge a recording in which the agent is quiet before ``cue_s`` and speaks after it.

    Args:
        near: The agent's channel (float, -1..1, 16 kHz).
        far: The line's channel (same).
        cue_s: Seconds from the start at which the agent was told to speak.

    Returns:
        ``near`` and ``far`` reports, ``swapped``, ``agent_heard``, ``problems`` (list of
        sentences for the installer) and ``ok``.
    """
    cue = int(cue_s * RATE_HZ)
    rn, rf = channel_report(near, cue), channel_report(far, cue)
    problems = []
    swapped = (rf.rise_after_cue_db >= SPEECH_RISE_DB
               and rf.rise_after_cue_db > rn.rise_after_cue_db + SWAP_MARGIN_DB)
    heard = rn.rise_after_cue_db >= SPEECH_RISE_DB and not swapped
    if swapped:
        problems.append("agent and line are swapped: the agent's voice came in on the line "
                        "channel (swap the plugs, or the channels in the settings)")
    elif not heard:
        problems.append("the agent was not heard after the cue: check the headset microphone "
                        "and its mute switch")
    for name, r in (("agent", rn), ("line", rf)):
        if r.clipped_ratio > MAX_CLIPPED_RATIO:
            problems.append(f"{name} channel clips ({100 * r.clipped_ratio:.2f} % of samples): "
                            "lower the input gain")
    if rn.noise_floor_dbfs > -45:
        problems.append(f"agent channel noise floor is high ({rn.noise_floor_dbfs} dBFS)")
    return {"near": asdict(rn), "far": asdict(rf), "swapped": swapped, "agent_heard": heard,
            "problems": problems, "ok": not problems}


__all__ = ["ChannelReport", "channel_report", "check"]


CHECK_FILE = "install-check.json"
"""The last install check's verdict, in the box's state directory (numbers and names only)."""


PROC_ASOUND = Path("/proc/asound")


def usb_audio_adapters(proc_asound: Path = PROC_ASOUND) -> list[str]:
    """The USB audio adapters plugged in, as ``vendor:product``, sorted.

    The box's udev rule names any USB adapter ``miroirheadset``: a check's verdict holds for the
    adapters it was made with, not for another model that may be wired the other way round.
    """
    ids = []
    for card in proc_asound.glob("card[0-9]*"):
        try:
            ids.append((card / "usbid").read_text().strip())
        except OSError:
            continue  # not a USB card
    return sorted(ids)


def save_verdict(state_dir: Path, device: str, far_device: str | None, report: dict[str, Any],
                 now: float | None = None, proc_asound: Path = PROC_ASOUND) -> Path:
    """Keep the verdict of a check of these devices (what the prospect affect model relies on:
    the line is the line, not the agent)."""
    path = Path(state_dir) / CHECK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    verdict = {"device": device, "far_device": far_device, "swapped": bool(report["swapped"]),
               "agent_heard": bool(report["agent_heard"]),
               "adapters": usb_audio_adapters(proc_asound),
               "checked_ts": round(time.time() if now is None else now, 3)}
    atomic_write(path, json.dumps(verdict) + "\n")
    return path


def verified(state_dir: Path, device: str | None, far_device: str | None,
             proc_asound: Path = PROC_ASOUND) -> str | None:
    """Why the channels of these devices are not known to be the right way round (None if they are:
    a saved check of the same devices, with the same USB adapters plugged in, heard the agent on
    the agent's channel)."""
    path = Path(state_dir) / CHECK_FILE
    try:
        verdict = read_json(path)
    except FileNotFoundError:
        return "no install check saved (run `miroir edge check --config` with the agent speaking)"
    except (OSError, ValueError) as exc:
        return f"the saved install check is unreadable ({exc})"
    if not isinstance(verdict, dict) or (verdict.get("device"), verdict.get("far_device")) != (
            device, far_device):
        return "the saved install check is of other devices: run it again"
    if verdict.get("swapped") is not False or verdict.get("agent_heard") is not True:
        return "the saved install check did not hear the agent on the agent's channel"
    now = usb_audio_adapters(proc_asound)
    if verdict.get("adapters") != now:
        return (f"the USB audio adapters changed since the install check ({verdict.get('adapters')} "
                f"then, {now} now): run it again")
    return None
