"""Posture cues on calls built from real speech with injected events (edge.signals via the pipeline)."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from edge.campaign import CampaignConfig, from_mapping
from edge.pipeline import Message, Pipeline, analyze, cue_episodes, load_vad_model
from edge.signals import CUES
from miroir import wire
from tests._fixtures_signals import Builder, Call, cue_calls, match_cues, trim  # noqa: F401  (session fixture)

DELAY_S = 3.0


@pytest.fixture(scope="module")
def model():
    return load_vad_model()


@pytest.fixture(scope="module")
def results(cue_calls, model):  # noqa: F811
    return {name: analyze(call.audio, model) for name, call in cue_calls.items()}


def _report(call: Call, result: dict) -> tuple[dict[int, float], float]:
    cues = [c for c in result["cues"] if c["cue"] != "take_break"]
    delays, true_cues = match_cues(call.truth, cues, DELAY_S)
    precision = true_cues / len(cues) if cues else 1.0
    for i, t in enumerate(call.truth):
        print(f"{t.cue:15s} onset {t.onset_s:7.2f} s  delay {delays.get(i, float('nan')):5.2f} s")
    print(f"cues raised: {len(cues)}, precision {precision:.3f}")
    return delays, precision


def test_injected_events_cued_within_3s_precision(cue_calls, results):  # noqa: F811
    """Monologue, 3 agent interruptions and a 3 s response gap: each cued within 3 s, the 1.3x tempo
    stretch within a rate window plus min_on_s (4 s); precision >= 0.9."""
    call, result = cue_calls["clean"], results["clean"]
    delays, precision = _report(call, result)
    fast = CampaignConfig().too_fast
    for i, t in enumerate(call.truth):
        # 3 s is not met for the tempo stretch across calls (docs/cues.md, "Known gap"; this call
        # is cued in 2.2 s, 10 of the benchmark's 16 tuning calls and 6 of its 16 held-out ones
        # are); what its design allows is a full rate window of fast speech, held min_on_s (the
        # agent's prosody is caught up at every window: no batch waits)
        limit = fast.window_s + fast.min_on_s if t.cue == "too_fast" else DELAY_S
        assert i in delays, f"{t.cue} at {t.onset_s:.1f} s not cued"
        assert -1.0 <= delays[i] <= limit, f"{t.cue} cued {delays[i]:.2f} s after onset"
    assert sum(t.cue == "talking_over" for t in call.truth) == 3
    assert precision >= 0.9


def test_steady_call_within_budget_no_flapping(cue_calls, results):  # noqa: F811
    """Ten minutes of normal turn taking: no more cues than the hourly budget allows pro rata."""
    call, result = cue_calls["steady"], results["steady"]
    minutes = call.audio.shape[1] / 16000 / 60
    budget = CampaignConfig().alerts.budget_per_hour * minutes / 60
    cues = [c["cue"] for c in result["cues"]]
    print(f"steady call {minutes:.1f} min: {len(cues)} cue(s) {cues}, budget {budget:.1f}")
    assert len(cues) <= budget
    assert all(cues.count(c) <= 1 for c in cues)  # no cue raised twice: no flapping


def test_cue_events_and_call_summary_respect_the_wire(results):
    """Every message validates against the allow-list; call_end carries cue counts and rate stats."""
    events = results["clean"]["events"]
    on = [e for e in events if e["name"] == "cue_on"]
    off = [e for e in events if e["name"] == "cue_off"]
    episodes = cue_episodes(events)  # a second cue_on of an open cue escalates its severity
    assert episodes and len(episodes) == len(off) and all(e["end_s"] is not None for e in episodes)
    assert all(e["cue"] in CUES and CUES[e["cue"]].fr and CUES[e["cue"]].en for e in on)
    header = {"v": wire.SCHEMA_VERSION, "site": "s1", "box": "b1", "ts": 1.0}
    for seq, e in enumerate(events, 1):
        wire.validate("event", {**header, "seq": seq, **e})
    for seq, m in enumerate(results["clean"]["metrics"], 1):
        wire.validate("metrics", {**header, "seq": seq, **m})
        assert not any("emotion" in k for k in m)
    (end,) = [e for e in events if e["name"] == "call_end"]
    assert end["call_cues"] == len(episodes)
    assert end["call_cue_talking_over_n"] == 3 and end["call_cue_monologue_n"] == 1
    assert end["call_cue_monologue_s"] > 10
    assert 2.0 < end["call_rate_syl_s_median"] < 9.0 and end["call_f0_hz_median"] > 100
    assert end["call_rate_syl_s_p10"] <= end["call_rate_syl_s_median"] <= end["call_rate_syl_s_p90"]
    assert end["call_interruptions_agent"] == 3 and end["call_monologue_s_longest"] >= 44


def _run(pipe: Pipeline, audio: np.ndarray, block: int = 16000,
         private: tuple[float, float] | None = None,
         at: dict[float, str] | None = None) -> list[Message]:
    """Every message of ``audio`` fed ``block`` samples at a time: private mode on and off at the
    ``private`` times, and the call states ``at`` (seconds -> state) set on the way."""
    due = sorted((at or {}).items())
    out: list[Message] = []
    for i in range(0, audio.shape[1], block):
        t = i / 16000
        while due and due[0][0] <= t:
            pipe.call_state(due.pop(0)[1])
        if private is not None and t == private[0]:
            out += pipe.set_private(True)
        if private is not None and t == private[1]:
            out += pipe.set_private(False)
        out += pipe(audio[:, i:i + block])
    return out + pipe.finish()


def test_no_metric_of_a_private_stretch_leaves_the_pipeline(cue_calls, model):  # noqa: F811
    """Two calls that differ only inside the private stretch give identical output, which holds
    nothing timed inside it; the switch itself is the only thing said, at once."""
    audio = cue_calls["clean"].audio[:, : 16000 * 200]
    other = audio.copy()
    a, b = 60, 130  # the first interruption falls inside
    other[:, a * 16000:b * 16000] = cue_calls["steady"].audio[:, a * 16000:b * 16000]
    outs = [_run(Pipeline(model), x, private=(a, b)) for x in (audio, other)]
    assert [(m.kind, m.body) for m in outs[0]] == [(m.kind, m.body) for m in outs[1]]
    msgs = outs[0]
    names = [m.body.get("name") for m in msgs]
    assert names.count("private_on") == 1 and names.count("private_off") == 1
    i_on, i_off = names.index("private_on"), names.index("private_off")
    assert i_off == i_on + 1  # nothing at all between the two switches
    for m in msgs:
        t = m.body.get("t_start", m.body.get("t_audio_s"))
        if m.body.get("name") in ("private_on", "private_off"):
            continue
        assert not a < t < b, f"{m.kind} {m.body.get('name')} at {t} s is inside the private stretch"
    after = [m.body for m in msgs[i_off:] if m.kind == "metrics"]
    assert after and after[0]["t_start"] >= b
    # the call interrupted by the private stretch is gone: nothing of it carries over
    assert after[0]["in_call"] is False and after[0]["monologue_s_longest"] == 0.0
    assert "latency_agent_ms_last" not in after[0] and after[0]["agent_speech_ratio_60s"] <= 1.0
    # a pipeline that never saw the private stretch's call produces no call_end for it
    ends = [m.body for m in msgs if m.body.get("name") == "call_end"]
    assert all(e["t_audio_s"] <= a or e["call_duration_s"] <= e["t_audio_s"] - b + 1 for e in ends)


def _write(path: Path, x: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(16000)
        wf.writeframes((np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def test_analyze_json_shows_cues_fatigue_and_summary(cue_calls, tmp_path):  # noqa: F811
    """`miroir analyze --json` lists the cues with labels, the fatigue figures and the call summary."""
    audio = cue_calls["clean"].audio[:, : 16000 * 200]
    near, far = _write(tmp_path / "near.wav", audio[0]), _write(tmp_path / "far.wav", audio[1])
    # a campaign file that learns the fatigue baseline over 60 s of voice, so that 200 s of call
    # give a fatigue index (the default learns over 300 s)
    campaign = tmp_path / "campaign.toml"
    campaign.write_text("[fatigue]\nbaseline_speech_s = 60.0\ntrack_speech_s = 30.0\n")
    proc = subprocess.run([sys.executable, "-m", "miroir", "analyze", str(near), "--far", str(far),
                           "--json", "--campaign", str(campaign)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    cues = {c["cue"] for c in result["cues"]}
    assert {"talking_over", "monologue"} <= cues
    assert all(c["label_fr"] and c["label_en"] for c in result["cues"])
    fatigue = result["fatigue"]
    assert 0.0 <= fatigue["fatigue_index"] <= 100.0 and fatigue["fatigue_phonation_min"] > 0
    assert fatigue["break_suggested"] is False
    (summary,) = result["call_summaries"]
    assert summary["call_cues"] >= 2 and "call_rate_syl_s_median" in summary


def test_no_pause_cue_for_unbroken_speech_not_for_paused_speech(model):
    """35 s of the agent's real sentences run together (each cut to its loud part, joined with no
    gap) raise "pause and breathe" once, about on_s after the agent starts; the same sentences with
    0.4 s pauses between them raise none, the pauses and not the speech share holding it back (the
    cue asks for speech in half the time here). Stop closures inside the sentences are no pauses."""
    campaign = from_mapping({"no_pause": {"speech_ratio": 0.5}})
    cfg = campaign.no_pause
    window_s = campaign.too_fast.window_s
    found, starts = {}, {}
    for gap_s in (0.0, 0.4):
        b = Builder(seed=7)
        b.agent = [trim(x, -35.0) for x in b.agent]
        b.say(1, 1)
        b.pause(0.6)
        start = starts[gap_s] = b.t
        while b.t - start < 35.0:
            b.say(0, 1)
            b.pause(gap_s)
        cues = analyze(b.build().audio, model, campaign=campaign)["cues"]
        found[gap_s] = [c for c in cues if c["cue"] == "no_pause"]
        print(f"gap {gap_s} s: no_pause at {[round(c['start_s'] - start, 1) for c in found[gap_s]]} s")
    assert len(found[0.0]) == 1
    assert cfg.on_s - 1.0 <= found[0.0][0]["start_s"] - starts[0.0] <= cfg.on_s + window_s + 2.0
    assert found[0.4] == []


def test_pauses_nobody_can_hear_over_the_noise_are_not_counted_as_none(model):
    """The agent's sentences with 0.4 s pauses under the shared real noise at 0 dB SNR: no gap is
    25 dB under the voice, so no pause can be heard. The pause and breath rates are left out (they
    read 0 a minute, every window) and "pause and breathe" is not raised (it was, the pauses
    unheard taken for none); in the quiet the rates are there."""
    from bench.accuracy_prosody import mix_noise

    campaign = from_mapping({"no_pause": {"speech_ratio": 0.5}})
    b = Builder(seed=7)
    b.agent = [trim(x, -35.0) for x in b.agent]
    b.say(1, 1)
    b.pause(0.6)
    start = b.t
    while b.t - start < 35.0:
        b.say(0, 1)
        b.pause(0.4)
    call = b.build()
    noisy = call.audio.copy()
    noisy[0] = mix_noise(noisy[0], 2, 0.0)
    for audio, heard in ((call.audio, True), (noisy, False)):
        msgs = _run(Pipeline(model, campaign=campaign), audio)
        rates = [m.body.get("near_pauses_per_min") for m in msgs if m.kind == "metrics"
                 and start + 12.0 <= m.body["t_start"] <= start + 34.0]
        breaths = [m.body.get("near_breaths_per_min") for m in msgs if m.kind == "metrics"
                   and start + 12.0 <= m.body["t_start"] <= start + 34.0]
        cues = [m.body["cue"] for m in msgs if m.kind == "event" and m.body["name"] == "cue_on"]
        assert len(rates) >= 20
        if heard:
            assert all(r is not None and r > 0 for r in rates), rates
        else:
            assert rates == [None] * len(rates) and breaths == [None] * len(breaths), (rates, breaths)
            assert "no_pause" not in cues, cues


def _stretch_cue(model, seed: int, cue: str, inject) -> tuple[list[float], float, list[str]]:
    """A call with the agent's baseline learned (14 exchanges), ``inject(builder)``, 3 exchanges:
    the delays of the ``cue`` episodes from the stretch's onset, its length, every cue raised."""
    b = Builder(seed=seed)
    b.opening(14)
    inject(b)
    b.exchange(3)
    call = b.build()
    cues = analyze(call.audio, model)["cues"]
    (stretch,) = [t for t in call.truth if t.cue == cue]
    delays = [c["start_s"] - stretch.onset_s for c in cues if c["cue"] == cue]
    print(f"{cue}: at {delays} s of a {stretch.end_s - stretch.onset_s:.0f} s stretch")
    return delays, stretch.end_s - stretch.onset_s, [c["cue"] for c in cues]


