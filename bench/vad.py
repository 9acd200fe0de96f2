"""Silero VAD variants side by side: accuracy on AMI and cost on two-party headset audio.

Variants: the reference (the published fp32 ONNX file on ONNX Runtime, one inference per channel),
both channels in one batch, the batch with the energy pre-gate, an int8 dynamically quantized copy
of the graph made here in a temporary folder, and the converted TFLite file on LiteRT (per channel,
batched, and batched with the pre-gate: the shipped path), with its largest difference from ONNX
Runtime's probabilities.
``python -m bench.vad`` prints JSON.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import AMI, HEADSETS, ami_turns, frame_labels, median_seconds, roc_auc
from edge.frames import FRAME_SAMPLES, RATE_HZ, Frame
from edge.pipeline import VAD_GATE_ABOVE_FLOOR_DB, VAD_GATE_DBFS, VAD_GATE_MAX_PROB
from edge.runtime import LiteRtModel, Model, OnnxModel
from edge.source import read_wav
from edge.vad import SileroVad

log = logging.getLogger(__name__)


def frames_of(audio: np.ndarray) -> list[Frame]:
    """Cut a (channels, n) array into Silero frames."""
    n = audio.shape[1] // FRAME_SAMPLES
    return [Frame(np.ascontiguousarray(audio[:, i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]),
                  RATE_HZ, i * FRAME_SAMPLES / RATE_HZ, i) for i in range(n)]


def per_channel(model: Model, audio: np.ndarray) -> np.ndarray:
    """Reference: one recurrent VAD per channel, one inference per channel per frame."""
    out = []
    for row in audio:
        vad = SileroVad(model, channels=1)
        out.append([vad(f)[0] for f in frames_of(row[None, :])])
    return np.array(out, dtype=np.float32)


def batched(model: Model, audio: np.ndarray, gate_dbfs: float | None = None,
            gate_max_prob: float = VAD_GATE_MAX_PROB, above_floor_db: float | None = None) -> np.ndarray:
    """All channels in one batch per frame, optionally with the energy pre-gate."""
    vad = SileroVad(model, channels=audio.shape[0], gate_dbfs=gate_dbfs,
                    gate_max_prob=gate_max_prob, gate_above_floor_db=above_floor_db)
    return np.array([vad(f) for f in frames_of(audio)], dtype=np.float32).T


def shipped(model: Model, audio: np.ndarray) -> np.ndarray:
    """The path the box runs with its model (LiteRT by default): both channels in one batch, with
    the pipeline's pre-gate (:data:`edge.pipeline.VAD_GATE_DBFS`); on ONNX Runtime, the
    ``batch2_gate`` variant."""
    return batched(model, audio, VAD_GATE_DBFS, VAD_GATE_MAX_PROB, VAD_GATE_ABOVE_FLOOR_DB)


def ami_auc(model: Model, run: Callable[[Model, np.ndarray], np.ndarray]) -> float:
    """Frame-level ROC-AUC on the 12 AMI excerpts against the union of speaker turns.

    Each excerpt is scored as the first channel of a two-channel stream whose second channel is the
    next excerpt, so a batched path really runs a batch of two.
    """
    turns = ami_turns()
    labels, scores = [], []
    wavs = sorted(AMI.glob("*.wav"))
    audio = [read_wav(w, notice=False).samples for w in wavs]
    for k, wav in enumerate(wavs):
        x, other = audio[k], audio[(k + 1) % len(audio)]
        pair = np.zeros((2, len(x)), dtype=np.float32)
        pair[0], pair[1, :min(len(x), len(other))] = x, other[:len(x)]
        prob = run(model, pair)[0]
        labels.append(frame_labels(turns[wav.stem], len(prob)))
        scores.append(prob)
    return roc_auc(np.concatenate(labels), np.concatenate(scores))


WEBRTC_AVERAGE_MS = (96, 160)
"""The windows :func:`webrtc_figures` also scores WebRTC's votes averaged over (3 and 5 frames)."""


def webrtc_votes(mode: int = 3) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """WebRTC VAD (test-only reference) on the AMI frames: per excerpt, the frame labels and each
    32 ms frame's share of its three 10 ms sub-frames voted speech."""
    import webrtcvad

    turns = ami_turns()
    vad = webrtcvad.Vad(mode)
    labels, scores = [], []
    for wav in sorted(AMI.glob("*.wav")):
        pcm = (read_wav(wav, notice=False).samples * 32767).astype("<i2")
        n = len(pcm) // FRAME_SAMPLES
        # WebRTC takes 10, 20 or 30 ms: score each 32 ms frame by its 10 ms sub-frames' votes.
        votes = np.zeros(n)
        for i in range(n):
            chunk = pcm[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]
            votes[i] = sum(vad.is_speech(chunk[j:j + 160].tobytes(), RATE_HZ)
                           for j in range(0, 480, 160)) / 3
        labels.append(frame_labels(turns[wav.stem], n))
        scores.append(votes)
    return labels, scores


