"""Accuracy of the edge pipeline on real recordings with ground truth, as one JSON object.

``python -m bench.accuracy --json`` (or ``miroir bench accuracy --json``): VAD ROC-AUC on AMI for
the shipped path, fp32 Silero and WebRTC; pitch, voice quality and speaking rate against Praat and
the EmoDB syllable labels; conversation metrics on calls built from EmoDB utterances.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def vad_figures() -> dict[str, float]:
    """AMI frame-level ROC-AUC: the shipped path (LiteRT, both channels in one batch), the fp32
    reference (the published ONNX file on ONNX Runtime, one channel per call), WebRTC (test-only:
    :func:`bench.vad.webrtc_figures`)."""
    from bench.vad import ami_auc, per_channel, shipped, webrtc_figures
    from edge.pipeline import load_vad_model

    return {"vad_auc": round(ami_auc(load_vad_model(), shipped), 4),
            "vad_auc_reference": round(ami_auc(load_vad_model("onnx"), per_channel), 4),
            **webrtc_figures()}


def run(prosody_step: int = 1) -> dict[str, Any]:
    """Every accuracy figure; ``prosody_step`` > 1 uses every n-th EmoDB clip (faster)."""
    from bench.accuracy_conversation import conversation_figures, noisy_line_figures
    from bench.accuracy_prosody import (
        hesitation_figures,
        pause_figures,
        prosody_figures,
        raised_voice_figures,
        rate_cv_figures,
        tempo_window_figures,
    )

    parts: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("VAD on AMI", vad_figures),
        ("prosody on EmoDB", lambda: prosody_figures(step=prosody_step)),
        ("raised voices", lambda: raised_voice_figures(step=prosody_step)),
        ("speaking rate, cross-validated", lambda: rate_cv_figures(step=prosody_step)),
        ("tempo, 1.3x against normal speech", tempo_window_figures),
        ("pauses", lambda: pause_figures(step=prosody_step)),
        ("hesitations", lambda: hesitation_figures(step=prosody_step)),
        ("conversation", conversation_figures),
        ("noisy line", noisy_line_figures),
    ]
    out: dict[str, Any] = {}
    for done, (name, figures) in enumerate(parts, start=1):
        start = time.monotonic()
        out.update(figures())
        if "rate_r_cv" in out and "rate_r_shipped" not in out:
            # the rate_r: its constants were set on these clips, so the held-out figure
            out["rate_r_shipped"], out["rate_r"] = out["rate_r"], out["rate_r_cv"]
        log.info("bench accuracy: part %d of %d done: %s (%.0f s)", done, len(parts), name,
                 time.monotonic() - start)
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the figures (JSON with ``--json``, else one per line)."""
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="python -m bench.accuracy", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--step", type=int, default=1, help="use every n-th EmoDB clip")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:  # `python -m bench.accuracy`: how far it has got
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    figures = run(args.step)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