def test_low_energy_cue_for_a_quieter_voice(model):
    """After the agent's baseline is learned, five turns of the agent's real speech 10 dB quieter
    raise "more energy" once, inside the stretch, and nothing else; at the usual level, none."""
    cfg = CampaignConfig().low_energy
    (delay_s,), length_s, names = _stretch_cue(model, 8, "low_energy", lambda b: b.quiet_stretch())
    # the 10 s prosody window must fill with the quieter voice, then the cue's min_on_s
    assert cfg.min_on_s <= delay_s <= min(length_s, 10.0 + cfg.min_on_s + 2.0)
    assert names == ["low_energy"]
    assert _stretch_cue(model, 8, "low_energy", lambda b: b.quiet_stretch(drop_db=0.0))[0] == []


def test_too_slow_cue_for_a_dragging_stretch(model):
    """Four turns of the agent's real speech at 0.7x tempo (``sox tempo``), after the baseline is
    learned, raise "pick up the pace" once, inside the stretch, and nothing else (this agent's
    slowed speech reads only about 0.85 of the baseline pace at first: the cue comes late, as a
    drawl is no emergency; across eight agents, see ``python -m bench.cues``)."""
    from tests._fixtures_signals import slow_call

    call = slow_call(6)
    cues = analyze(call.audio, model)["cues"]
    (stretch,) = [t for t in call.truth if t.cue == "too_slow"]
    found, matched = match_cues(call.truth, [c for c in cues if c["cue"] != "take_break"], 0.0)
    print(f"too_slow after {found} s of a {stretch.end_s - stretch.onset_s:.0f} s stretch; cues {cues}")
    assert [c["cue"] for c in cues] == ["too_slow"] and matched == 1
    assert 0.0 <= found[0] <= stretch.end_s - stretch.onset_s


