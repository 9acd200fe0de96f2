"""The affect model feeds the prospect-tense cue: real angry speech on the line raises it, calm
speech does not, and with affect off (the default) the cue never exists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.affect import AffectConfig, AffectModel, AffectStage
from edge.campaign import CampaignError, from_mapping
from edge.pipeline import Pipeline, load_vad_model
from edge.source import read_wav

EMODB = Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb" / "wav"
RATE_HZ = 16_000


def _prospect_call(letter: str, speaker: str = "16") -> np.ndarray:
    """The prospect picks up (a short first clip), the agent says a little, then the prospect
    (far) answers with ~40 s of one emotion's clips: a person at the far end (a live call)."""
    clips = sorted(EMODB.glob(f"{speaker}*{letter}*.wav"))
    assert len(clips) >= 4, letter
    gap = np.zeros(int(0.4 * RATE_HZ), dtype=np.float32)
    far = np.concatenate([x for c in (clips * 6)[:20] for x in (read_wav(c, notice=False).samples, gap)])
    hello = min((read_wav(c, notice=False).samples for c in sorted(EMODB.glob(f"{speaker}*N*.wav"))),
                key=len)
    agent = read_wav(sorted(EMODB.glob("03*N*.wav"))[0], notice=False).samples
    pause = np.zeros(RATE_HZ, dtype=np.float32)
    near = np.concatenate([np.zeros_like(hello), pause, agent, pause, np.zeros_like(far)])
    far = np.concatenate([hello, pause, np.zeros_like(agent), pause, far])
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal((2, len(far))) * 1e-4).astype(np.float32)
    return np.stack([near, far]) + noise


DISCLOSED = from_mapping({"affect": {"disclosed": True}})
"""A campaign whose call script tells the prospect about the affect model."""


def _cues(audio: np.ndarray, affect: bool) -> tuple[list[str], list[float]]:
    stage = None
    if affect:
        config = AffectConfig(enabled=True)
        stage = AffectStage(AffectModel(config.backend), config)
    pipe = Pipeline(load_vad_model(), affect=stage, campaign=DISCLOSED)
    cues, tension = [], []
    for i in range(0, audio.shape[1], 1024):
        for msg in pipe(audio[:, i:i + 1024]):
            if msg.kind == "event" and msg.body["name"] == "cue_on":
                cues.append(msg.body["cue"])
            if msg.kind == "metrics" and "prospect_tension" in msg.body:
                tension.append(msg.body["prospect_tension"])
    return cues, tension


@pytest.mark.parametrize("letter,tense", [("W", True), ("N", False)])
def test_prospect_tense_cue_follows_the_affect_model(letter: str, tense: bool) -> None:
    cues, tension = _cues(_prospect_call(letter), affect=True)
    assert len(tension) >= 10, "the affect model ran on the prospect's speech"
    print(f"{letter}: median tension {np.median(tension):.2f}, cues {cues}")
    assert ("prospect_tense" in cues) is tense


def test_no_affect_no_tension_and_no_tense_cue_by_default() -> None:
    cues, tension = _cues(_prospect_call("W"), affect=False)
    assert tension == [] and "prospect_tense" not in cues


def test_analyze_with_affect_raises_what_the_box_raises() -> None:
    """`miroir analyze --affect` runs the affect stage inside the pipeline, as a box does: the
    tense prospect's cue is in its cues and its call summary (it could never fire there)."""
    from edge.pipeline import analyze

    result = analyze(_prospect_call("W"), load_vad_model(), affect=AffectConfig(enabled=True))
    assert sum("prospect_tension" in m for m in result["metrics"]) >= 10
    assert "prospect_tense" in [c["cue"] for c in result["cues"]]
    assert [s["call_cue_prospect_tense_n"] for s in result["call_summaries"]] == [1]
    assert result["affect"]["enabled"] and result["affect"]["far"]["windows"]
    # the JSON's affect windows are the ones behind the box's gates: the same number of values
    assert len(result["affect"]["far"]["windows"]) >= sum("prospect_tension" in m
                                                           for m in result["metrics"])  # the last of a second
    # the agent's channel dead: the box evaluates nothing, nor does analyze (it read 11 windows)
    dead = _prospect_call("W")
    dead[0] = 0.0
    result = analyze(dead, load_vad_model(), affect=AffectConfig(enabled=True))
    assert result["affect"]["far"]["windows"] == []
    assert not [m for m in result["metrics"] if "prospect_tension" in m]


