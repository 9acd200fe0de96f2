"""Train, evaluate (leave-one-speaker-out) and export the prospect affect model. Deterministic.

Two candidates, measured side by side with the same protocol:

* ``a``: the prosody stage's functionals (``edge.prosody``) with a logistic regression (baseline);
* ``b``: a small neural network (ReLU MLP, ensemble of 3 folded into one graph) on log-mel
  functionals plus the prosody functionals.

Outer loop: leave one of the 8 speakers out. Inside each outer training fold, the L2 strength is
chosen by an inner leave-one-speaker-out over the 7 training speakers; the decision threshold is fixed
at 0.5 (class-balanced loss). Each outer fold's model is also quantized (ONNX QDQ, and TFLite when
TensorFlow is installed) with that fold's training features as calibration data, so the int8 UAR is
speaker-independent too. UAR confidence intervals: percentile bootstrap over speakers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.affect import export
from models.affect.data import EmoDb
from models.affect.net import Net, NetConfig, fit

log = logging.getLogger(__name__)

OUT_DIR = Path(__file__).resolve().parent
FILES = {"affect_features": "affect_features.json", "affect_float": "affect_float.onnx",
         "affect_int8_onnx": "affect_int8.onnx", "affect_int8_tflite": "affect_int8.tflite"}
SEED = 0
BOOTSTRAP = 2000


@dataclass(frozen=True)
class Candidate:
    """A feature subset and a model family with its grid of L2 strengths."""

    name: str
    description: str
    prosody_only: bool
    hidden: int
    seeds: int
    l2_grid: tuple[float, ...]


CANDIDATES = (
    Candidate("a", "prosody functionals (edge.prosody) + logistic regression", True, 0, 1,
              (0.3, 3.0, 30.0)),
    Candidate("b", "MLP (32 ReLU x 3-member ensemble) on log-mel + prosody functionals", False, 32, 3,
              (10.0, 30.0, 100.0)),
)


def columns(prosody_only: bool) -> list[int]:
    """Indices of the features a candidate reads."""
    from edge.affect import FEATURE_NAMES

    return [i for i, n in enumerate(FEATURE_NAMES) if not prosody_only or n.startswith("prosody_")]


def uar(y: np.ndarray, pred: np.ndarray) -> float:
    """Unweighted average recall of binary labels (entries with y < 0 ignored)."""
    m = y >= 0
    return float(np.mean([np.mean(pred[m][y[m] == c] == c) for c in (0, 1)]))


def bootstrap_ci(y: np.ndarray, pred: np.ndarray, speakers: np.ndarray, seed: int = SEED,
                 n: int = BOOTSTRAP) -> list[float]:
    """95 % percentile interval of the UAR, resampling whole speakers with replacement."""
    rng = np.random.default_rng(seed)
    spk = np.unique(speakers)
    idx = {s: np.nonzero(speakers == s)[0] for s in spk}
    stats = []
    for _ in range(n):
        pick = np.concatenate([idx[s] for s in rng.choice(spk, len(spk), replace=True)])
        yy = y[pick]
        if len(set(yy[yy >= 0].tolist())) < 2:
            continue
        stats.append(uar(yy, pred[pick]))
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def _score(p: np.ndarray, y: np.ndarray) -> float:
    return uar(y[:, 0], (p[:, 0] > 0.5).astype(int)) + uar(y[:, 1], (p[:, 1] > 0.5).astype(int))


def select_l2(x: np.ndarray, y: np.ndarray, speakers: np.ndarray, cand: Candidate) -> float:
    """Pick the L2 strength by leave-one-speaker-out over the given (training) speakers only.

    Selection uses single-member networks (faster); the score is arousal UAR + tension UAR.
    """
    return _select(x, y, speakers, cand)[0]


def _select(x: np.ndarray, y: np.ndarray, speakers: np.ndarray, cand: Candidate
            ) -> tuple[float, float]:
    """:func:`select_l2`'s choice and, for it, the inner leave-one-speaker-out arousal UAR."""
    best, best_l2, best_arousal = -1.0, cand.l2_grid[0], 0.0
    for l2 in cand.l2_grid:
        cfg = NetConfig(cand.hidden, l2, seeds=1)
        p = np.zeros((len(x), 2))
        for s in np.unique(speakers):
            tr = speakers != s
            p[~tr] = fit(x[tr], y[tr], cfg, SEED).predict_proba(x[~tr])
        score = _score(p, y)
        log.debug("  %s l2=%g inner score %.4f", cand.name, l2, score)
        if score > best + 1e-9:
            best, best_l2 = score, l2
            best_arousal = uar(y[:, 0], (p[:, 0] > 0.5).astype(int))
    return best_l2, best_arousal