def test_a_muted_headset_is_not_a_slow_answer(model):
    """The prospect asks, and the agent mutes the headset (digital zeros) for 8 s before answering:
    no "the prospect is waiting" cue, also when the mute begins 1 s after the question (muted for
    1.07 s, past the 1 s that makes a mute, when the gap is reached between two windows: that
    raised it). The same 8 s with the microphone live but silent raise it."""
    found = {}
    for mute_from_s in (0.1, 1.0, None):
        b = Builder(seed=9)
        b.opening(4)
        asked = b.say(1, 1)
        b.pause(8.0)
        b.say(0, 2)
        b.pause(0.5)
        b.exchange(2)
        call = b.build()
        if mute_from_s is not None:
            call.audio[0, int((asked + mute_from_s) * 16000): int((asked + 7.9) * 16000)] = 0.0
        found[mute_from_s] = [c["cue"] for c in analyze(call.audio, model)["cues"]
                              if asked <= c["start_s"] <= asked + 8.0]
    assert found[None] == ["slow_response"]
    assert found[0.1] == found[1.0] == []


def test_hold_music_is_nobody_talking(model):
    """The agent puts the prospect on hold (40 s of a tonal melody on the line) and talks to a
    colleague for 36 s over it: the line is on hold, so no "let the prospect speak", the line's
    speech share stays near zero, and the call's summary counts the hold as such, not as the
    agent's talk (it read a 35 s monologue and a talk ratio of 3.07 against 1.54 for the call with
    no talk on hold). The same 36 s over a silent live line raise the monologue cue."""
    from bench.farend import band_limit, melody

    found = {}
    for music in (True, False):
        b = Builder(seed=10)
        b.opening(4)
        hold = b.t + 0.5
        b.pause(2.5)
        while b.t - hold < 36.0:  # to a colleague, over the music
            b.say(0, 1)
            b.pause(0.3)
        b.t = max(b.t, hold + 40.5)
        b.exchange(2)
        call = b.build()
        if music:
            tune = band_limit(melody(40.0, seed=2)).astype(np.float32)
            i = int(hold * 16000)
            call.audio[1, i:i + len(tune)] += tune
        result = analyze(call.audio, model)
        found[music] = [c["cue"] for c in result["cues"] if hold <= c["start_s"] <= hold + 40.0]
        if music:
            inside = [m for m in result["metrics"] if hold + 1 <= m["t_start"] <= hold + 39]
            assert sum(m["far_speech_ratio"] for m in inside) <= 0.05 * len(inside)
            assert any(e["name"] == "far_kind" and e["kind"] == "music" for e in result["events"])
            (end,) = [e for e in result["events"] if e["name"] == "call_end"]
            assert 38.0 <= end["call_hold_s"] <= 42.0
            assert end["call_monologue_s_longest"] < 10.0 and end["call_talk_ratio"] < 2.0
    assert found[False] == ["monologue"]
    assert found[True] == []


