"""The agent's baselines across shifts: saved in the box's state directory, loaded at start.

The file holds the medians and spreads the cue and fatigue stages learned (a handful of numbers,
no audio, nothing about a call) and when they were learned. Saving again keeps that time, so a
baseline learned more than ``max_age_h`` ago is ignored however often the box restarted (the seat
may have changed hands); a corrupt file is reported and ignored, never fatal.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.fatigue import FatigueBaseline
from edge.signals import AgentBaseline
from miroir.files import atomic_write, read_json

log = logging.getLogger(__name__)

FILE = "baselines.json"
FORMAT = 2
"""Format 2 measures the pace as the mean gap between syllable nuclei; a format 1 file's pace (gaps
capped at 0.3 s plus a fixed 0.2 s) reads lower, so it is relearned and the rest kept. An older
release ignores a format 2 file and learns everything afresh."""

FUTURE_SLACK_S = 3600.0
"""A file learned later than now plus this is refused: its age could never pass ``max_age_h``."""


@dataclass(frozen=True)
class Baselines:
    """What a previous shift learned; either part may be missing."""

    agent: AgentBaseline | None = None
    fatigue: FatigueBaseline | None = None
    learned_ts: float | None = None
    """When they were learned, seconds since the epoch."""


def load(state_dir: Path, max_age_h: float) -> Baselines:
    """The saved baselines, if the file exists, parses and is at most ``max_age_h`` hours old.

    Args:
        state_dir: The box's state directory.
        max_age_h: Oldest acceptable save, in hours; 0 never loads.
    """
    path = Path(state_dir) / FILE
    if max_age_h <= 0 or not path.exists():
        return Baselines()
    try:
        data = read_json(path)
        if type(data.get("format")) is not int or data["format"] not in (1, FORMAT):
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
        if data["format"] == 1 and data.get("agent"):
            data["agent"].pop("pace_syl_s", None)
        learned_ts = float(data.get("learned_ts", data["saved_ts"]))
        if not math.isfinite(learned_ts) or learned_ts > time.time() + FUTURE_SLACK_S:
            raise ValueError(f"learned_ts {learned_ts!r} is not a time in the past")
        age_h = (time.time() - learned_ts) / 3600
        if age_h > max_age_h:
            log.info("baselines in %s were learned %.0f h ago (over %.0f h): learning afresh",
                     path, age_h, max_age_h)
            return Baselines()
        agent = AgentBaseline.from_dict(data["agent"]) if data.get("agent") else None
        fatigue = FatigueBaseline.from_dict(data["fatigue"]) if data.get("fatigue") else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return Baselines()
    log.info("loaded the agent's baselines from %s (learned %.1f h ago)", path, age_h)
    return Baselines(agent, fatigue, learned_ts)


def clock_behind(state_dir: Path) -> bool:
    """Whether the box's clock reads before the saved baselines were learned (by more than
    :data:`FUTURE_SLACK_S`): a Pi booted at its image's time, before NTP set its clock."""
    try:
        data = read_json(Path(state_dir) / FILE)
        learned_ts = float(data.get("learned_ts", data["saved_ts"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return math.isfinite(learned_ts) and learned_ts > time.time() + FUTURE_SLACK_S


def save(state_dir: Path, agent: dict[str, Any] | None, fatigue: dict[str, Any] | None,
         learned_ts: float | None = None) -> bool:
    """Write the learned baselines atomically; return False when there is nothing to save.

    Args:
        state_dir: The box's state directory.
        agent: the cue baseline's :meth:`~edge.signals.AgentBaseline.as_dict`.
        fatigue: the fatigue baseline's :meth:`~edge.fatigue.FatigueBaseline.as_dict`.
        learned_ts: when they were learned, seconds since the epoch (now if None).
    """
    if not agent and not fatigue:
        return False
    path = Path(state_dir) / FILE
    now = time.time()
    atomic_write(path, json.dumps({"format": FORMAT, "saved_ts": now,
                                   "learned_ts": now if learned_ts is None else learned_ts,
                                   "agent": agent or None, "fatigue": fatigue or None}))
    return True


def forget(state_dir: Path) -> bool:
    """Delete the saved baselines (another agent took the seat); return whether a file was there."""
    path = Path(state_dir) / FILE
    existed = path.exists()
    path.unlink(missing_ok=True)
    if existed:
        log.info("deleted %s: the seat changed hands", path)
    return existed