def _averaged(votes: np.ndarray, frames: int) -> np.ndarray:
    """``votes`` averaged over ``frames`` frames centred on each (fewer at the excerpt's ends)."""
    kernel = np.ones(frames)
    return np.convolve(votes, kernel, "same") / np.convolve(np.ones(len(votes)), kernel, "same")


def webrtc_auc(mode: int = 3) -> float:
    """Frame-level ROC-AUC of WebRTC VAD (test-only reference) on the same AMI frames."""
    labels, scores = webrtc_votes(mode)
    return roc_auc(np.concatenate(labels), np.concatenate(scores))


def webrtc_figures() -> dict[str, float]:
    """WebRTC's AMI AUC: mode 3's votes as they are (``vad_auc_webrtc``) and averaged over each of
    :data:`WEBRTC_AVERAGE_MS` (``vad_auc_webrtc_96ms``, ...), and modes 0 to 2 unsmoothed
    (``vad_auc_webrtc_mode0``, ...)."""
    frame_ms = FRAME_SAMPLES * 1000 // RATE_HZ
    labels, scores = webrtc_votes(3)
    y = np.concatenate(labels)
    out = {"vad_auc_webrtc": round(roc_auc(y, np.concatenate(scores)), 4)}
    for ms in WEBRTC_AVERAGE_MS:
        out[f"vad_auc_webrtc_{ms}ms"] = round(
            roc_auc(y, np.concatenate([_averaged(v, ms // frame_ms) for v in scores])), 4)
    for mode in (0, 1, 2):
        out[f"vad_auc_webrtc_mode{mode}"] = round(webrtc_auc(mode), 4)
    return out


def quantized_model(model_path: Path, out_dir: Path) -> Path:
    """An int8 dynamically quantized copy of the Silero graph (for measurement only)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = out_dir / "silero_vad.int8.onnx"
    quantize_dynamic(str(model_path), str(out), weight_type=QuantType.QInt8)
    return out


def headset_pair(seconds: float = 60.0) -> np.ndarray:
    """Two AMI headsets (two real talkers) as near and far, ``seconds`` long."""
    near = read_wav(HEADSETS / "source0.wav", notice=False).samples
    far = read_wav(HEADSETS / "source1.wav", notice=False).samples
    n = min(len(near), len(far), int(seconds * RATE_HZ))
    return np.stack([near[:n], far[:n]])


def run(repeats: int = 5) -> dict[str, Any]:
    """Measure every variant; RTFs are medians over ``repeats`` runs on 60 s of two channels."""
    from models.build import model_path

    path = model_path("silero_vad")
    fp32 = OnnxModel(path)
    litert = LiteRtModel(model_path("silero_vad_tflite"))
    audio = headset_pair()
    audio_s = audio.shape[1] / RATE_HZ
    result: dict[str, Any] = {"audio_s": audio_s, "repeats": repeats}
    variants: dict[str, tuple[Model, Callable[[Model, np.ndarray], np.ndarray]]] = {
        "reference_per_channel": (fp32, per_channel),
        "batch2": (fp32, batched),
        "batch2_gate": (fp32, shipped),
        "litert_per_channel": (litert, per_channel),
        "litert_batch2": (litert, batched),
        "litert_batch2_gate": (litert, shipped),
    }
    result["litert_max_abs_diff"] = float(np.abs(batched(litert, audio) - batched(fp32, audio)).max())
    with tempfile.TemporaryDirectory() as tmp:
        try:
            variants["int8_dynamic_batch2"] = (OnnxModel(quantized_model(path, Path(tmp))),
                                               batched)
        except Exception as exc:  # quantization tooling may refuse this graph: report it
            result["int8_dynamic_error"] = str(exc)[:200]
        for done, (name, (model, fn)) in enumerate(variants.items(), start=1):
            rtf = median_seconds(partial(fn, model, audio), repeats) / audio_s
            result[name] = {"rtf_both_channels": round(rtf, 5), "ami_auc": round(ami_auc(model, fn), 4)}
            log.info("bench vad: variant %d of %d done: %s (RTF %.5f, AMI AUC %.4f)", done,
                     len(variants), name, rtf, result[name]["ami_auc"])
    ref = result["reference_per_channel"]["rtf_both_channels"]
    for name in variants:
        result[name]["ratio_vs_reference"] = round(result[name]["rtf_both_channels"] / ref, 3)
    result["webrtc_ami_auc"] = round(webrtc_auc(), 4)
    return result


if __name__ == "__main__":  # the options of `miroir bench vad` (--help lists them)
    from miroir.cli import main

    raise SystemExit(main(["bench", "vad", *sys.argv[1:]]))