def test_prospect_hesitating_on_slow_answers(model):
    """The prospect takes 2.5 s to answer three times in a row: "prospect hesitating" is raised
    once, at the second slow answer; answers after 0.3 to 0.9 s raise nothing of the kind."""
    cfg = CampaignConfig().prospect_hesitating
    found = {}
    for gap_s in (2.5, 0.6):
        b = Builder(seed=11)
        b.opening(3)
        answers = []
        for _ in range(3):
            b.say(0, 2)
            b.pause(gap_s)
            answers.append(b.t)
            b.say(1, 1)
            b.pause(0.5)
        b.exchange(2)
        call = b.build()
        cues = analyze(call.audio, model)["cues"]
        found[gap_s] = ([c["start_s"] for c in cues if c["cue"] == "prospect_hesitating"], answers)
    starts, answers = found[2.5]
    assert len(starts) == 1 and abs(starts[0] - answers[cfg.count - 1]) <= 1.0, found[2.5]
    assert found[0.6][0] == []


def test_prospect_hesitating_on_filled_pauses(model):
    """The prospect answers after 0.9 s, under the 1.5 s that makes a silence hesitant, three times
    in a row, each answer holding real filled pauses (the MFA clips "uh um uh hm", "uh", "um"):
    "prospect hesitating" is raised once, during the second answer or just after it. The same
    call with fluent answers raises nothing of the kind, and neither does the filler call with
    the campaign's ``filled_pauses`` off: the fillers, not the silences, raise it."""
    from tests._fixtures_fatigue import read_wav

    mfa = Path(__file__).resolve().parents[2] / "shared" / "data" / "mfa"
    found = {}
    for kind, names in (("fillers", ("mfa_uhum", "mfa_uh", "mfa_um")),
                        ("fluent", ("mfa_words", "mfa_thoughts", "mfa_youknow"))):
        b = Builder(seed=11)
        b.opening(3)
        answers = []
        for name in names:
            b.say(0, 2)
            b.pause(0.9)
            x = trim(read_wav(mfa / f"{name}.wav"))
            b.chunks.append((1, b.t, x))
            answers.append((b.t, b.t + len(x) / 16000))
            b.pause(len(x) / 16000 + 0.5)
        b.exchange(2)
        call = b.build()
        for fillers in (True, False):
            campaign = from_mapping({"prospect_hesitating": {"filled_pauses": fillers}})
            cues = analyze(call.audio, model, campaign=campaign)["cues"]
            found[kind, fillers] = [c for c in cues if c["cue"] == "prospect_hesitating"]
        print(kind, answers, [(c["start_s"], c["evidence_value"]) for c in found[kind, True]])
        found[kind] = answers
    (cue,), answers = found["fillers", True], found["fillers"]
    assert answers[1][0] <= cue["start_s"] <= answers[1][1] + 3.0, (cue, answers)
    assert (cue["evidence_value"], cue["evidence_threshold"], cue["evidence_unit"]) == (2, 2, "answers")
    assert found["fillers", False] == [] and found["fluent", True] == [] and found["fluent", False] == []


def test_monotone_cue_for_speech_on_one_note(model):
    """After the agent's baseline is learned, six turns of the agent's real sentences held on one
    note (Praat's resynthesis, same words and timing) raise "vary your tone" once, inside the
    stretch, and nothing else; the same sentences as recorded raise none."""
    cfg = CampaignConfig().monotone
    (delay_s,), length_s, names = _stretch_cue(model, 12, "monotone", lambda b: b.monotone_stretch())
    # the 10 s prosody window must fill with the flat voice, then the cue's min_on_s, then the
    # prosody stage's 1 s batches and the 1 s metrics window
    assert cfg.min_on_s <= delay_s <= min(length_s, 10.0 + cfg.min_on_s + 3.0)
    assert names == ["monotone"]
    assert _stretch_cue(model, 12, "monotone", lambda b: b.monotone_stretch(flat=False))[0] == []


def test_the_first_speech_of_a_new_shift_is_heard_by_the_cues(model):
    """The agent's first words after the idle gap start a new shift; the cue stage, started over
    by it, still knows the agent is speaking: a prospect's short "allô ?" over those words is no
    answer the agent leaves waiting."""
    from edge.vad import GateConfig
    from tests._fixtures_signals import clips

    agent = np.concatenate(clips("08", "N")[:3])
    prospect = min(clips("03"), key=len)
    n = 12 * 16000
    audio = np.random.default_rng(0).normal(0, 3e-4, (2, n)).astype(np.float32)  # live, not muted
    audio[0, 8000:8000 + len(agent)] += agent[: n - 8000]
    audio[1, 16000:16000 + len(prospect)] += 0.8 * prospect
    pipe = Pipeline(model, gate=GateConfig(min_silence_ms=600.0))
    pipe._idle_s = pipe.shift_gap_s  # as after the night with nobody speaking (not 3 h of audio)
    out = []
    for i in range(0, n, 4000):
        out += pipe(audio[:, i:i + 4000])
    assert pipe.shifts == 1
    events = [m.body for m in out if m.kind == "event"]
    assert [e["channel"] for e in events if e["name"] == "speech_start"][:2] == ["near", "far"]
    assert not [e for e in events if e["name"] == "cue_on" and e["cue"] == "slow_response"]


