"""Evaluation of the affect model: the training report's LOSO UARs, checked against the committed files.

By default the speaker-independent figures come from ``report.json`` (written by
``miroir models train affect``, which evaluates every fold's float and int8 model), and the committed
model files are checked now: checksums, sizes, and the int8 ONNX and int8 TFLite outputs against the
float model on every EmoDB clip. ``recompute=True`` reruns the nested leave-one-speaker-out
evaluation from scratch (minutes); its int8 TFLite UAR needs TensorFlow (the ``affect-build`` extra)
to convert each fold's model, and is null with a note saying so where it is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

REPORT = Path(__file__).with_name("report.json")
TOLERANCE = 0.05
"""Largest allowed absolute difference between an int8 model's probability and the float model's."""
AFFECT_FILES = ("affect_features", "affect_float", "affect_int8_onnx", "affect_int8_tflite")
TFLITE_NOT_RECOMPUTED = (
    "not recomputed: each held-out fold's int8 TFLite model is converted with TensorFlow, the "
    "optional affect-build extra, which is not installed; the training report's figure is what "
    "`miroir models evaluate affect` prints without --recompute, and the committed TFLite file is "
    "checked against the float model under 'committed'")
"""Why ``--recompute`` gives ``arousal_uar_int8_tflite`` as null where TensorFlow is missing."""


def tflite_recomputed(candidate: dict[str, Any]) -> dict[str, Any]:
    """The int8 TFLite figures of a recomputed candidate (:func:`models.affect.train.evaluate_candidate`),
    or null with :data:`TFLITE_NOT_RECOMPUTED` when TensorFlow could not build its fold models."""
    from models.affect.export import tensorflow_available

    if "arousal_uar_int8_tflite" in candidate:
        return {"arousal_uar_int8_tflite": candidate["arousal_uar_int8_tflite"],
                "tension_uar_int8_tflite": candidate["tension_uar_int8_tflite"]}
    note = TFLITE_NOT_RECOMPUTED if not tensorflow_available() else "not recomputed: no int8 models"
    return {"arousal_uar_int8_tflite": None, "tension_uar_int8_tflite": None,
            "arousal_uar_int8_tflite_note": note}


def files_ok() -> dict[str, bool]:
    """Whether each committed affect file matches its manifest checksum."""
    from models.build import ModelError, model_path

    out = {}
    for name in AFFECT_FILES:
        try:
            model_path(name)
            out[name] = True
        except ModelError:
            out[name] = False
    return out


def committed_agreement(data_dir: Path | None = None) -> dict[str, Any]:
    """Run the committed float, int8 ONNX and int8 TFLite models on every EmoDB clip and compare."""
    from edge.affect import AffectModel
    from models.affect import data
    from models.build import model_path

    db = data.load(data_dir)
    flt = AffectModel("onnx", model_file=model_path("affect_float"))
    z = flt.standardize(db.features)
    p_float = np.asarray(next(iter(flt.model.run({"features": z}).values())))
    out: dict[str, Any] = {"tolerance": TOLERANCE}
    for backend, key in (("onnx", "onnx"), ("litert", "tflite")):
        m = AffectModel(backend)
        p = np.stack([np.asarray(next(iter(m.model.run({"features": z[i:i + 1]}).values()))).reshape(-1)
                      for i in range(len(z))])
        diff = float(np.abs(p - p_float).max())
        out[f"max_abs_diff_int8_{key}"] = round(diff, 4)
        out[f"decision_agreement_int8_{key}"] = round(float(np.mean((p > 0.5) == (p_float > 0.5))), 4)
        out[f"within_tolerance_int8_{key}"] = diff <= TOLERANCE
    return out


def evaluate(recompute: bool = False, data_dir: Path | None = None) -> dict[str, Any]:
    """The issue's evaluation keys plus file checks.

    Args:
        recompute: rerun the nested LOSO evaluation instead of reading ``report.json``.
        data_dir: the EmoDB folder (default ``../shared/data/emodb``).

    Returns:
        ``arousal_uar``, ``arousal_uar_ci95``, ``tension_uar``, ``arousal_uar_int8``,
        ``baseline_arousal_uar`` (fractions) and more.
    """
    from models.build import model_path

    if recompute:
        from threadpoolctl import threadpool_limits

        from models.affect import data
        from models.affect.train import CANDIDATES, choice_held_out, evaluate_candidate

        spec = json.loads(model_path("affect_features").read_text())
        with threadpool_limits(1):
            db = data.load(data_dir)
            res = {c.name: evaluate_candidate(db, c) for c in CANDIDATES}
            procedure = choice_held_out(db)
        s, a = res[spec["candidate"]], res["a"]
        report: dict[str, Any] = {
            # the whole procedure held out, the choice of candidate included (see choice_held_out)
            "arousal_uar_choice_held_out": procedure["arousal_uar"],
            "arousal_uar_choice_held_out_ci95": procedure["arousal_uar_ci95"],
            "tension_uar_choice_held_out": procedure["tension_uar"],
            "candidate_chosen_per_fold": procedure["chosen"],
            "arousal_uar": s["arousal_uar"], "arousal_uar_ci95": s["arousal_uar_ci95"],
            "tension_uar": s["tension_uar"], "tension_uar_ci95": s["tension_uar_ci95"],
            "arousal_uar_int8": s["arousal_uar_int8"], "tension_uar_int8": s["tension_uar_int8"],
            **tflite_recomputed(s),
            "baseline_arousal_uar": a["arousal_uar"], "baseline_tension_uar": a["tension_uar"],
            "shipped_candidate": spec["candidate"], "source": "recomputed",
        }
    else:
        if not REPORT.exists():
            raise FileNotFoundError(f"{REPORT} is missing: run `miroir models train affect`")
        full = json.loads(REPORT.read_text())
        report = {k: full.get(k) for k in (
            "arousal_uar", "arousal_uar_ci95", "tension_uar", "tension_uar_ci95", "arousal_uar_int8",
            "tension_uar_int8", "arousal_uar_int8_tflite", "baseline_arousal_uar",
            "baseline_tension_uar", "external_bar_egemaps_lr_arousal_uar", "shipped_candidate")}
        report["source"] = str(REPORT.name)
    checks = files_ok()
    report["files_ok"] = checks
    report["bytes"] = {n: model_path(n).stat().st_size for n, ok in checks.items() if ok}
    if all(checks.values()):
        report["committed"] = committed_agreement(data_dir)
    return report
