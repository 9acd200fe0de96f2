"""Silero VAD on both runtimes: the converted TFLite file (LiteRT, the box's default) gives the
published ONNX file's probabilities on real speech."""

import numpy as np
import pytest

from bench.vad import ami_auc, batched, headset_pair, per_channel, shipped
from edge.pipeline import VAD_MODELS, load_vad_model
from edge.settings import EdgeSettings
from models.build import manifest, model_path


@pytest.fixture(scope="module")
def models():
    return load_vad_model("litert"), load_vad_model("onnx")


def test_litert_probabilities_match_onnx_runtime_on_two_real_talkers(models):
    litert, onnx = models
    audio = headset_pair(seconds=30.0)
    ours, theirs = batched(litert, audio), batched(onnx, audio)
    assert ours.shape == theirs.shape == (2, 30 * 16000 // 512)
    assert theirs.max() > 0.9 and theirs.min() < 0.1  # real speech and real silence
    diff = float(np.abs(ours - theirs).max())
    print(f"largest difference over {ours.size} probabilities: {diff:.2e}")
    assert diff < 1e-4
    # one channel per call (another batch size) resizes the model and gives the same answer
    assert np.abs(per_channel(litert, audio[:, :16000 * 5]) - theirs[:, :156]).max() < 1e-4


def test_shipped_path_auc_on_ami_within_0005_of_the_reference(models):
    litert, onnx = models
    auc, reference = ami_auc(litert, shipped), ami_auc(onnx, per_channel)
    print(f"AMI frame ROC-AUC: shipped {auc:.4f}, reference {reference:.4f}")
    assert reference > 0.95
    assert abs(auc - reference) <= 0.005


def test_the_box_runs_litert_by_default_and_both_files_verify():
    assert EdgeSettings(site="s", box="b").model_backend == "litert"
    entries = manifest()
    for backend, name in VAD_MODELS.items():
        assert model_path(name).exists(), backend  # raises on a checksum mismatch
    assert entries["silero_vad_tflite"]["source"]["derived_from"] == "silero_vad"
    with pytest.raises(ValueError, match="litert or onnx"):
        load_vad_model("tflite")


def test_both_backends_give_the_same_call(models):
    """The whole pipeline on one minute of two real talkers: same segments, turns and metrics."""
    from edge.pipeline import analyze

    litert, onnx = models
    audio = headset_pair(seconds=60.0)
    ours, theirs = analyze(audio, litert), analyze(audio, onnx)
    assert len(theirs["vad"]["near"]["segments"]) > 5 and len(theirs["vad"]["far"]["segments"]) > 5
    assert ours["vad"]["near"]["segments"] == theirs["vad"]["near"]["segments"]
    assert ours["vad"]["far"]["segments"] == theirs["vad"]["far"]["segments"]
    assert ours["metrics"] == theirs["metrics"]
