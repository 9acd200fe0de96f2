"""Model commands beyond ``models build``: ``models train affect``, ``models evaluate affect``,
``models convert vad``, ``bench affect``.

Only the standard library at module level: the handlers import what they need.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from miroir.cli import CliError

EVAL_KEYS = ("arousal_uar", "arousal_uar_ci95", "tension_uar", "arousal_uar_int8", "baseline_arousal_uar")


def cmd_train_affect(args: argparse.Namespace) -> int:
    """Train the prospect affect model on EmoDB (both candidates, nested LOSO), export and quantize it."""
    from models.affect.train import OUT_DIR, train

    out = args.out or OUT_DIR
    out.mkdir(parents=True, exist_ok=True)  # a path that cannot be the folder fails now, not trained
    try:
        report = train(out_dir=out, data_dir=args.data, write_manifest=args.out is None)
    except (FileNotFoundError, RuntimeError) as exc:
        raise CliError(str(exc)) from None
    summary = {k: report[k] for k in (*EVAL_KEYS, "tension_uar_int8", "arousal_uar_int8_tflite",
                                      "shipped_candidate", "train_seconds")}
    summary["files"] = {k: v["sha256"] for k, v in report["final"]["files"].items()}
    json.dump(summary, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


def cmd_evaluate_affect(args: argparse.Namespace) -> int:
    """Print the affect model's speaker-independent UARs and check the committed model files."""
    from models.affect.evaluate import evaluate

    try:
        result: dict[str, Any] = evaluate(recompute=args.recompute, data_dir=args.data)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        json.dump(result, sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
        return 0
    lo, hi = result["arousal_uar_ci95"]
    print(f"arousal UAR {result['arousal_uar']:.3f} (95 % CI {lo:.3f}-{hi:.3f}), "
          f"int8 {result['arousal_uar_int8']:.3f}; tension UAR {result['tension_uar']:.3f}; "
          f"baseline (a) arousal {result['baseline_arousal_uar']:.3f}")
    for name, ok in result["files_ok"].items():
        print(f"{name}: {'ok' if ok else 'CHECKSUM MISMATCH'}")
    return 0


def cmd_convert_vad(args: argparse.Namespace) -> int:
    """Convert the pinned Silero VAD ONNX file to the committed TFLite file (needs TensorFlow)."""
    from models.build import ModelError
    from models.vad.convert import OUT, convert

    try:
        result = convert(out=args.out or OUT, write_manifest=args.out is None)
    except (ModelError, RuntimeError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(f"ok {result['file']} ({result['bytes']} bytes, SHA-256 {result['sha256']})")
    return 0


def cmd_bench_affect(args: argparse.Namespace) -> int:
    """Measure the affect model's inference time per window (int8 ONNX, int8 TFLite, float ONNX)."""
    from bench.affect import run
    from models.build import ModelError

    try:
        result = run(repeats=args.repeats)
    except ModelError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        json.dump(result, sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
    else:
        print(f"onnx int8 {result['ms_per_window_onnx']:.3f} ms/window, "
              f"tflite int8 {result['ms_per_window_tflite']:.3f} ms/window, "
              f"float onnx {result['ms_per_window_float_onnx']:.3f} ms/window, "
              f"features {result['ms_per_window_features']:.1f} ms/window")
    return 0


def register_cli(groups: dict[str, argparse._SubParsersAction]) -> None:
    """Add ``models train affect``, ``models evaluate affect``, ``models convert vad`` and
    ``bench affect``."""
    from miroir.cli import positive_int

    models = groups["models"]
    train = models.add_parser("train", help="train a model from the shared data sets",
                              description="Train a model; it writes the committed files and manifest.")
    train_sub = train.add_subparsers(dest="train_model", metavar="MODEL", required=True)
    p = train_sub.add_parser("affect", help="the prospect affect model (EmoDB; 25 s without TensorFlow "
                                            "on a 2-core EPYC, 2026-11-29)",
                             description=cmd_train_affect.__doc__)
    p.add_argument("--out", type=Path, default=None,
                   help="write the files here instead of models/affect (the manifest is then left as is)")
    p.add_argument("--data", type=Path, default=None,
                   help="the EmoDB folder (default ../shared/data/emodb)")
    p.set_defaults(func=cmd_train_affect)

    ev = models.add_parser("evaluate", help="report a model's evaluation",
                           description="Print a model's speaker-independent evaluation.")
    ev_sub = ev.add_subparsers(dest="evaluate_model", metavar="MODEL", required=True)
    p = ev_sub.add_parser("affect", help="leave-one-speaker-out UARs of the affect model",
                          description=cmd_evaluate_affect.__doc__)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--recompute", action="store_true",
                   help="rerun the nested leave-one-speaker-out evaluation (62 s on a 2-core "
                        "EPYC, 2026-11-29) instead of "
                        "reading the training report")
    p.add_argument("--data", type=Path, default=None,
                   help="the EmoDB folder (default ../shared/data/emodb)")
    p.set_defaults(func=cmd_evaluate_affect)

    conv = models.add_parser("convert", help="convert a pinned model to another runtime's format",
                             description="Convert a pinned model; it writes the committed file and manifest.")
    conv_sub = conv.add_subparsers(dest="convert_model", metavar="MODEL", required=True)
    p = conv_sub.add_parser("vad", help="Silero VAD to TFLite for LiteRT (weights unchanged)",
                            description=cmd_convert_vad.__doc__)
    p.add_argument("--out", type=Path, default=None,
                   help="write the file here instead of models/vad (the manifest is then left as is)")
    p.set_defaults(func=cmd_convert_vad)

    p = groups["bench"].add_parser("affect", help="affect model inference time per window",
                                   description=cmd_bench_affect.__doc__)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--repeats", type=positive_int, default=2000,
                   help="inferences per runtime (default 2000)")
    p.set_defaults(func=cmd_bench_affect)