def _timeline(total_s: float, parts: list[tuple[int, str, float, float]]) -> np.ndarray:
    """Real EmoDB speech of ``speaker`` on channel ``ch`` (0 near, 1 far) from ``start_s`` to
    ``end_s``, over a quiet floor: parts are (ch, speaker, start_s, end_s)."""
    from tests._fixtures_signals import clips

    n = int(total_s * 16000)
    audio = np.random.default_rng(1).normal(0, 3e-4, (2, n)).astype(np.float32)
    for ch, speaker, start_s, end_s in parts:
        x = np.concatenate([np.pad(c, (0, 2400)) for c in clips(speaker)])[: int((end_s - start_s) * 16000)]
        audio[ch, int(start_s * 16000): int(start_s * 16000) + len(x)] += x
    return audio


def _feed(pipe: Pipeline, audio: np.ndarray, at: dict[float, str] | None = None) -> list[dict]:
    """Every event of ``audio`` fed in 64 ms blocks (:func:`_run`), call states ``at`` on the way."""
    return [m.body for m in _run(pipe, audio, 1024, at=at) if m.kind == "event"]


def test_a_call_summary_holds_only_its_own_call(model):
    """Two calls back to back on the call signal: the second, where the agent says nothing, has no
    pitch, level or rate of the agent (the first seconds' windows read the call before). A call
    ended on silence is dated back to its last speech: a cue raised in the silence after it is
    not one of its cues."""
    from edge.conversation import ConversationConfig

    audio = _timeline(50.0, [(0, "08", 2.0, 29.0), (1, "03", 31.0, 48.0)])
    pipe = Pipeline(model, conversation=ConversationConfig(call_start_on_speech=False,
                                                           call_end_silence_s=None))
    events = _feed(pipe, audio, {0.0: "active", 30.0: "idle", 30.05: "active", 49.5: "idle"})
    ends = [e for e in events if e["name"] == "call_end"]
    assert len(ends) == 2
    assert "call_f0_hz_median" in ends[0] and "call_rate_syl_s_median" in ends[0]
    assert ends[1]["call_agent_speech_ratio"] == 0.0
    assert not [k for k in ends[1] if k.startswith(("call_f0", "call_level", "call_pitch_range",
                                                    "call_rate"))], ends[1]
    # the prospect speaks last, the line goes quiet (no busy tone): the call ends at that speech
    audio = _timeline(60.0, [(1, "03", 1.0, 6.0), (0, "08", 7.0, 20.0), (1, "03", 21.0, 26.0)])
    events = _feed(Pipeline(model), audio)
    end = next(e for e in events if e["name"] == "call_end")
    late = [e for e in events if e["name"] == "cue_on" and e["t_audio_s"] > end["t_audio_s"]]
    assert late, "the scenario raises a cue after the call's last speech"
    counted = sum(end[f"call_cue_{c}_n"] for c in CUES if c != "take_break")
    assert end["call_cues"] == counted
    assert counted == sum(e["t_audio_s"] <= end["t_audio_s"] for e in events if e["name"] == "cue_on"
                          and e["cue"] != "take_break")
    early = {e["cue"] for e in events if e["name"] == "cue_on" and e["t_audio_s"] <= end["t_audio_s"]}
    for e in late:
        if e["cue"] not in early:
            assert end[f"call_cue_{e['cue']}_n"] == 0 and end[f"call_cue_{e['cue']}_s"] == 0.0, e


def test_the_baseline_never_learns_from_a_window_reaching_into_a_hold(model):
    """The agent talks to a colleague while the call is on hold (12 to 25 s): once the call is
    back, the 10 s windows that still cover the hold are not learned from, nor those that reach
    back before the call's start."""
    audio = _timeline(40.0, [(1, "03", 0.5, 3.0), (0, "08", 4.0, 40.0), (1, "03", 30.0, 34.0)])
    pipe = Pipeline(model)
    sig = pipe.signals
    learned: list[tuple[float, float]] = []  # (tick time, audio time the window starts)
    learn = sig._learn

    def spy(tick):
        before = len(sig.baseline.level_dbfs)
        learn(tick)
        if len(sig.baseline.level_dbfs) > before:
            learned.append((tick.t_s, tick.voice_t0_s + tick.long.start_s))

    sig._learn = spy
    events = _feed(pipe, audio, {12.0: "hold", 25.0: "active"})
    start = next(e["t_audio_s"] for e in events if e["name"] == "call_start")
    assert learned, "the baseline learned nothing after the hold"
    assert all(s >= 25.0 - 0.05 or (t <= 12.0 + 1.0 and s >= start - 0.05) for t, s in learned), learned
    assert not [t for t, _ in learned if 12.0 + 1.0 < t <= 25.0]  # nothing while on hold


