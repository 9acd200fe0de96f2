"""The affect stage on the box: the agent's voice never reaches the model; off unless enabled.

Real speech (EmoDB clips, two different speakers for agent and prospect), the real Silero VAD
through the real pipeline, and the committed int8 model through ONNX Runtime and LiteRT.
"""

from __future__ import annotations

import shutil
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.affect import AffectConfig, AffectModel, AffectStage, analysis_section
from edge.frames import FRAME_SAMPLES, RATE_HZ, Framer
from edge.pipeline import analyze, load_vad_model
from miroir import wire

EMODB = Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb" / "wav"
RATE = 16000
ON = AffectConfig(enabled=True)


def _speaking_flags(segments: list[list[float]], n_frames: int, frame_s: float) -> np.ndarray:
    """Per-frame speech flags (frame centre inside a segment) from ``[[start_s, end_s], ...]``."""
    centres = (np.arange(n_frames) + 0.5) * frame_s
    flags = np.zeros(n_frames, dtype=bool)
    for start, end in segments:
        flags |= (centres >= start) & (centres < end)
    return flags


def affect_for_analysis(audio: np.ndarray, segments: dict[str, list[list[float]]],
                        config: AffectConfig | None = None,
                        model: AffectModel | None = None) -> dict[str, Any]:
    """Prospect affect of a whole two-channel recording, its stage driven by given VAD segments.

    Args:
        audio: (2, n) float32 at 16 kHz, near (agent) first.
        segments: the VAD's speech segments per channel, ``{"near": [[s, e], ...], "far": [...]}``.
        config: affect settings; nothing runs (and no model loads) unless ``config.enabled``.
        model: a loaded model (default: the manifest's model for ``config.backend``).

    Returns:
        ``{"enabled": bool, "far": {"windows": [...], "summary": {...}}, "skipped": {...}}``.
    """
    config = config or AffectConfig()
    if not config.enabled:
        return {"enabled": False}
    model = model or AffectModel(config.backend)
    stage = AffectStage(model, config)
    framer = Framer()
    frame_s = FRAME_SAMPLES / RATE_HZ
    n_frames = audio.shape[1] // FRAME_SAMPLES
    near = _speaking_flags(segments.get("near", []), n_frames, frame_s)
    far = _speaking_flags(segments.get("far", []), n_frames, frame_s)
    windows = []
    i = 0
    for start in range(0, audio.shape[1], RATE_HZ):  # a second at a time: no copy of it all
        for frame in framer(np.asarray(audio[:, start:start + RATE_HZ], dtype=np.float32)):
            w = stage(frame, bool(near[i]), bool(far[i]))
            i += 1
            if w is not None:
                windows.append(w)
    last = stage.finish()
    if last is not None:
        windows.append(last)
    return analysis_section(windows, stage)