def choice_held_out(db: EmoDb) -> dict[str, Any]:
    """The training procedure's figure with the choice of candidate held out too.

    :func:`train` ships the candidate whose leave-one-speaker-out arousal UAR is the higher, and
    reports that UAR: the choice saw the held-out speakers. Here, for each held-out speaker the
    candidate is chosen on the other speakers only (their inner leave-one-speaker-out arousal UAR
    at the L2 :func:`select_l2` picks), and its ensemble then predicts the held-out speaker. Float
    models; about a minute.

    Returns:
        ``arousal_uar``, ``tension_uar`` (fractions) with their ``_ci95``, and ``chosen``: the
        candidate chosen with each speaker held out.
    """
    y = np.stack([db.arousal, db.tension], axis=1)
    xs = {c.name: db.features[:, columns(c.prosody_only)] for c in CANDIDATES}
    p = np.zeros((len(y), 2))
    chosen: dict[str, str] = {}
    for s in np.unique(db.speakers):
        tr = db.speakers != s
        ranked = []
        for c in CANDIDATES:
            l2, arousal = _select(xs[c.name][tr], y[tr], db.speakers[tr], c)
            ranked.append(((arousal, c.name == "a"), c, l2))  # ties go to the simpler model
        _, cand, l2 = max(ranked, key=lambda r: r[0])
        chosen[str(s)] = cand.name
        net = fit(xs[cand.name][tr], y[tr], NetConfig(cand.hidden, l2, seeds=cand.seeds), SEED)
        p[~tr] = net.predict_proba(xs[cand.name][~tr])
    out: dict[str, Any] = {"chosen": chosen}
    for j, target in enumerate(("arousal", "tension")):
        pred = (p[:, j] > 0.5).astype(int)
        out[f"{target}_uar"] = round(uar(y[:, j], pred), 4)
        out[f"{target}_uar_ci95"] = bootstrap_ci(y[:, j], pred, db.speakers)
    return out


def _int8_probs(net: Net, z_train: np.ndarray, z_test: np.ndarray,
                tmp: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Out-of-fold probabilities of the fold's int8 ONNX model (and int8 TFLite when possible)."""
    from edge.runtime import load_model

    f32, q8 = tmp / "f.onnx", tmp / "q.onnx"
    export.to_onnx(net, f32)
    export.quantize_onnx(f32, q8, z_train)
    onnx_p = load_model(q8, "onnx").run({export.INPUT: z_test})[export.OUTPUT]
    tfl_p = None
    if export.tensorflow_available():
        tfl = tmp / "q.tflite"
        export.to_tflite(net, tfl, z_train)
        model = load_model(tfl, "litert")
        tfl_p = np.concatenate([next(iter(model.run({export.INPUT: z_test[i:i + 1]}).values()))
                                for i in range(len(z_test))])
    return np.asarray(onnx_p), tfl_p


def evaluate_candidate(db: EmoDb, cand: Candidate, with_int8: bool = True) -> dict[str, Any]:
    """Nested leave-one-speaker-out evaluation of one candidate.

    Returns:
        UARs (float, int8 ONNX, int8 TFLite when TensorFlow is installed), CIs, the L2 chosen per
        fold and the largest float-versus-int8 probability difference seen on held-out speakers.
    """
    x = db.features[:, columns(cand.prosody_only)]
    y = np.stack([db.arousal, db.tension], axis=1)
    p_float = np.zeros((len(x), 2))
    p_onnx = np.zeros((len(x), 2))
    p_tfl = np.zeros((len(x), 2))
    have_tfl = with_int8 and export.tensorflow_available()
    chosen = {}
    with tempfile.TemporaryDirectory(prefix="miroir-affect-") as tmpdir:
        for s in np.unique(db.speakers):
            tr = db.speakers != s
            l2 = select_l2(x[tr], y[tr], db.speakers[tr], cand)
            chosen[str(s)] = l2
            net = fit(x[tr], y[tr], NetConfig(cand.hidden, l2, seeds=cand.seeds), SEED)
            p_float[~tr] = net.predict_proba(x[~tr])
            if with_int8:
                po, pt = _int8_probs(net, net.standardize(x[tr]), net.standardize(x[~tr]), Path(tmpdir))
                p_onnx[~tr] = po
                if pt is not None:
                    p_tfl[~tr] = pt
            log.info("candidate %s: speaker %s held out, l2=%g", cand.name, s, l2)
    out: dict[str, Any] = {"candidate": cand.name, "description": cand.description,
                           "features": int(x.shape[1]), "l2_per_fold": chosen}
    variants = [("", p_float)]
    if with_int8:
        variants.append(("_int8", p_onnx))
    if have_tfl:
        variants.append(("_int8_tflite", p_tfl))
    for suffix, p in variants:
        for j, target in enumerate(("arousal", "tension")):
            pred = (p[:, j] > 0.5).astype(int)
            labels = y[:, j]
            out[f"{target}_uar{suffix}"] = round(uar(labels, pred), 4)
            out[f"{target}_uar{suffix}_ci95"] = bootstrap_ci(labels, pred, db.speakers)
    if with_int8:
        out["max_abs_diff_int8_onnx"] = round(float(np.abs(p_onnx - p_float).max()), 4)
    if have_tfl:
        out["max_abs_diff_int8_tflite"] = round(float(np.abs(p_tfl - p_float).max()), 4)
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_final(db: EmoDb, cand: Candidate, out_dir: Path) -> dict[str, Any]:
    """Train the shipped model on all 8 speakers (L2 by LOSO over them) and write its files."""
    from edge.affect import FEATURE_NAMES, FEATURES_VERSION

    cols = columns(cand.prosody_only)
    x = db.features[:, cols]
    y = np.stack([db.arousal, db.tension], axis=1)
    l2 = select_l2(x, y, db.speakers, cand)
    net = fit(x, y, NetConfig(cand.hidden, l2, seeds=cand.seeds), SEED)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "comment": "Input of the affect models: window_features() columns, standardized and clipped.",
        "features_version": FEATURES_VERSION,
        "candidate": cand.name,
        "l2": l2,
        "feature_names": [FEATURE_NAMES[i] for i in cols],
        "mean": [float(v) for v in net.mean],
        "std": [float(v) for v in net.std],
        "clip": 5.0,
        "outputs": ["arousal", "tension"],
    }
    (out_dir / FILES["affect_features"]).write_text(json.dumps(spec, indent=1) + "\n")
    z = net.standardize(x)
    export.to_onnx(net, out_dir / FILES["affect_float"])
    export.quantize_onnx(out_dir / FILES["affect_float"], out_dir / FILES["affect_int8_onnx"], z)
    files = dict(FILES)
    if export.tensorflow_available():
        export.to_tflite(net, out_dir / FILES["affect_int8_tflite"], z)
    else:
        log.warning("TensorFlow is not installed: %s not rebuilt (pip install 'miroir[affect-build]')",
                    FILES["affect_int8_tflite"])
        files.pop("affect_int8_tflite")
    return {"l2": l2, "files": {name: {"file": f, "sha256": _sha256(out_dir / f),
                                       "bytes": (out_dir / f).stat().st_size}
                                for name, f in files.items()}}


