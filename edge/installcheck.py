"""Install check of a box's headset: levels, noise floor, clipping, agent/line swapped.

The installer runs ``miroir edge check``: a few seconds are captured into RAM; the agent stays
quiet until the cue, then speaks. Only numbers come out of this module; the samples are dropped
when the check returns (nothing is written, nothing is sent).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edge.frames import RATE_HZ

FRAME = 512
CLIP_LEVEL = 0.99
SPEECH_RISE_DB = 10.0
"""The agent's channel must rise this much after the cue for the agent to count as heard."""
SWAP_MARGIN_DB = 6.0
MAX_CLIPPED_RATIO = 0.001


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