def test_the_prospect_is_not_waiting_across_a_hold(model):
    """Real speech: the prospect stops, the agent puts the call on hold half a second later and
    speaks again 0.6 s after the resume. The hold is no slow answer: no "the prospect is waiting"
    at the resume (it fired with 6.9 s of evidence), no answer latency in the call summary."""
    from edge.conversation import ConversationConfig

    audio = _timeline(20.0, [(0, "08", 0.6, 2.4), (1, "03", 3.0, 5.0), (0, "08", 12.1, 14.0)])
    pipe = Pipeline(model, conversation=ConversationConfig(call_start_on_speech=False))
    events = _feed(pipe, audio, {0.0: "active", 5.5: "hold", 11.5: "active", 19.0: "idle"})
    assert not [e for e in events if e["name"] == "cue_on" and e["cue"] == "slow_response"]
    end = next(e for e in events if e["name"] == "call_end")
    assert end["call_cue_slow_response_n"] == 0 and end.get("call_responses_agent", 0) == 0
    assert end["call_responses_prospect"] == 1  # the prospect's answer before the hold counts


def test_the_rolling_windows_leave_a_hold_out_as_the_summary_does(model):
    """The agent puts the call on hold (10 to 42.5 s) and asks a colleague for 29 s: the rolling
    windows read the call off hold, as its summary does (just before the call's end, which the 60 s
    window spans, they read an agent share of 0.79, 7 agent turns and an 18.1 s monologue against
    0.40, 4 and 1.7 s in the summary); a window that lies wholly in the hold has no figure at all."""
    audio = _timeline(58.0, [(1, "03", 1.0, 5.0), (0, "08", 6.0, 9.0), (0, "08", 11.0, 40.0),
                             (1, "03", 43.5, 48.0), (0, "08", 49.0, 53.0)])
    out = _run(Pipeline(model), audio, 1024, at={10.0: 'hold', 42.5: 'active', 56.0: 'idle'})
    metrics = [m.body for m in out if m.kind == "metrics"]
    end = next(m.body for m in out if m.body.get("name") == "call_end")
    assert 31.0 <= end["call_hold_s"] <= 33.0 and end["call_duration_s"] < 59.0
    # the 30 s windows ending 40.75 s and 41.75 s in (the conversation is 0.25 s behind) are hold
    held = [m for m in metrics if m["t_start"] in (40.0, 41.0)]
    assert len(held) == 2 and not [k for m in held for k in m if k.endswith("_30s")], held
    assert all("agent_share_60s" in m for m in held)  # the 60 s window holds the call before it
    assert all(m["on_hold"] is True for m in held)  # which the metrics say: the reason of a gap
    last = [m for m in metrics if m["t_start"] < end["t_audio_s"] - 1.0][-1]
    assert abs(last["agent_share_60s"] - end["call_agent_share"]) <= 0.03, (last, end)
    assert abs(last["agent_speech_ratio_60s"] - end["call_agent_speech_ratio"]) <= 0.03
    assert abs(last["monologue_s_longest_60s"] - end["call_monologue_s_longest"]) <= 0.5
    assert last["turns_agent_60s"] == end["call_turns_agent"]
    assert last["on_hold"] is False and metrics[-1]["on_hold"] is False


def test_a_voicemail_greeting_raises_no_cue_the_call_counts(model):
    """A voicemail: the agent says "allô, bonjour" 1 s into the recorded greeting (real EmoDB
    speech, 9 s), which then leaves 2.5 s of silence before its beep. "Don't talk over the
    prospect" and "the prospect is waiting" were raised over a machine: the voicemail's summary
    counted both and they used two of the hour's cues (with a budget of 2, the live call that
    follows lost its "talking over"). The summary counts neither now and they are given back; the
    live call's cue is raised."""
    from bench.farend import band_limit, tone
    from tests._fixtures_signals import clips

    rate = 16000
    n = 70 * rate
    audio = (np.random.default_rng(3).standard_normal((2, n)) * 10 ** (-55 / 20)).astype(np.float32)
    audio[0] /= 10

    def put(ch: int, at_s: float, x: np.ndarray) -> float:
        audio[ch, int(at_s * rate): int(at_s * rate) + len(x)] += x
        return at_s + len(x) / rate

    def speech(speaker: str, seconds: float) -> np.ndarray:
        return np.concatenate([np.pad(c, (0, 2400)) for c in clips(speaker)])[: int(seconds * rate)]

    beep_s = put(1, 1.0, band_limit(speech("03", 9.0))) + 2.5
    put(0, 2.0, clips("08")[0][: int(2.5 * rate)])  # "allô, bonjour" over the greeting
    put(1, beep_s, tone((1000.0,), 0.5))
    put(0, beep_s + 1.5, speech("08", 15.0))  # the agent's message, after the beep
    # 20 s later, a live call: the prospect answers and the agent talks over the prospect
    live_s = beep_s + 37.0
    put(0, put(1, live_s, speech("03", 4.0)) + 1.0, speech("08", 4.0))
    put(1, live_s + 9.0, speech("09", 6.0))
    put(0, live_s + 11.0, speech("08", 5.0))
    pipe = Pipeline(model, campaign=from_mapping({"alerts": {"budget_per_hour": 2}}))
    out = _run(pipe, audio, block=1024)
    events = [m.body for m in out if m.kind == "event"]
    on = [e for e in events if e["name"] == "cue_on"]
    vm, live = [e for e in events if e["name"] == "call_end"][:2]
    assert vm["call_end_reason"] == "voicemail", vm
    assert sorted(e["cue"] for e in on if e["t_audio_s"] < vm["t_audio_s"]) == \
        ["slow_response", "talking_over"], on  # the scenario raises both over the greeting
    assert vm["call_cues"] == 0 and vm["call_cue_talking_over_n"] == 0, vm
    assert vm["call_cue_slow_response_n"] == vm["call_cue_slow_response_s"] == 0, vm
    assert [e["cue"] for e in on if e["t_audio_s"] > live_s] == ["talking_over"], on
    assert live["call_cue_talking_over_n"] == 1 and live["call_cues"] == 1, live


