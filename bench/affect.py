"""Benchmark of the affect model per window: int8 ONNX and int8 TFLite, float ONNX as the baseline.

Medians over many single-window inferences on one thread, on real features (EmoDB clips), all in
the same process. Feature extraction is measured too (it is not part of the 1 ms model budget).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np


def _median_ms(fn: Any, inputs: list[np.ndarray], repeats: int) -> float:
    for x in inputs[:20]:  # warm-up
        fn(x)
    times = []
    for i in range(repeats):
        x = inputs[i % len(inputs)]
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def run(repeats: int = 2000, clips: int = 20) -> dict[str, Any]:
    """Measure per-window inference and feature times.

    Args:
        repeats: inferences per runtime.
        clips: EmoDB clips whose features are the inputs.

    Returns:
        JSON-ready figures in milliseconds per window.
    """
    from edge.affect import AffectModel, window_features
    from models.affect.data import default_data_dir, read_clip
    from models.build import model_path

    files = sorted((default_data_dir() / "wav").glob("*.wav"))[:: max(1, 411 // clips)][:clips]
    audio = [read_clip(p) for p in files]
    t0 = time.perf_counter()
    feats = [window_features(x) for x in audio]
    features_ms = (time.perf_counter() - t0) / len(audio) * 1000.0
    onnx = AffectModel("onnx")
    tfl = AffectModel("litert")
    flt = AffectModel("onnx", model_file=model_path("affect_float"))
    out: dict[str, Any] = {
        "ms_per_window_onnx": round(_median_ms(onnx, feats, repeats), 4),
        "ms_per_window_tflite": round(_median_ms(tfl, feats, repeats), 4),
        "ms_per_window_float_onnx": round(_median_ms(flt, feats, repeats), 4),
        "ms_per_window_features": round(features_ms, 2),
        "windows_per_s_audio": 1.0,
        "repeats": repeats,
        "threads": 1,
        "model_bytes": {n: Path(model_path(n)).stat().st_size
                        for n in ("affect_int8_onnx", "affect_int8_tflite", "affect_float",
                                  "affect_features")},
    }
    out["ratio_onnx_int8_to_float"] = round(out["ms_per_window_onnx"] / out["ms_per_window_float_onnx"], 3)
    return out
