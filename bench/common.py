"""Shared helpers for benchmarks and accuracy reports: data paths, WAV reading, AMI labels, AUC,
medians."""

from __future__ import annotations

import statistics
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.frames import FRAME_S  # the step of the VAD traces and frame labels

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
AMI = SHARED / "ami"
HEADSETS = SHARED / "ami-headsets"


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit WAV's first channel as float32 in +-1.0."""
    with wave.open(str(path)) as w:
        raw = w.readframes(w.getnframes())
        ch = w.getnchannels()
    x = np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768.0
    return x.reshape(-1, ch)[:, 0] if ch > 1 else x


def ami_turns() -> dict[str, list[tuple[float, float]]]:
    """Speaker turns (start_s, end_s) of every AMI excerpt, from the RTTM files."""
    turns: dict[str, list[tuple[float, float]]] = {}
    for name in ("debug.train.rttm", "debug.development.rttm"):
        for line in (AMI / name).read_text().splitlines():
            f = line.split()
            turns.setdefault(f[1], []).append((float(f[3]), float(f[3]) + float(f[4])))
    return turns


def frame_labels(turns: list[tuple[float, float]], frames: int, step_s: float = FRAME_S
                 ) -> np.ndarray:
    """True for frames whose centre falls inside the union of ``turns``."""
    centre_s = (np.arange(frames) + 0.5) * step_s
    truth = np.zeros(frames, dtype=bool)
    for start, end in turns:
        truth |= (centre_s >= start) & (centre_s < end)
    return truth


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (rank formulation, ties averaged)."""
    from scipy.stats import rankdata

    labels = labels.astype(bool)
    ranks = rankdata(scores)
    pos = int(labels.sum())
    neg = len(labels) - pos
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def median_seconds(fn: Callable[[], object], repeats: int = 5) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, in seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


_LIMITS: list[Any] = []


def single_thread_env() -> None:
    """Pin numeric libraries to one thread: the variables for libraries not loaded yet, and
    threadpoolctl for the BLAS numpy has already loaded (the variables come too late for it)."""
    import os

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # installed with the test extras (scikit-learn); without it, env only
        return
    _LIMITS.append(threadpool_limits(1))