def test_talk_over_each_other_on_hold_is_no_overlap_of_the_call(model):
    """On the call-state hold (10 to 30 s) the agent asks a colleague while the line still carries
    the prospect talking at their end: the two overlap, but on hold nobody talks over the
    prospect. The call's summary and the rolling windows count no overlap and no interruption
    (they counted those begun on hold while the overlap ratio, read off hold, said 0); the
    overlaps after the hold count."""
    audio = _timeline(50.0, [(1, "03", 1.0, 5.0), (0, "08", 6.0, 9.0),
                             (0, "08", 11.0, 16.0), (1, "03", 13.0, 20.0), (0, "08", 18.5, 27.0),
                             (1, "03", 31.0, 37.0), (0, "08", 35.0, 40.0)])
    out = _run(Pipeline(model), audio, 1024, at={10.0: 'hold', 30.0: 'active', 46.0: 'idle'})
    events = [m.body for m in out if m.kind == "event"]
    held = [e for e in events if e["name"] == "overlap_start" and 10.0 < e["t_audio_s"] < 30.0]
    after = [e for e in events if e["name"] == "overlap_start" and e["t_audio_s"] > 30.0]
    assert held and after, [e for e in events if e["name"] == "overlap_start"]
    end = next(e for e in events if e["name"] == "call_end")
    assert 19.0 <= end["call_hold_s"] <= 21.0
    cut = [e for e in events if e["name"] == "interruption"]
    assert [e for e in cut if e["t_audio_s"] < 30.0]  # the agent cut in on the line, on hold
    cut = [e for e in cut if e["t_audio_s"] > 30.0]
    assert end["call_overlaps"] == end["call_overlaps_agent"] == len(after), (end, held, after)
    assert end["call_interruptions_agent"] + end["call_interruptions_prospect"] == len(cut), end
    metrics = [m.body for m in out if m.kind == "metrics"]
    assert not [(m["t_start"], k) for m in metrics if m["t_start"] < 30.0 for k, v in m.items()
                if k.startswith(("overlaps_", "interruptions_")) and v]
    last = [m for m in metrics if m["t_start"] < end["t_audio_s"] - 1.0][-1]
    assert last["overlaps_agent_60s"] == len(after) and last["interruptions_agent_60s"] == len(cut)


def test_hold_music_keeps_the_call_open(model):
    """The prospect is put on hold: 30 s of a melody on the line, nobody speaks. The call goes on
    through it (it ended on silence 20 s into the music, and the prospect's return started a
    second call); the agent's first words after it are no answer timed across the music."""
    from bench.farend import band_limit, melody

    audio = _timeline(56.0, [(1, "03", 1.0, 5.0), (0, "08", 5.6, 9.0), (1, "03", 9.5, 12.0),
                             (0, "08", 43.3, 47.0), (1, "03", 47.6, 52.0)])
    tune = band_limit(melody(30.0, seed=1)).astype(np.float32)
    audio[1, 12 * 16000 + 8000:12 * 16000 + 8000 + len(tune)] += tune  # 12.5 s to 42.5 s
    events = _feed(Pipeline(model), audio)
    assert [e["kind"] for e in events if e["name"] == "far_kind" and 12.0 < e["t_audio_s"] < 43.0] \
        == ["music"]
    calls = [e for e in events if e["name"] == "call_end"]
    assert len(calls) == 1 and calls[0]["call_end_reason"] == "end_of_stream", calls
    assert calls[0]["call_responses_agent"] == 1  # 5.6 s only: not the one at 43.3 s after the music
    assert calls[0]["call_latency_agent_ms_median"] < 1500


def test_a_cue_raised_and_closed_at_the_same_instant_is_no_episode():
    """A cue raised in the recording's last window is closed by its end at the same instant: it
    said nothing, and the call's summary does not count it either; analyze lists it no more."""
    from edge.signals import cue_event

    events = [cue_event("cue_on", "talking_over", 12.0, "medium", 1.2, 0.5),
              cue_event("cue_off", "talking_over", 21.0, "medium", 1.2, 0.5),
              cue_event("cue_on", "no_pause", 60.0, "medium", 0.95, 0.8),
              cue_event("cue_off", "no_pause", 60.0, "medium", 0.95, 0.8)]
    assert [(c["cue"], c["start_s"], c["end_s"]) for c in cue_episodes(events)] == \
        [("talking_over", 12.0, 21.0)]


def _slow_answer_call() -> np.ndarray:
    """The prospect picks up, the agent speaks, the prospect answers and waits 4 s: one "the
    prospect is waiting" cue; then 25 s of silence end the call (real EmoDB speech)."""
    from tests._fixtures_signals import AGENT, PROSPECT, clips

    agent, prospect = clips(AGENT, "N"), clips(PROSPECT, "N")
    parts, t = [], 0.5
    for ch, x, after_s in ((1, prospect[0], 0.5), (0, agent[0], 0.5), (1, prospect[1], 4.0),
                           (0, agent[1], 0.0)):
        parts.append((ch, t, x))
        t += len(x) / 16000 + after_s
    audio = np.random.default_rng(1).normal(0, 3e-4, (2, int((t + 25) * 16000))).astype(np.float32)
    for ch, start_s, x in parts:
        audio[ch, int(start_s * 16000): int(start_s * 16000) + len(x)] += x
    return audio


