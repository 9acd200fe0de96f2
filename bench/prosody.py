"""Cost of the prosody stage: real-time factor on one thread, median over repeats.

Runs :class:`edge.prosody.Prosody` over a minute of real EmoDB speech in 512-sample frames (with one
``window()`` every 10 s, as the pipeline does) and, in the same process, reference fp32 Silero VAD
(onnxruntime, one thread) over the same audio, so that the ratio stays meaningful on a loaded machine.
``python -m bench.prosody --json`` prints ``prosody_rtf`` (median), ``prosody_rtf_min``,
``silero_rtf`` (median), ``ratio`` (= prosody / silero) and ``audio_s``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from bench.accuracy_prosody import EMODB, clip_names, read_wav
from edge.prosody import Prosody
from models.build import model_path

FRAME = 512


def speech(seconds: float = 60.0) -> np.ndarray:
    """``seconds`` of EmoDB clips back to back, float32 at 16 kHz."""
    names = clip_names()
    return np.concatenate([read_wav(EMODB / "wav" / n) for n in names[: int(seconds / 2.0)]])


def _prosody_once(pros: Prosody, x: np.ndarray) -> float:
    pros.reset()
    every = 10 * 16000 // FRAME
    t0 = time.process_time()
    for j, i in enumerate(range(0, len(x), FRAME)):
        pros(x[i:i + FRAME])
        if j % every == every - 1:
            pros.window(10.0)
    return time.process_time() - t0


def _silero_once(x: np.ndarray) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path("silero_vad")), opts, providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), dtype=np.float32)
    ctx = np.zeros(64, dtype=np.float32)
    sr = np.array(16000, dtype=np.int64)
    t0 = time.process_time()
    for i in range(0, len(x) - FRAME + 1, FRAME):
        frame = x[i:i + FRAME]
        inp = np.concatenate([ctx, frame])[None, :]
        _, state = sess.run(None, {"input": inp, "state": state, "sr": sr})
        ctx = frame[-64:]
    return time.process_time() - t0


def prosody_cost(seconds: float = 60.0, repeats: int = 5) -> dict[str, Any]:
    """Median real-time factors of the prosody stage and of reference Silero, one channel each.

    Args:
        seconds: audio length, seconds.
        repeats: timed runs of each (after one warm-up run).

    Returns:
        ``prosody_rtf``, ``prosody_rtf_min``, ``silero_rtf``, ``ratio``, ``audio_s``, ``repeats``.
    """
    x = speech(seconds)
    dur = len(x) / 16000
    pros = Prosody(history_s=30.0)
    _prosody_once(pros, x)
    p_times, s_times = [], []
    for _ in range(repeats):  # interleaved, so that load changes hit both alike
        p_times.append(_prosody_once(pros, x) / dur)
        s_times.append(_silero_once(x) / dur)
    p, s = float(np.median(p_times)), float(np.median(s_times))
    return {"prosody_rtf": p, "prosody_rtf_min": float(min(p_times)), "silero_rtf": s,
            "ratio": p / s, "audio_s": dur, "repeats": repeats}


def main() -> None:
    """Print the cost figures as JSON."""
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds of speech to run")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    ap.add_argument("--json", action="store_true", help="print JSON (the default output)")
    args = ap.parse_args()
    figs = prosody_cost(args.seconds, args.repeats)
    print(json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in figs.items()}))


if __name__ == "__main__":
    main()