def test_no_affect_before_a_person_answers_nor_with_the_agent_channel_dead() -> None:
    """A voicemail greeting (real speech, no answer to the agent) feeds no affect model until a
    person is known to be there; and while the agent's channel is dead (a disconnected mic: the
    agent may be on the line unheard), no window is evaluated either."""
    clips = sorted(EMODB.glob("16*W*.wav"))
    greeting = np.concatenate([read_wav(c, notice=False).samples for c in clips[:8]])
    rng = np.random.default_rng(2)
    near = (rng.standard_normal(len(greeting)) * 1e-4).astype(np.float32)  # the agent listens
    config = AffectConfig(enabled=True)
    stage = AffectStage(AffectModel(config.backend), config)
    pipe = Pipeline(load_vad_model(), affect=stage, campaign=DISCLOSED)
    audio = np.stack([near, greeting])
    for i in range(0, audio.shape[1], 1024):
        pipe(audio[:, i:i + 1024])
    assert pipe.conversation.in_call and not pipe.conversation.live_call
    assert stage.model is not None and stage.model.invocations == 0
    # the tense prospect talks on past the voicemail window (a live call), the agent's channel
    # dead throughout
    call = _prospect_call("W")
    call = np.concatenate([call, call[:, -30 * RATE_HZ:]], axis=1)
    call[0] = 0.0
    stage = AffectStage(AffectModel(config.backend), config)
    pipe = Pipeline(load_vad_model(), affect=stage, campaign=DISCLOSED)
    for i in range(0, call.shape[1], 1024):
        pipe(call[:, i:i + 1024])
    assert pipe.conversation.live_call and stage.stats.skipped_agent_speaking > 0
    assert stage.model is not None and stage.model.invocations == 0


def test_the_affect_model_runs_only_where_the_campaign_discloses_it() -> None:
    """A box whose settings enable the affect model, at a seat whose campaign's script does not
    tell the prospect (the default): the model never runs and nothing of it is published (it ran,
    and published the prospect's tension, whatever the campaign said)."""
    config = AffectConfig(enabled=True)
    stage = AffectStage(AffectModel(config.backend), config)
    pipe = Pipeline(load_vad_model(), affect=stage, campaign=from_mapping({}))
    audio = _prospect_call("W")
    published = [k for i in range(0, audio.shape[1], 1024) for m in pipe(audio[:, i:i + 1024])
                 for k in m.body if k.startswith(("prospect_arousal", "prospect_tension"))]
    assert pipe.affect is None and published == []
    assert stage.model is not None and stage.model.invocations == 0
    with pytest.raises(CampaignError, match=r"affect\.disclosed: expected true or false"):
        from_mapping({"affect": {"disclosed": "yes"}})


def test_a_bad_campaign_file_does_not_bring_back_the_last_one_s_disclosure(tmp_path: Path) -> None:
    """A seat on a campaign that disclosed the affect model moves to one whose script does not
    (``disclosed = false``) with a typo elsewhere in the file, then the box restarts: it runs the
    last good campaign's cues, but not its disclosure, which says nothing of the calls it now
    makes. Before, the model ran on the prospect (48 windows of this call) and published their
    tension, with the status saying ``prospect_affect_state = on``; a running box that refused
    the file at a ``reload`` went on running the model too."""
    import json

    from edge.box import Box
    from edge.settings import EdgeSettings

    campaign = tmp_path / "campaign.toml"
    campaign.write_text("[affect]\ndisclosed = true\n[monologue]\non_s = 45.0\n")
    settings = EdgeSettings(site="site-a", box="box-a", broker_port=9, state_dir=tmp_path / "state",
                            affect_enabled=True, campaign_file=campaign)
    first = Box(settings, load_vad_model(), version="test")
    assert first.affect_state == "on"
    first.outbox.close()
    campaign.write_text("[affect]\ndisclosed = false\n[monologue]\non_s = 3.0\n")  # out of range
    box = Box(settings, load_vad_model(), version="test")
    status = box.status_fields()
    assert "monologue.on_s" in status["settings_error"]
    assert box.pipeline.campaign.monologue.on_s == 45.0  # the last good campaign's cues
    assert status["prospect_affect_state"] == "undisclosed" and box.pipeline.affect is None
    audio = _prospect_call("W")
    for i in range(0, audio.shape[1], 1024):
        box.submit(box.pipeline(audio[:, i:i + 1024]))
    published = [k for _, kind, p in box.outbox.pending(limit=100_000) if kind == "metrics"
                 for k in json.loads(p) if k in ("prospect_arousal", "prospect_tension")]
    box.outbox.close()
    assert published == []
    # the same edit refused by a ``reload`` of a running box: the model stops there
    campaign.write_text("[affect]\ndisclosed = true\n[monologue]\non_s = 45.0\n")
    running = Box(settings, load_vad_model(), version="test")
    assert running.affect_state == "on"
    campaign.write_text("[affect]\ndisclosed = false\n[monologue]\non_s = 3.0\n")
    assert not running.reload()
    status = running.status_fields()
    running.outbox.close()
    assert status["prospect_affect_state"] == "undisclosed" and running.pipeline.affect is None