def _clip(name: str) -> np.ndarray:
    with wave.open(str(EMODB / f"{name}.wav")) as wf:
        return np.frombuffer(wf.readframes(wf.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


def _speech(names: list[str]) -> np.ndarray:
    """Clips joined with 0.3 s gaps: real, continuous-ish speech of one person."""
    gap = np.zeros(int(0.3 * RATE), dtype=np.float32)
    return np.concatenate([np.concatenate([_clip(n), gap]) for n in names])


AGENT = ["03a01Wa", "03a02Fc", "03a04Ta", "03b01Lb", "03a05Aa"]  # speaker 03 (male)
PROSPECT = ["08a01Wa", "08a02Ac", "08b01Fd", "08a04Tb"]  # speaker 08 (female)


@pytest.fixture(scope="module")
def vad():
    return load_vad_model()


@pytest.fixture(scope="module")
def model():
    return AffectModel("onnx")


def _run(audio: np.ndarray, vad, model: AffectModel, config: AffectConfig = ON) -> dict:
    segments = {c: analyze(audio, vad)["vad"][c]["segments"] for c in ("near", "far")}
    before = model.invocations
    out = affect_for_analysis(audio, segments, config, model)
    out["invocations"] = model.invocations - before
    out["segments"] = segments
    return out


def test_agent_only_call_never_invokes_the_model(vad, model) -> None:
    agent = _speech(AGENT)
    noise = np.random.default_rng(0).normal(0.0, 10 ** (-65 / 20), agent.shape).astype(np.float32)
    out = _run(np.stack([agent, noise]), vad, model)
    assert out["segments"]["near"], "the agent's speech must be detected (else the test proves nothing)"
    assert out["invocations"] == 0
    assert out["far"]["windows"] == []
    # the same speech on the far channel is the prospect's, and is analysed
    swapped = _run(np.stack([noise, agent]), vad, model)
    assert swapped["invocations"] >= 5
    assert len(swapped["far"]["windows"]) == swapped["invocations"]


@pytest.mark.parametrize("delay_ms", [0, 60])
def test_agent_leaked_at_minus_20_db_never_invokes_the_model(vad, model, delay_ms: int) -> None:
    agent = _speech(AGENT)
    d = int(delay_ms * RATE / 1000)
    leak = np.concatenate([np.zeros(d, dtype=np.float32), agent[:len(agent) - d]]) * 10 ** (-20 / 20)
    out = _run(np.stack([agent, leak.astype(np.float32)]), vad, model)
    assert out["segments"]["far"], "the leak must reach the far VAD (else the test proves nothing)"
    assert out["invocations"] == 0
    assert out["far"]["windows"] == []


def test_windows_fall_in_prospect_turns_only(vad, model) -> None:
    """Agent turn (with sidetone on the far channel), then the prospect's turn, then the agent again."""
    agent, prospect = _speech(AGENT[:3]), _speech(PROSPECT)
    n_a, n_p = len(agent), len(prospect)
    near = np.concatenate([agent, np.zeros(n_p, np.float32), agent])
    far = np.concatenate([agent * 0.1, prospect, agent * 0.1]).astype(np.float32)
    out = _run(np.stack([near, far]), vad, model)
    windows = out["far"]["windows"]
    assert out["invocations"] == len(windows) >= 3
    turn_start, turn_end = n_a / RATE, (n_a + n_p) / RATE
    for w in windows:
        assert turn_start - 0.35 <= w["start_s"] and w["end_s"] <= turn_end + 0.35, w
        assert 0.0 <= w["arousal"] <= 1.0 and 0.0 <= w["tension"] <= 1.0
    assert out["skipped"]["agent_speaking"] + out["skipped"]["echo"] >= 2
    summary = out["far"]["summary"]
    assert summary["windows"] == len(windows) and 0.0 <= summary["tension_mean"] <= 1.0


def test_one_second_of_prospect_speech_yields_a_window(vad, model) -> None:
    clip = _clip("16a01Wb")
    voiced = clip[np.nonzero(np.abs(clip) > 0.02)[0][0]:][: int(1.2 * RATE)]
    silence = np.zeros(int(0.4 * RATE), np.float32)
    far = np.concatenate([silence, voiced, silence])
    out = _run(np.stack([np.zeros_like(far), far]), vad, model)
    speech_s = sum(e - s for s, e in out["segments"]["far"])
    assert speech_s >= 1.0
    assert len(out["far"]["windows"]) >= 1


def test_litert_backend_gives_the_same_windows(vad, model) -> None:
    prospect = _speech(PROSPECT[:2])
    audio = np.stack([np.zeros_like(prospect), prospect])
    onnx = _run(audio, vad, model)["far"]["windows"]
    litert = AffectConfig(enabled=True, backend="litert")
    tfl = _run(audio, vad, AffectModel("litert"), litert)["far"]["windows"]
    assert len(onnx) == len(tfl) >= 2
    for a, b in zip(onnx, tfl, strict=True):
        assert (a["start_s"], a["end_s"]) == (b["start_s"], b["end_s"])
        assert abs(a["arousal"] - b["arousal"]) <= 0.05 and abs(a["tension"] - b["tension"]) <= 0.05


def test_off_unless_the_campaign_enables_it(vad) -> None:
    assert AffectConfig().enabled is False
    prospect = _speech(PROSPECT[:2])
    audio = np.stack([np.zeros_like(prospect), prospect])
    segments = {c: analyze(audio, vad)["vad"][c]["segments"] for c in ("near", "far")}
    assert segments["far"]
    assert affect_for_analysis(audio, segments) == {"enabled": False}
    stage = AffectStage(None)  # disabled: no model needed, nothing computed
    from edge.frames import Framer

    assert all(stage(f, False, True) is None for f in Framer()(audio))
    with pytest.raises(ValueError, match="enabled"):
        AffectStage(None, ON)


def test_no_agent_affect_field_in_the_wire_schema() -> None:
    words = ("affect", "arousal", "tension", "emotion", "valence", "stress", "mood", "anger")
    for kind, fields in wire.ALLOWED_FIELDS.items():
        for name in fields:
            if any(w in name.lower() for w in words):
                assert name.startswith(("prospect_", "far_")), f"{kind}.{name} is not the prospect's"
                assert "agent" not in name and "near" not in name, f"{kind}.{name}"


def test_a_tampered_model_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from models import build

    doc = json.loads(build.MANIFEST.read_text())
    src = build.model_path("affect_int8_onnx")
    bad = tmp_path / "models" / "affect" / src.name
    bad.parent.mkdir(parents=True)
    shutil.copy(src, bad)
    with bad.open("r+b") as fh:  # flip one byte
        fh.seek(100)
        b = fh.read(1)
        fh.seek(100)
        fh.write(bytes([b[0] ^ 1]))
    doc["models"]["affect_int8_onnx"]["source"]["path"] = str(bad)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(doc))
    monkeypatch.setattr(build, "MANIFEST", manifest)
    with pytest.raises(build.ModelError, match="refusing it"):
        AffectModel("onnx")