def update_manifest(files: dict[str, dict[str, Any]]) -> None:
    """Write the committed affect files' checksums into ``models/manifest.json``."""
    from models.build import MANIFEST

    doc = json.loads(MANIFEST.read_text())
    for name, info in files.items():
        doc["models"][name] = {
            "file": info["file"], "sha256": info["sha256"], "bytes": info["bytes"],
            "licence": "Proprietary (Miroir); trained on EmoDB (CC0-1.0)",
            "card": "models/affect/MODEL_CARD.md",
            "source": {"kind": "committed", "path": f"models/affect/{info['file']}",
                       "rebuild": "miroir models train affect"},
        }
    MANIFEST.write_text(json.dumps(doc, indent=2) + "\n")


def train(out_dir: Path = OUT_DIR, data_dir: Path | None = None, write_manifest: bool = True,
          with_int8: bool = True) -> dict[str, Any]:
    """Evaluate both candidates, ship the better one, write its files and ``report.json``.

    Args:
        out_dir: where the model files and the report go (default ``models/affect``).
        data_dir: the EmoDB folder (default ``../shared/data/emodb``).
        write_manifest: record the new checksums in ``models/manifest.json``.
        with_int8: also quantize each fold's model (the int8 UARs).

    Returns:
        The report (also written to ``out_dir/report.json``).
    """
    from threadpoolctl import threadpool_limits

    from models.affect import data

    t0 = time.perf_counter()
    with threadpool_limits(1):  # one BLAS thread: the same sums in the same order, every run
        db = data.load(data_dir)
        results = {c.name: evaluate_candidate(db, c, with_int8) for c in CANDIDATES}
        ship = max(CANDIDATES, key=lambda c: (results[c.name]["arousal_uar"], c.name == "a"))
        final = export_final(db, ship, out_dir)
    if write_manifest:
        update_manifest(final["files"])
    a, s = results["a"], results[ship.name]
    report = {
        "arousal_uar": s["arousal_uar"],
        "arousal_uar_ci95": s["arousal_uar_ci95"],
        "tension_uar": s["tension_uar"],
        "tension_uar_ci95": s["tension_uar_ci95"],
        "arousal_uar_int8": s.get("arousal_uar_int8"),
        "arousal_uar_int8_tflite": s.get("arousal_uar_int8_tflite"),
        "tension_uar_int8": s.get("tension_uar_int8"),
        "baseline_arousal_uar": a["arousal_uar"],
        "baseline_tension_uar": a["tension_uar"],
        "external_bar_egemaps_lr_arousal_uar": 0.886,
        "shipped_candidate": ship.name,
        "candidates": results,
        "final": final,
        "clips": len(db.names),
        "speakers": sorted(set(db.speakers.tolist())),
        "train_seconds": round(time.perf_counter() - t0, 1),
        "protocol": "nested leave-one-speaker-out; UAR at threshold 0.5; 95 % CI by bootstrap over "
                    f"speakers ({BOOTSTRAP} resamples, seed {SEED})",
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=1, default=_jsonable) + "\n")
    return report


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    raise TypeError(type(obj))