def test_an_unplugged_headset_lets_the_cue_budget_hour_pass(model):
    """Budget one cue an hour; a cue, then the headset unplugged for two hours: the next call's
    cue is raised (the budget ran on the audio clock, which stood still while unplugged, and
    refused it)."""
    campaign = from_mapping({"alerts": {"budget_per_hour": 1}})
    pipe = Pipeline(model, campaign=campaign)
    audio = _slow_answer_call()
    msgs = _run(pipe, audio)
    msgs += pipe.interrupt()
    pipe.gap(2 * 3600.0)
    msgs += _run(pipe, audio)
    raised = [m.body["cue"] for m in msgs if m.kind == "event" and m.body["name"] == "cue_on"]
    assert raised == ["slow_response", "slow_response"] and pipe.signals.suppressed_by_budget == 0


def test_speech_under_way_when_the_headset_goes_is_ended(model):
    """The headset is unplugged while the prospect speaks: the events that close the call end that
    speech first (the floor went on showing the seat speaking while the headset was gone)."""
    audio = _timeline(12.0, [(1, "03", 1.0, 12.0)])
    pipe = Pipeline(model)
    for i in range(0, audio.shape[1], 1024):
        pipe(audio[:, i:i + 1024])
    assert pipe._open["far"] is not None  # still speaking when the audio stops
    closing = [m.body for m in pipe.interrupt()]
    assert [(e["name"], e["channel"]) for e in closing][:1] == [("speech_end", "far")]
    assert closing[0]["t_audio_s"] == 12.0 and [e["name"] for e in closing][-1] == "call_end"


def test_a_long_private_stretch_starts_a_new_shift(model):
    """Fifteen minutes private (past new_shift_idle_min = 10) count as idle, as silence or an
    unplugged headset do: the next speech starts a new shift (the old one carried on)."""
    from tests._fixtures_signals import AGENT, clips

    speech = np.concatenate([np.pad(c, (0, 4800)) for c in clips(AGENT, "N")])[: 30 * 16000]
    audio = np.zeros((2, len(speech)), dtype=np.float32)
    audio[0] = speech
    audio += np.random.default_rng(2).normal(0, 3e-4, audio.shape).astype(np.float32)
    pipe = Pipeline(model, campaign=from_mapping({"fatigue": {"new_shift_idle_min": 10.0}}))
    _run(pipe, audio)
    pipe.set_private(True)
    _run(pipe, np.zeros((2, 15 * 60 * 16000), dtype=np.float32), block=60 * 16000)
    pipe.set_private(False)
    _run(pipe, audio)
    assert pipe.shifts == 1


def test_every_ami_headset_pairing_runs_through_the_pipeline(model):
    """The twelve pairings of the four AMI headsets as agent and line, whole recordings: each
    gives a report (one of them, whose line opens on a filled pause before any answer, crashed
    the cue stage)."""
    from itertools import permutations

    from edge.source import read_wav

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "ami-headsets"
    heads = [read_wav(shared / f"source{i}.wav", notice=False).samples for i in range(4)]
    for a, b in permutations(range(4), 2):
        n = min(len(heads[a]), len(heads[b]))
        report = analyze(np.stack([heads[a][:n], heads[b][:n]]), model)
        assert report["duration_s"] > 50 and report["call"]["near_speech_ratio"] > 0, (a, b)


def test_a_hang_up_after_the_prospect_spoke_costs_no_budget_nor_cooldown(model):
    """Budget two cues an hour. Two calls end on the prospect's last words and a quiet line (no
    busy tone, no softphone signal): "the prospect is waiting" is raised 2 s after each, before
    anything can tell the call has ended. The call end, found 20 s into the silence, gives those
    cues back to the budget and the cooldown: the next call's real wait, 4.5 s after it starts
    and 19.5 s after the last late cue ended, is cued (the hour's budget and the 20 s cooldown
    had both refused it)."""
    ended = _timeline(40.0, [(1, "03", 1.0, 5.0), (0, "08", 5.6, 12.0), (1, "03", 12.6, 15.0)])
    waits = _timeline(12.0, [(1, "03", 0.5, 2.5), (0, "08", 6.5, 9.0)])
    pipe = Pipeline(model, campaign=from_mapping({"alerts": {"budget_per_hour": 2}}))
    events = _feed(pipe, np.concatenate([ended, ended, waits], axis=1))
    ends = [e["t_audio_s"] for e in events if e["name"] == "call_end"]
    cues = [(e["name"], e["cue"], e["t_audio_s"]) for e in events if e["name"].startswith("cue_")]
    assert len(ends) == 3 and [c[:2] for c in cues[:4]] == [("cue_on", "slow_response"),
                                                            ("cue_off", "slow_response")] * 2
    assert ends[0] < cues[0][2] < 40.0 < ends[1] < cues[2][2]  # raised after each call's end
    assert cues[4:5] == [("cue_on", "slow_response", cues[4][2])] and 84.0 < cues[4][2] < 85.5
    assert cues[4][2] - cues[3][2] < 20.0 and pipe.signals.suppressed_by_budget == 0


def test_no_one_is_waiting_once_the_softphone_ended_the_call(model):
    """The prospect's last words, then the softphone sets the call idle 1.9 s later: no "the
    prospect is waiting" (it was raised 64 ms after the call's end, between two windows)."""
    from edge.conversation import ConversationConfig

    audio = _timeline(24.0, [(1, "03", 1.0, 5.0), (0, "08", 5.6, 12.0), (1, "03", 12.6, 15.0)])
    for idle_s in (15.5, 16.9):
        pipe = Pipeline(model, conversation=ConversationConfig(call_start_on_speech=False))
        events = _feed(pipe, audio, {0.5: "active", idle_s: "idle"})
        end = next(e["t_audio_s"] for e in events if e["name"] == "call_end")
        assert abs(end - idle_s) < 0.1
        assert not [e for e in events if e["name"] == "cue_on"], (idle_s, events)
