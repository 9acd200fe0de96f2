"""Accuracy of the edge pipeline on real recordings with ground truth, as one JSON object.

``python -m bench.accuracy --json`` (or ``miroir bench accuracy --json``): VAD ROC-AUC on AMI for
the shipped path, fp32 Silero and WebRTC; pitch, voice quality and speaking rate against Praat and
the EmoDB syllable labels; conversation metrics on calls built from EmoDB utterances.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


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
    )

    out: dict[str, Any] = {}
    out.update(vad_figures())
    out.update(prosody_figures(step=prosody_step))
    out.update(raised_voice_figures(step=prosody_step))
    out.update(rate_cv_figures(step=prosody_step))
    # the rate_r: its constants were set on these clips, so the held-out figure
    out["rate_r_shipped"], out["rate_r"] = out["rate_r"], out["rate_r_cv"]
    out.update(pause_figures(step=prosody_step))
    out.update(hesitation_figures(step=prosody_step))
    out.update(conversation_figures())
    out.update(noisy_line_figures())
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the figures (JSON with ``--json``, else one per line)."""
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="python -m bench.accuracy", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--step", type=int, default=1, help="use every n-th EmoDB clip")
    args = parser.parse_args(argv)
    figures = run(args.step)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
