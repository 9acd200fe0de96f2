"""EmoDB as the affect model reads it: clips, speakers, arousal and tension labels, features."""

from __future__ import annotations

import logging
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

HIGH_AROUSAL = frozenset("WAF")
"""Anger (Wut), fear (Angst), happiness (Freude)."""
LOW_AROUSAL = frozenset("LTN")
"""Boredom (Langeweile), sadness (Trauer), neutral; disgust (E) is left out of arousal."""
TENSE = frozenset("WAE")
"""Anger, fear, disgust (Ekel) versus the rest."""


def default_data_dir() -> Path:
    """``../shared/data/emodb`` next to the repository (never downloaded)."""
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "emodb"


@dataclass
class EmoDb:
    """The clips' names, speakers, labels (arousal -1 where undefined) and features."""

    names: list[str]
    speakers: np.ndarray
    emotions: np.ndarray
    arousal: np.ndarray
    tension: np.ndarray
    features: np.ndarray


def read_clip(path: Path) -> np.ndarray:
    """A 16 kHz mono PCM16 WAV file as float32 samples."""
    with wave.open(str(path)) as wf:
        if wf.getframerate() != 16000 or wf.getnchannels() != 1 or wf.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16 kHz mono PCM16")
        return np.frombuffer(wf.readframes(wf.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


def labels(names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Speakers, emotion letters, arousal (1 high, 0 low, -1 disgust) and tension (1/0) of file names."""
    spk = np.array([n[:2] for n in names])
    emo = np.array([n[5] for n in names])
    aro = np.array([1 if e in HIGH_AROUSAL else 0 if e in LOW_AROUSAL else -1 for e in emo])
    ten = np.array([1 if e in TENSE else 0 for e in emo])
    return spk, emo, aro, ten


def load(data_dir: Path | None = None) -> EmoDb:
    """Read every EmoDB clip and compute the box's window features for it.

    Args:
        data_dir: the ``emodb`` folder (default :func:`default_data_dir`).

    Returns:
        The labelled feature table, clips in file-name order.
    """
    from edge.affect import window_features

    folder = (data_dir or default_data_dir()) / "wav"
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise FileNotFoundError(f"no EmoDB clips in {folder}")
    names = [p.stem for p in files]
    feats = np.stack([window_features(read_clip(p)) for p in files])
    spk, emo, aro, ten = labels(names)
    log.info("EmoDB: %d clips, %d speakers, %d features", len(names), len(set(spk)), feats.shape[1])
    return EmoDb(names, spk, emo, aro, ten, feats)
