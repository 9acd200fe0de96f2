"""Campaign config validation, and the anti-nagging rules of one stage (edge.signals) in isolation."""

from __future__ import annotations

import pytest

from edge import campaign
from edge.campaign import CampaignConfig, CampaignError
from edge.signals import Signals, Tick


def test_defaults_and_a_valid_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[alerts]\nbudget_per_hour = 6\n[monologue]\non_s = 45\nhigh_s = 90\n")
    cfg = campaign.load(path)
    assert cfg.alerts.budget_per_hour == 6 and cfg.monologue.on_s == 45.0
    assert cfg.too_fast == CampaignConfig().too_fast
    assert campaign.from_mapping(__import__("tomllib").loads(campaign.defaults_toml())) == CampaignConfig()


@pytest.mark.parametrize("text, message", [
    ("[alerts]\nbudget_per_hr = 3\n", "alerts.budget_per_hr"),
    ("[cues]\nx = 1\n", "unknown section(s): cues"),
    ("[monologue]\non_s = 2\n", "monologue.on_s = 2.0 is outside the allowed range 5..600"),
    ("[alerts]\nbudget_per_hour = 500\n", "alerts.budget_per_hour = 500 is outside the allowed range 0..120"),
    ("[alerts]\nbudget_per_hour = 1.5\n", "alerts.budget_per_hour: expected an integer"),
    ("[too_fast]\nenabled = 1\n", "too_fast.enabled: expected true or false"),
    ("[too_fast]\nratio_on = 1.05\nratio_off = 1.1\n",
     "too_fast.ratio_off (1.1) must be < too_fast.ratio_on"),
    ("monologue = 3\n", "monologue: expected a [monologue] section"),
    ("[monologue\n", "not valid TOML"),
    # a ratio on the wrong side of the agent's own pace (a typo) would cue normal speech
    ("[too_fast]\nratio_on = 0.5\nratio_off = 0.4\n",
     "too_fast.ratio_on = 0.5 is outside the allowed range 1..3"),
    ("[too_slow]\nratio_on = 1.5\nratio_off = 1.8\n",
     "too_slow.ratio_on = 1.5 is outside the allowed range 0.3..1"),
    # values that passed but could never act: a waiting prospect past the hold silence is a hold,
    # and no answer after more than 10 s is an answer
    ("[slow_response]\nmax_s = 30\n", "slow_response.max_s (30.0) must be <= alerts.hold_silence_s (10.0)"),
    ("[alerts]\nhold_silence_s = 2\n", "slow_response.on_s (2.0) must be < alerts.hold_silence_s (2.0)"),
    ("[prospect_hesitating]\nlatency_on_s = 12\n",
     "prospect_hesitating.latency_on_s = 12.0 is outside the allowed range 0.3..10"),
    # a file emptied by accident (an editor on a full disk, `> campaign.toml`) read as every
    # default: a reload took it, restarted the box on it and kept it as the last good campaign
    ("", "bad.toml: the campaign file is empty"),
    ("\ufeff \n\t\n", "bad.toml: the campaign file is empty"),
])
def test_bad_files_name_the_key_and_range(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(CampaignError) as exc:
        campaign.load(path)
    assert message in str(exc.value)


def test_an_unreadable_campaign_path_is_a_clear_error(tmp_path):
    with pytest.raises(CampaignError, match="cannot read the campaign file"):
        campaign.load(tmp_path)  # a directory


def _tick(t: float, **metrics) -> Tick:
    base = {"window_s": 1.0, "in_call": True, "far_kind": "speech", "near_signal": "ok",
            "far_signal": "ok", "near_speech_ratio": 1.0, "near_talking": True}
    return Tick(t_s=t, metrics={**base, **metrics})


def test_monologue_hysteresis_cooldown_and_budget():
    """Fake per-second inputs: one cue per episode, a cooldown, and the hourly budget."""
    cfg = campaign.from_mapping({"alerts": {"budget_per_hour": 2}, "monologue": {"cooldown_s": 30}})
    sig = Signals(cfg)
    raised = []
    t = 0.0
    for _episode in range(4):
        for k in range(40):  # a 40 s monologue
            t += 1
            raised += [e for e in sig(_tick(t, monologue_s_current=float(k))) if e["name"] == "cue_on"]
        for _ in range(40):  # then 40 s of listening
            t += 1
            sig(_tick(t, monologue_s_current=0.0, near_speech_ratio=0.0, near_talking=False))
    assert [e["t_audio_s"] for e in raised] == [31.0, 111.0]  # budget of 2 per hour
    assert sig.suppressed_by_budget > 0
    assert raised[0]["evidence_threshold"] == 30.0 and raised[0]["evidence_unit"] == "s"


@pytest.mark.parametrize("why, metrics, kwargs", [
    ("hold", {"far_kind": "music"}, {}),
    ("muted", {}, {"near_flat_s": 1.5}),
    ("idle", {"in_call": False}, {}),
])
def test_hold_mute_and_idle_suppress_cues(why, metrics, kwargs):
    sig = Signals()
    out = []
    for k in range(60):
        tick = _tick(float(k), monologue_s_current=float(k), **metrics)
        tick.near_flat_s = kwargs.get("near_flat_s", 0.0)
        assert sig.suppressed(tick) == why
        out += sig(tick)
    assert out == []


def _ready(sig: Signals, pace: float = 5.0, rng: float = 6.0, level: float = -30.0) -> None:
    """Give the stage a learned baseline."""
    sig.baseline.pitch_range_st = [rng] * 5
    sig.baseline.pace_syl_s = [pace] * 5
    sig.baseline.spectral_speed_db = [4.0] * 5
    sig.baseline.level_dbfs = [level] * 5
    sig.baseline.speech_s = 1000.0


def _window(voiced: float = 0.6, pitch_range_st: float | None = 6.0, level_dbfs: float = -30.0):
    from edge.prosody import ProsodyWindow

    return ProsodyWindow(start_s=0.0, end_s=10.0, voiced_ratio=voiced, level_dbfs=level_dbfs,
                         f0_median_hz=120.0, pitch_range_st=pitch_range_st, pitch_movement_st_per_s=1.0,
                         hnr_db=10.0, jitter_local=0.01, shimmer_local=0.05, syllables=40,
                         articulation_rate_syl_s=5.0, pace_syl_s=5.0, speaking_rate_syl_s=4.0,
                         pauses=2, pauses_per_min=12.0, breaths=0, pause_s_mean=0.3)


def _monologue_on() -> Signals:
    """A cue stage with a monologue cue raised (35 s of agent turn)."""
    sig = Signals()
    out = []
    for k in range(35):
        out += sig(_tick(float(k), monologue_s_current=float(k)))
    assert [e["name"] for e in out] == ["cue_on"]
    return sig


def test_explicit_hold_ends_an_active_cue():
    sig = _monologue_on()
    sig.hold(True)
    out = sig(_tick(36.0, monologue_s_current=36.0))
    assert [(e["name"], e["cue"]) for e in out] == [("cue_off", "monologue")]
    assert sig(_tick(37.0, monologue_s_current=37.0)) == []


_QUIET = {"near_speech_ratio": 0.0, "near_talking": False}


def _prospect_spoke(end_s: float, ended_at_s: float) -> Signals:
    """Ten quiet windows, then the prospect speaks from 8 s to ``end_s`` (told at ``ended_at_s``)."""
    sig = Signals()
    for k in range(10):
        sig(_tick(float(k), **_QUIET))
    sig.event({"name": "speech_start", "channel": "far", "t_audio_s": 8.0}, 8.0)
    sig.event({"name": "speech_end", "channel": "far", "t_audio_s": end_s}, ended_at_s)
    return sig


def test_slow_response_is_raised_between_windows_once_the_gap_is_reached():
    """The prospect stops at 10.3 s: `poll` raises the cue at 12.3 s, not at the next window (13 s);
    the window keeps it, the agent's answer ends it, and a suppressed seat gets nothing."""
    sig = _prospect_spoke(10.3, 10.4)
    assert sig(_tick(11.0, **_QUIET)) == [] and sig(_tick(12.0, **_QUIET)) == []
    assert sig.poll(12.2) == []
    (on,) = sig.poll(12.3)
    assert (on["name"], on["cue"], on["t_audio_s"]) == ("cue_on", "slow_response", 12.3)
    assert sig.poll(12.4) == [] and sig(_tick(13.0, **_QUIET)) == []  # raised once, kept
    sig.event({"name": "speech_start", "channel": "near", "t_audio_s": 13.5}, 13.5)
    assert [(e["name"], e["cue"]) for e in sig(_tick(14.0))] == [("cue_off", "slow_response")]
    held = Signals()
    held(_tick(1.0, far_kind="music", **_QUIET))
    held.event({"name": "speech_end", "channel": "far", "t_audio_s": 1.0}, 1.0)
    assert held.poll(3.5) == []
    cti = Signals()  # the softphone puts the line on hold between two windows
    cti(_tick(1.0, **_QUIET))
    cti.event({"name": "speech_end", "channel": "far", "t_audio_s": 1.0}, 1.0)
    cti.hold(True)
    assert cti.poll(3.5) == []
    cti.hold(False)
    assert [e["cue"] for e in cti.poll(3.6)] == ["slow_response"]


@pytest.mark.parametrize("far_kind", ["busy", "ringback", "music", "dead"])
def test_nobody_on_the_line_suppresses_cues(far_kind):
    """The prospect says goodbye and hangs up: no "the prospect is waiting" over the busy tone."""
    sig = _prospect_spoke(10.0, 10.0)
    out = []
    for k in range(11, 16):
        out += sig(_tick(float(k), far_kind=far_kind, **_QUIET)) + sig.poll(k + 0.5)
    assert out == []


def test_each_call_starts_clean():
    """The last call's slow answers do not make the next prospect 'hesitating' before a word."""
    sig = Signals()
    out = []
    sig.event({"name": "call_start", "channel": "far", "t_audio_s": 0.0}, 0.0)
    # each answer is handed over once (the third's latency equals the second's: still an answer)
    for t, lat_s in ((10, 1.0), (20, 2.5), (30, 2.5)):
        for k in range(t - 9, t + 1):
            tick = _tick(float(k))
            tick.far_answers = ((k - 0.5, lat_s),) if k == t - 9 else ()
            out += sig(tick)
    assert ("cue_on", "prospect_hesitating") in [(e["name"], e["cue"]) for e in out]
    end = {"name": "call_end", "channel": "far", "t_audio_s": 31.0}
    assert [(e["name"], e["cue"]) for e in sig.event(end, 31.0)] == [("cue_off", "prospect_hesitating")]
    assert end["call_cue_prospect_hesitating_n"] == 1
    for k in range(32, 150):
        assert sig(_tick(float(k), in_call=False)) == []
    sig.event({"name": "call_start", "channel": "far", "t_audio_s": 150.0}, 150.0)
    for k in range(150, 160):  # one slow answer: the last call's two are forgotten
        tick = _tick(float(k))
        tick.far_answers = ((150.5, 2.5),) if k == 151 else ()
        assert sig(tick) == []


def test_a_long_monologue_escalates_once_and_ends_once():
    """30 s: medium; 60 s: the same episode again as high (docs/cues.md); one cue_off."""
    from edge.pipeline import cue_episodes

    sig = Signals()
    ev = []
    for k in range(91):
        ev += sig(_tick(float(k), monologue_s_current=float(k)))
    ev += sig(_tick(91.0, monologue_s_current=0.0))
    assert [(e["name"], e["severity"], e["t_audio_s"]) for e in ev] == [
        ("cue_on", "medium", 30.0), ("cue_on", "high", 60.0), ("cue_off", "high", 91.0)]
    # each against the threshold it passed (the high one said 30 s)
    assert [(e["evidence_value"], e["evidence_threshold"]) for e in ev[:2]] == [(30.0, 30.0), (60.0, 60.0)]
    (episode,) = cue_episodes(ev)
    assert (episode["severity"], episode["start_s"], episode["end_s"]) == ("high", 30.0, 91.0)
    assert sig.summary()["call_cue_monologue_n"] == 1


def test_a_cue_without_evidence_still_waits_min_off_s():
    """The agent falls silent during a monotone cue: it ends after min_off_s, not at once."""
    cfg = campaign.from_mapping({"monotone": {"min_on_s": 2, "min_off_s": 5}})
    sig = Signals(cfg)
    _ready(sig)

    ev = []
    for k in range(5):
        tick = _tick(float(k))
        tick.long = _window(pitch_range_st=2.0)
        ev += [(e["name"], e["t_audio_s"]) for e in sig(tick)]
    for k in range(5, 15):  # silence: no voiced window, no evidence either way
        ev += [(e["name"], e["t_audio_s"]) for e in sig(_tick(float(k), near_speech_ratio=0.0))]
    assert ev == [("cue_on", 1.0), ("cue_off", 9.0)], ev


def test_one_tone_like_burst_does_not_end_the_cues():
    """A voice can look like a busy tone for a second: cues end only once the tone held 3 s."""
    sig = _monologue_on()
    assert sig(_tick(35.0, monologue_s_current=35.0, far_kind="busy")) == []
    assert sig(_tick(36.0, monologue_s_current=36.0)) == []  # the voice goes on: still on
    ends = []
    for k in range(37, 41):
        ends += sig(_tick(float(k), monologue_s_current=float(k), far_kind="busy"))
    assert [(e["name"], e["t_audio_s"]) for e in ends] == [("cue_off", 39.0)]


def test_a_new_turn_ends_the_monologue_cue():
    """A pause just over the turn gap falls between two windows: the next window reads the new
    turn (0.8 s), never 0, and the cue still ends there."""
    sig = _monologue_on()
    ends = sig(_tick(35.0, monologue_s_current=0.8))
    assert [(e["name"], e["cue"]) for e in ends] == [("cue_off", "monologue")]


def test_a_start_condition_must_hold_without_a_break():
    """8 s of monotone speech, 5 minutes of listening, then monotone again: the cue waits for a
    whole min_on_s (10 s) of new evidence."""
    sig = Signals()
    _ready(sig)
    raised = []
    for k in range(8):
        tick = _tick(float(k))
        tick.long = _window(pitch_range_st=2.0)
        raised += sig(tick)
    for k in range(8, 308):
        tick = _tick(float(k), near_speech_ratio=0.0, near_talking=False)
        tick.long = _window(voiced=0.0, pitch_range_st=None)
        raised += sig(tick)
    for k in range(308, 330):
        tick = _tick(float(k))
        tick.long = _window(pitch_range_st=2.0)
        raised += sig(tick)
    assert [(e["name"], e["cue"], e["t_audio_s"]) for e in raised] == [("cue_on", "monotone", 317.0)]


def test_too_fast_reads_the_tempo_the_pace_and_the_spectral_speed_together():
    """A pace 1.1 times the agent's with a spectral speed 1.15 times its own reads a tempo of
    sqrt(1.1) x 1.15 = 1.206: "slow down" at ratio_on 1.2, which neither reads alone; the same pace
    at the agent's usual spectral speed (1.049), or with none measured (the pace, 1.1), raises
    nothing. The evidence sent is the tempo."""
    from edge.rate import RateWindow

    def raised(speed_db: float | None) -> list[dict]:
        sig = Signals(campaign.from_mapping({"too_fast": {"ratio_on": 1.2}}))
        _ready(sig, pace=5.0)  # and a spectral speed of 4 dB
        out = []
        for k in range(4):
            tick = _tick(float(k))
            tick.short = tick.slow = RateWindow(0.8, 20, 5.5, 5.5, 1, spectral_speed_db=speed_db)
            out += [e for e in sig(tick) if e["name"] == "cue_on"]
        return out

    (on,) = raised(4.6)
    assert (on["cue"], on["evidence_value"], on["evidence_threshold"]) == ("too_fast", 1.206, 1.2)
    assert raised(4.0) == [] and raised(None) == []


def test_the_baseline_learns_only_the_agent_in_a_live_call():
    """Speech on hold or out of a call (a colleague, a louder voice) is not the agent's habit."""
    from edge.rate import RateWindow

    def fed(hold: bool, **metrics) -> Signals:
        sig = Signals()
        sig.hold(hold)
        if metrics.get("in_call", True):
            sig.event({"name": "call_start", "channel": "far", "t_audio_s": 0.0}, 0.0)
        for k in range(200):
            tick = _tick(float(k), **metrics)
            tick.long = _window(level_dbfs=-18.0)
            tick.short = tick.slow = RateWindow(0.8, 15, 7.0, 7.0, 1, spectral_speed_db=4.0)
            sig(tick)
        return sig

    for sig in (fed(True), fed(False, in_call=False)):
        assert sig.baseline.speech_s == 0.0 and not sig.baseline.level_dbfs and not sig.baseline.pace_syl_s
    sig = fed(False)
    assert sig.baseline.ready(60.0) and sig.baseline.value("level_dbfs") == -18.0


def test_the_budget_counts_refused_cues_not_seconds():
    cfg = campaign.from_mapping({"alerts": {"budget_per_hour": 1}, "monologue": {"cooldown_s": 0}})
    sig = Signals(cfg)
    for episode in range(2):  # the second 45 s monologue is over the budget for 15 s
        for k in range(46):
            sig(_tick(100.0 * episode + k, monologue_s_current=float(k)))
        sig(_tick(100.0 * episode + 46, monologue_s_current=0.0))
    assert sig.suppressed_by_budget == 1


def test_a_filled_pause_makes_an_answer_hesitant_only_inside_it():
    """Quick answers (0.4 s) are hesitant when they hold a filled pause: two of three raise
    'prospect hesitating', also when the filler is the first of the answer's two speech segments
    ("euh... [pause] oui"). A filled pause before the answer began, or over the agent's next turn
    (a hum, confirmed while the agent speaks), is not the answer's."""
    def ev(name: str, ch: str, t: float) -> None:
        sig.event({"name": name, "channel": ch, "t_audio_s": t}, t)

    def tick(t: float, agent: bool, fillers: list[tuple[float, float]],
             answer_s: float | None = None) -> list[dict]:
        out = _tick(t, near_talking=agent, near_speech_ratio=1.0 if agent else 0.0)
        out.far_filled_pauses_s = tuple(f for f in fillers if f[1] <= t - 1.0)  # confirmed 1 s on
        out.far_answers = ((answer_s, 0.4),) if answer_s is not None else ()  # handed over once
        return sig(out)

    def run(fillers: list[tuple[float, float]]) -> list[dict]:
        nonlocal sig
        sig = Signals()
        ev("call_start", "far", 0.0)
        raised = []
        for start in (10.0, 20.0, 30.0):
            ev("speech_start", "near", start - 3.0)  # the agent asks...
            raised += tick(start - 2.0, True, fillers) + tick(start - 1.0, True, fillers)
            ev("speech_end", "near", start - 0.4)
            ev("speech_start", "far", start)  # ...the prospect answers in two segments
            ev("speech_end", "far", start + 0.6)
            ev("speech_start", "far", start + 0.8)
            for k in range(1, 6):  # the answer starts with its first words
                raised += tick(start + k, False, fillers, start if k == 1 else None)
            ev("speech_end", "far", start + 5.5)
        return [e for e in raised if e["cue"] == "prospect_hesitating" and e["name"] == "cue_on"]

    sig = Signals()
    (on,) = run([(10.5, 11.0), (20.2, 20.8)])
    assert 21.0 <= on["t_audio_s"] <= 23.0 and on["evidence_value"] == 2
    (on,) = run([(10.0, 10.5), (20.1, 20.5)])  # each filler in the answer's first segment
    assert 21.0 <= on["t_audio_s"] <= 23.0
    assert run([(10.5, 11.0)]) == []  # one hesitant answer of three
    # before the first answer; hums over the agent's next questions, seen while those are asked
    assert run([(9.0, 9.5), (17.2, 17.6), (27.2, 27.6)]) == []


def test_an_interruption_reports_its_own_length():
    """The agent cuts in and the prospect gives up 0.4 s later: 'talking over' says 0.4 s, against
    no length threshold (an interruption counts whatever its length; it said 1.0 s of 1.0 s)."""
    sig = Signals()
    for name, ch, t, extra in (("call_start", "far", 0.0, {}), ("speech_start", "far", 1.0, {}),
                               ("speech_start", "near", 3.0, {}), ("overlap_start", "near", 3.0, {}),
                               ("speech_end", "far", 3.4, {}),
                               ("overlap_end", "near", 3.4, {"duration_s": 0.4}),
                               ("interruption", "near", 3.0, {"duration_s": 0.4})):
        sig.event({"name": name, "channel": ch, "t_audio_s": t, **extra}, t)
    (on,) = [e for e in sig(_tick(4.0)) if e["name"] == "cue_on"]
    assert (on["cue"], on["evidence_value"], on["evidence_threshold"]) == ("talking_over", 0.4, 0.0)


def test_the_evidence_meets_the_threshold_that_raised_the_cue():
    """A pace over the campaign's band (8.5 syl/s) raises 'slow down' below the 1.23 ratio: the
    threshold sent is the band as a ratio to the agent's pace; 'hesitating' sends how many of the
    recent answers were hesitant, against the count that raises it."""
    from edge.rate import RateWindow

    def paced(pace_syl_s: float) -> tuple[Signals, list[dict]]:
        """An agent with a 7.2 syl/s baseline speaking 5 s at ``pace_syl_s``."""
        sig = Signals()
        _ready(sig, pace=7.2)
        raised = []
        for k in range(5):
            tick = _tick(float(k))
            tick.short = tick.slow = RateWindow(0.8, 20, pace_syl_s, pace_syl_s, 1)
            raised += sig(tick)
        return sig, raised

    sig, raised = paced(8.6)
    sig.event({"name": "call_start", "channel": "far", "t_audio_s": 5.0}, 5.0)
    for n, lat_s in enumerate((0.3, 1.6, 1.9, 0.4), 1):
        tick = _tick(5.0 + n)
        tick.far_answers = ((4.5 + n, lat_s),)
        raised += sig(tick)
    on = {e["cue"]: (e["evidence_value"], e["evidence_threshold"]) for e in raised if e["name"] == "cue_on"}
    assert on["too_fast"] == (round(8.6 / 7.2, 3), round(8.5 / 7.2, 3))
    assert on["prospect_hesitating"] == (2, 2)
    # past half as far again (1.345 with ratio_on 1.23) the cue is high: against that threshold
    (high,) = [e for e in paced(10.8)[1] if e["cue"] == "too_fast"]
    assert (high["severity"], high["evidence_value"], high["evidence_threshold"]) == ("high", 1.5, 1.345)


def test_a_capture_glitch_keeps_the_cue_cooldowns():
    """The headset drops out for a moment (``interrupt``): the call ends, the cooldowns do not, so
    a cue that just ended does not come straight back (private mode alone restarts them)."""
    from edge.pipeline import Pipeline, load_vad_model

    raised = {}
    for glitch in (False, True):
        pipe = Pipeline(load_vad_model())
        events = []
        for k in range(35):  # a monologue cue from 30 s, ended at 35 s (cooldown 30 s)
            events += pipe.signals(_tick(float(k), monologue_s_current=float(k)))
        events += pipe.signals(_tick(35.0, monologue_s_current=0.0))
        if glitch:
            pipe.interrupt()
        for k in range(36, 60):  # a second long turn, 31 s long at 45 s: inside the cooldown
            events += pipe.signals(_tick(float(k), monologue_s_current=float(k - 14)))
        raised[glitch] = [e["t_audio_s"] for e in events if e["name"] == "cue_on"]
    assert raised[True] == raised[False] == [30.0]


def test_two_answers_in_one_metrics_window_both_count():
    """With 5 s metrics windows, two slow answers can fall in one: both count (the stage read only
    the window's last latency before), and two of three raise 'prospect hesitating'."""
    sig = Signals()
    sig.event({"name": "call_start", "channel": "far", "t_audio_s": 0.0}, 0.0)
    tick = _tick(5.0, window_s=5.0)
    tick.far_answers = ((1.0, 1.6), (4.5, 1.7))
    on = [e for e in sig(tick) if e["name"] == "cue_on" and e["cue"] == "prospect_hesitating"]
    assert len(on) == 1 and on[0]["evidence_value"] == 2


def test_every_answer_of_a_window_is_checked_for_filled_pauses():
    """Two quick answers in one 5 s window, each holding a filler: both are hesitant (only the
    window's last answer was checked before). A filler in the agent's turn between them, or in the
    first answer's stretch but outside the second, is told apart by each answer's own extent."""
    def run(fillers: tuple[tuple[float, float], ...], mm_hm_s: float | None = None) -> list[dict]:
        sig = Signals()
        for name, ch, t in (("call_start", "far", 0.0), ("speech_start", "near", 2.0),  # between them
                            ("speech_end", "near", 2.6), ("speech_start", "far", 3.0)):
            sig.event({"name": name, "channel": ch, "t_audio_s": t}, t)
        if mm_hm_s is not None:
            sig.event({"name": "speech_start", "channel": "near", "t_audio_s": mm_hm_s}, mm_hm_s)
        tick = _tick(5.0, window_s=5.0, near_talking=False)
        tick.far_answers = ((1.0, 0.4), (3.0, 0.4))  # quick: only a filler makes them hesitant
        tick.far_filled_pauses_s = fillers
        return [e for e in sig(tick) if e["name"] == "cue_on" and e["cue"] == "prospect_hesitating"]

    (on,) = run(((1.2, 1.6), (3.1, 3.5)))
    assert on["evidence_value"] == 2
    assert run(((2.2, 2.6), (3.1, 3.5))) == []  # the first: over the agent's turn, no answer's
    assert run(((1.2, 1.6),)) == []  # one hesitant answer of two
    # the agent's "mm-hm" over the second answer's words does not end it: its filler counts
    (on,) = run(((1.2, 1.6), (3.8, 4.2)), mm_hm_s=3.3)
    assert on["evidence_value"] == 2


def test_an_answer_of_the_call_that_just_ended_does_not_count_in_the_next():
    """Answers come at the window's end: a call that ended and a new one that began inside the
    window do not share them (one slow answer of each call is no hesitating prospect)."""
    sig = Signals()
    sig.event({"name": "call_start", "channel": "far", "t_audio_s": 0.0}, 0.0)
    sig.event({"name": "call_end", "channel": "far", "t_audio_s": 5.09}, 5.09)
    sig.event({"name": "call_start", "channel": "far", "t_audio_s": 5.09}, 5.09)
    tick = _tick(6.0)
    tick.far_answers = ((4.8, 2.0),)  # the last answer of the call that ended
    assert sig(tick) == []
    tick = _tick(14.0)
    tick.far_answers = ((12.96, 2.0),)  # the new call's first slow answer
    assert sig(tick) == []
    tick = _tick(20.0)
    tick.far_answers = ((18.5, 2.0),)  # its second: now two of the call's answers are slow
    assert [(e["name"], e["cue"]) for e in sig(tick)] == [("cue_on", "prospect_hesitating")]


def test_prospect_tense_with_half_second_windows():
    """The affect model reads the prospect once a second; with 0.5 s metrics windows every other
    window has no value: the cue still rises after min_on_s (the missing value restarted its clock
    and it never rose); a value gone for longer than TENSION_HOLD_S still stops it."""
    def run(pattern: list[float | None]) -> list[dict]:
        sig = Signals()
        sig.event({"name": "call_start", "channel": "far", "t_audio_s": 0.0}, 0.0)
        raised = []
        for k, tension in enumerate(pattern):
            metrics = {"window_s": 0.5, "near_speech_ratio": 0.0, "near_talking": False}
            if tension is not None:
                metrics["prospect_tension"] = tension
            raised += [e for e in sig(_tick(0.5 * (k + 1), **metrics)) if e["cue"] == "prospect_tense"]
        return raised

    (on,) = run([0.95, None] * 20)
    assert on["name"] == "cue_on" and 6.0 <= on["t_audio_s"] <= 7.0
    assert run([0.95, None, None, None, None] * 8) == []  # a value every 2.5 s is no steady tension


def test_a_filled_pause_before_any_answer_is_no_crash():
    """The prospect's first words hold a filled pause before any answer was recorded (a call that
    opens on the line): no answer to mark, no error (it raised ValueError from zip)."""
    sig = Signals()
    sig.event({"name": "call_start", "channel": "far", "t_audio_s": 0.0}, 0.0)
    tick = _tick(2.0, near_talking=False, near_speech_ratio=0.0)
    tick.far_filled_pauses_s = ((0.5, 0.9),)
    assert sig(tick) == []


def _paced(base_syl_s: float, paces: list[float]) -> list[dict]:
    """Rate cue events of an agent with a ``base_syl_s`` baseline, one second at each pace."""
    from edge.rate import RateWindow

    sig = Signals()
    _ready(sig, pace=base_syl_s)
    out = []
    for k, pace in enumerate(paces):
        tick = _tick(float(k))
        tick.short = tick.slow = RateWindow(0.8, 20, pace, pace, 1)
        out += [e for e in sig(tick) if e["cue"] in ("too_fast", "too_slow")]
    return out


def test_a_rate_cue_holds_while_past_the_band_and_escalates_without_repeating():
    """Past the campaign's band (8.5 syl/s) the cue holds even within the agent's own habit (8.0:
    ratio 1.075, under ratio_off); a high cue calming to medium sends nothing new; it ends under
    ratio_off once the pace is back in the band."""
    out = _paced(8.0, [8.6] * 30 + [7.0] * 6)
    assert [(e["name"], e["t_audio_s"]) for e in out] == [("cue_on", 0.0), ("cue_off", 33.0)]
    out = _paced(7.0, [10.5] * 5 + [9.5] * 5)
    assert [(e["name"], e["severity"]) for e in out] == [("cue_on", "high")]


def test_monotone_ends_only_over_ratio_off():
    """A monotone cue raised at a third of the agent's pitch range holds at 0.6 of it (between
    ratio_on 0.5 and ratio_off 0.7), and ends after min_off_s at 0.8."""
    sig = Signals()
    _ready(sig)
    out = []
    for k, rng in enumerate([2.0] * 12 + [3.6] * 20 + [4.8] * 8):
        tick = _tick(float(k))
        tick.long = _window(pitch_range_st=rng)
        out += [(e["name"], e["t_audio_s"]) for e in sig(tick) if e["cue"] == "monotone"]
    assert out == [("cue_on", 9.0), ("cue_off", 36.0)]


def test_the_cue_budget_is_per_rolling_hour():
    """One cue an hour: the second monologue is refused, the one an hour after the first is raised."""
    cfg = campaign.from_mapping({"alerts": {"budget_per_hour": 1}, "monologue": {"cooldown_s": 0}})
    sig = Signals(cfg)
    raised = []
    for start in (0.0, 1000.0, 3700.0):
        for k in range(46):
            raised += [e["t_audio_s"] for e in sig(_tick(start + k, monologue_s_current=float(k)))
                       if e["name"] == "cue_on"]
        sig(_tick(start + 46, monologue_s_current=0.0))
    assert raised == [30.0, 3730.0] and sig.suppressed_by_budget == 1


def test_the_prospect_talking_over_the_agent_is_not_the_agent_talking_over():
    """'Don't talk over the prospect' reads the agent's overlaps only: the prospect starting over
    the agent for 1.5 s raises nothing; the agent doing the same raises it."""
    for starter, expected in (("far", []), ("near", ["talking_over"])):
        sig = Signals()
        first = "near" if starter == "far" else "far"
        for name, ch, t, extra in (("call_start", "far", 0.0, {}), ("speech_start", first, 1.0, {}),
                                   ("speech_start", starter, 3.0, {}), ("overlap_start", starter, 3.0, {}),
                                   ("speech_end", starter, 4.5, {}),
                                   ("overlap_end", starter, 4.5, {"duration_s": 1.5})):
            sig.event({"name": name, "channel": ch, "t_audio_s": t, **extra}, t)
        assert [e["cue"] for e in sig(_tick(5.0)) if e["name"] == "cue_on"] == expected


def test_no_pause_needs_the_agent_speaking_most_of_the_run():
    """No pause in the short window for 25 s, but the agent speaking only 60 % of each second (the
    gaps longer than a pause): no 'pause and breathe'; at 90 % it is raised at 20 s."""
    from edge.rate import RateWindow

    for share, expected in ((0.6, []), (0.9, [19.0])):
        sig = Signals()
        raised = []
        for k in range(25):
            tick = _tick(float(k), near_speech_ratio=share)
            tick.short = RateWindow(0.8, 20, 5.0, 5.0, 0)
            raised += [e["t_audio_s"] for e in sig(tick) if e["cue"] == "no_pause" and e["name"] == "cue_on"]
        assert raised == expected, share


def test_a_quiet_line_while_the_agent_talks_is_no_hold():
    """The agent talks on for 35 s over a quiet line (the prospect listens): that is no hold (a
    quiet line counts only while the agent is quiet too), so the monologue cue still comes."""
    sig = Signals()
    raised = []
    for k in range(35):
        raised += [e["cue"] for e in sig(_tick(float(k), far_kind="silence", monologue_s_current=float(k)))
                   if e["name"] == "cue_on"]
    assert raised == ["monologue"]


def test_a_cue_raised_after_the_call_end_is_not_in_its_summary():
    """A call's end is known late: a cue raised after the time the call ended is not the call's
    (it counted one monologue of -5 s)."""
    sig = Signals()
    sig.event({"name": "call_start", "channel": "far", "t_audio_s": 0.0}, 0.0)
    for k in range(31):
        sig(_tick(float(k), monologue_s_current=float(k)))
    end = {"name": "call_end", "channel": "far", "t_audio_s": 25.0}
    sig.event(end, 31.0)
    assert end["call_cue_monologue_n"] == 0 and end["call_cue_monologue_s"] == 0.0 and end["call_cues"] == 0


def test_the_baseline_pace_reads_no_window_reaching_before_the_call():
    """The call starts at 100 s: the 3 s rate windows that still hold speech from before it (a
    colleague, the last call) are not the agent's pace; from 103 s they are."""
    import dataclasses

    from edge.rate import RateWindow

    sig = Signals()
    sig.event({"name": "call_start", "channel": "far", "t_audio_s": 100.0}, 100.0)
    for t in range(101, 110):
        tick = _tick(float(t))
        tick.long = dataclasses.replace(_window(), start_s=t - 10.0, end_s=float(t))
        tick.short = RateWindow(0.8, 20, 9.0 if t < 103 else 6.0, 9.0 if t < 103 else 6.0, 1)
        sig(tick)
    assert sig.baseline.pace_syl_s == [6.0] * 7
