"""Known metric and cue names with their labels (FR/EN) and units.

The box publishes scalar fields in its ``metrics`` messages (the wire allow-list grows as the
signals land); the dashboard charts every numeric column of the ``metrics`` table whose name is
known here, with an optional ``near_`` (agent) or ``far_`` (prospect) prefix. Unknown names are
ignored, so a new signal only needs a line here to appear in the charts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MetricInfo:
    """Labels and unit of one metric base name."""

    fr: str
    en: str
    unit: str = ""
    better: str = ""
    """``down`` or ``up`` when a direction is usually the goal, else empty."""


METRICS: dict[str, MetricInfo] = {
    "speech_ratio": MetricInfo("Temps de parole", "Speech share", "%"),
    "rate_syl_s": MetricInfo("Débit, écoute comprise", "Speech rate, listening included",
                             "syll/s", "down"),
    "articulation_rate_syl_s": MetricInfo("Débit articulatoire", "Articulation rate", "syll/s",
                                          "down"),
    "pitch_range_st": MetricInfo("Étendue de la voix", "Pitch range", "st", "up"),
    "pitch_movement_st_s": MetricInfo("Mélodie", "Pitch movement", "st/s", "up"),
    "f0_median_hz": MetricInfo("Hauteur médiane", "Median pitch", "Hz"),
    "level_dbfs": MetricInfo("Volume", "Loudness", "dBFS"),
    "hnr_db": MetricInfo("Clarté de la voix", "Voice clarity (HNR)", "dB"),
    "jitter": MetricInfo("Instabilité de la hauteur (jitter)", "Pitch instability (jitter)", "%"),
    "shimmer": MetricInfo("Instabilité du volume (shimmer)", "Loudness instability (shimmer)",
                          "%"),
    "voiced_ratio": MetricInfo("Part voisée", "Voiced share", "%"),
    "pauses_per_min": MetricInfo("Pauses", "Pauses", "/min", "up"),
    "breaths_per_min": MetricInfo("Respirations", "Breaths", "/min", "up"),
    "hesitations_per_min": MetricInfo("Hésitations (« euh »)", "Hesitations (\"um\")", "/min",
                                      "down"),
    "agent_share_60s": MetricInfo("Part de parole de l'agent (60 s)",
                                  "Agent's share of the talk (60 s)", "%", "down"),
    "monologue_s_current": MetricInfo("Monologue en cours", "Current monologue", "s", "down"),
    "latency_agent_ms_median_60s": MetricInfo("Délai de réponse de l'agent (60 s)",
                                              "Agent's response time (60 s)", "ms"),
    "latency_prospect_ms_median_60s": MetricInfo("Délai de réponse du prospect (60 s)",
                                                 "Prospect's response time (60 s)", "ms"),
    "overlaps_agent_60s": MetricInfo("Chevauchements lancés par l'agent (60 s)",
                                     "Overlaps the agent started (60 s)", "", "down"),
    "interruptions_agent_60s": MetricInfo("Interruptions par l'agent (60 s)",
                                          "Interruptions by the agent (60 s)", "", "down"),
    "prospect_tension": MetricInfo("Prospect — tension", "Prospect — tension", "%"),
    "prospect_arousal": MetricInfo("Prospect — activation", "Prospect — arousal", "%"),
    "fatigue_index": MetricInfo("Fatigue", "Fatigue", "", "down"),
    "fatigue_phonation_min": MetricInfo("Temps de phonation", "Phonation time", "min", "down"),
}
"""Every metric the pages chart, by the box's own field name (``miroir.wire``, with ``near_`` or
``far_`` for a per-side one; a test keeps them equal): label, unit, better direction. A ``%``
metric is a 0..1 share on the wire, shown times 100."""
CHART_MIN_SPAN: dict[str, float] = {
    "speech_ratio": 100, "voiced_ratio": 100, "agent_share_60s": 100,
    "prospect_tension": 100, "prospect_arousal": 100, "fatigue_index": 100,
    "rate_syl_s": 2, "articulation_rate_syl_s": 2,
    "pitch_range_st": 4, "pitch_movement_st_s": 4, "f0_median_hz": 30,
    "level_dbfs": 10, "hnr_db": 6, "jitter": 2, "shimmer": 5,
    "pauses_per_min": 10, "breaths_per_min": 10, "hesitations_per_min": 5,
    "monologue_s_current": 30, "latency_agent_ms_median_60s": 2000,
    "latency_prospect_ms_median_60s": 2000, "overlaps_agent_60s": 3,
    "interruptions_agent_60s": 3, "fatigue_phonation_min": 10,
}
"""The least a metric's line chart spans, in the unit it is shown in (a share in %), so that noise
looks small and only a change a coach should notice fills the chart (docs/cues.md): a share or a
0..100 score its whole scale; loudness 10 dB (``low_energy`` is 6 dB under the baseline); pace
2 syl/s (``too_fast``/``too_slow`` are 1.23x and 0.83x of about 4-5 syl/s); pitch 4 semitones,
about 30 Hz at a speaking voice's 150 Hz; a monologue its 30 s cue; a response time its 2 s
cue; counts per minute or per 60 s a few of them."""
NO_DAILY_MEAN: dict[str, str] = {
    "monologue_s_current": "instantaneous", "fatigue_phonation_min": "cumulative",
}
"""Metrics whose mean over a day means nothing: ``instantaneous``, the turn going on at each
second (a 40 s monologue counts 1 to 40); ``cumulative``, growing through the shift (the mean
says how long the shift was). Neither a goal nor a team mean is made of them."""
PROSPECT_ONLY = ("prospect_tension", "prospect_arousal", "latency_prospect_ms_median_60s")
"""Metrics of the prospect's voice alone (as every ``far_`` one): no goal of the agent's."""
CHANNELS = {"near": ("Agent", "Agent"), "far": ("Prospect", "Prospect")}

READS: dict[str, tuple[str, ...]] = {
    "agent_share_60s": ("near", "far"), "monologue_s_current": ("near",),
    "latency_agent_ms_median_60s": ("near", "far"), "latency_prospect_ms_median_60s": ("near", "far"),
    "overlaps_agent_60s": ("near", "far"), "interruptions_agent_60s": ("near", "far"),
    "prospect_tension": ("far",), "prospect_arousal": ("far",), "fatigue_index": ("near",),
    "fatigue_phonation_min": ("near",),
}
"""The channels a metric without a ``near_``/``far_`` prefix reads (the box leaves it out while
one of them has no signal: docs/wire.md)."""

FATIGUE_FACTORS: dict[str, tuple[str, str]] = {
    "pitch": ("voix plus aiguë", "higher pitch"),
    "pitch_range": ("voix moins modulée", "narrower pitch range"),
    "level": ("voix plus faible", "quieter voice"),
    "rate": ("débit plus lent", "slower speech"),
    "hnr": ("voix plus voilée", "breathier voice"),
    "jitter": ("hauteur moins régulière", "less regular pitch"),
    "shimmer": ("volume moins régulier", "less regular loudness"),
    "latency": ("réponses plus lentes", "slower answers"),
}
"""(French, English) of each factor of the fatigue index, named by the way the voice moved towards
fatigue: the box publishes each as ``fatigue_<factor>_z``, its drift from the agent's own baseline
in standard errors, positive towards fatigue (``edge.fatigue``; a test keeps the names equal)."""
FACTOR_NOISE_Z = 1.0
"""Drifts under this many standard errors are measurement noise (``fatigue.drift_zero``'s
default): the page names only the factors above it."""

CUES: dict[str, tuple[str, str]] = {
    "too_fast": ("Ralentissez", "Slow down"),
    "too_slow": ("Accélérez un peu", "Pick up the pace"),
    "monologue": ("Laissez parler le prospect", "Let the prospect speak"),
    "no_pause": ("Faites une pause, respirez", "Pause and breathe"),
    "monotone": ("Variez votre intonation", "Vary your tone"),
    "talking_over": ("Ne coupez pas la parole au prospect", "Don't talk over the prospect"),
    "slow_response": ("Le prospect attend votre réponse", "The prospect is waiting for you"),
    "low_energy": ("Plus d'énergie dans la voix", "Speak up, more energy"),
    "prospect_hesitating": ("Le prospect hésite", "Prospect hesitating"),
    "prospect_tense": ("Le prospect est tendu", "Prospect tense"),
    "take_break": ("Prenez une courte pause", "Take a short break"),
}
"""(French, English) label of every cue id of the wire (``cue`` on a ``cue_on`` event): the box's
own labels (``edge.signals.CUES``, kept equal by a test)."""

CUE_EVIDENCE: dict[str, tuple[str, str, str]] = {
    "too_fast": ("ratio", "débit à {value} × la référence (seuil {threshold} ×)",
                 "tempo at {value} × the baseline (threshold {threshold} ×)"),
    "too_slow": ("ratio", "débit à {value} × la référence (seuil {threshold} ×)",
                 "pace at {value} × the baseline (threshold {threshold} ×)"),
    "monologue": ("s", "tour de parole qui dure déjà {value} s (seuil {threshold} s)",
                  "a turn already {value} s long (threshold {threshold} s)"),
    "no_pause": ("s", "{value} s de parole sans pause (seuil {threshold} s)",
                 "{value} s of speech without a pause (threshold {threshold} s)"),
    "monotone": ("ratio", "étendue de la voix à {value} × la référence (seuil {threshold} ×)",
                 "pitch range at {value} × the baseline (threshold {threshold} ×)"),
    "talking_over": ("s", "chevauchement de {value} s (seuil {threshold} s)",
                     "an overlap of {value} s (threshold {threshold} s)"),
    "slow_response": ("s", "{value} s de silence après le prospect (seuil {threshold} s)",
                      "{value} s of silence after the prospect (threshold {threshold} s)"),
    "low_energy": ("db", "voix {value} dB sous la référence (seuil {threshold} dB)",
                   "voice {value} dB under the baseline (threshold {threshold} dB)"),
    "prospect_hesitating": ("answers", "{value} réponses hésitantes sur les dernières "
                            "(seuil {threshold})",
                            "{value} hesitant answers among the latest (threshold {threshold})"),
    "prospect_tense": ("ratio", "tension {value} sur 1 (seuil {threshold})",
                       "tension {value} out of 1 (threshold {threshold})"),
    "take_break": ("index", "indice de fatigue {value} sur 100 (seuil {threshold})",
                   "fatigue index {value} out of 100 (threshold {threshold})"),
}
"""(unit, French, English) of what raised each cue, as a coach reads it: the event's
``evidence_value`` and ``evidence_threshold`` in the ``evidence_unit`` the box sends for that cue
(``edge.signals.CUES``, kept equal by a test; "la référence" is the agent's own baseline)."""


def cue_evidence(name: str, unit: str | None, lang: str = "fr") -> str | None:
    """The words of a cue's evidence with ``{value}`` and ``{threshold}`` to fill, or None when
    the cue is unknown or its evidence comes in another unit."""
    known = CUE_EVIDENCE.get(name)
    if known is None or known[0] != unit:
        return None
    return known[2] if lang == "en" else known[1]


def split(name: str) -> tuple[str | None, str]:
    """``near_rate_syl_s`` -> (``near``, ``rate_syl_s``)."""
    for ch in CHANNELS:
        if name.startswith(ch + "_"):
            return ch, name[len(ch) + 1:]
    return None, name


def known(name: str) -> bool:
    """True if ``name`` is a charted metric (possibly channel-prefixed)."""
    return split(name)[1] in METRICS


UNITS_FR = {"st": "demi-tons", "st/s": "demi-tons/s"}
"""The units a French page writes otherwise than :data:`METRICS` (English): "st", the English
abbreviation of semitones, means nothing to a French coach."""


def describe(name: str, lang: str = "fr") -> dict[str, Any]:
    """Label, unit (in ``lang``) and direction of a metric column for the interface."""
    ch, base = split(name)
    info = METRICS[base]
    label = info.en if lang == "en" else info.fr
    unit = info.unit if lang == "en" else UNITS_FR.get(info.unit, info.unit)
    if ch is not None:
        who = CHANNELS[ch][1 if lang == "en" else 0]
        label = f"{who} — {label}"
    return {"name": name, "label": label, "unit": unit, "better": info.better,
            "min_span": CHART_MIN_SPAN.get(base, 0), "goal": goal_metric(name), "channel": ch,
            "reads": [ch] if ch is not None else list(READS.get(base, ()))}


def daily_mean_meaningful(name: str) -> bool:
    """True if a day's mean of the metric column ``name`` means something (:data:`NO_DAILY_MEAN`)."""
    return split(name)[1] not in NO_DAILY_MEAN


def goal_metric(name: str) -> bool:
    """True if the metric column ``name`` can be an agent's goal: the agent's own voice or talk,
    with a daily mean that means something (never the prospect's: ``far_``, :data:`PROSPECT_ONLY`)."""
    ch, base = split(name)
    return daily_mean_meaningful(name) and ch != "far" and base not in PROSPECT_ONLY


def factor_column(factor: str) -> str:
    """The metrics column of a fatigue factor (``pitch`` -> ``fatigue_pitch_z``)."""
    return f"fatigue_{factor}_z"


def describe_factor(factor: str, lang: str = "fr") -> dict[str, Any]:
    """Column and label of a fatigue factor for the interface."""
    fr, en = FATIGUE_FACTORS[factor]
    return {"name": factor_column(factor), "label": en if lang == "en" else fr}


def metric_columns(columns: list[str]) -> list[str]:
    """The known metric names among a table's columns, in the registry's order."""
    order = {base: i for i, base in enumerate(METRICS)}
    found = [c for c in columns if known(c)]
    channel_order = {"near": 0, "far": 1, None: 2}
    return sorted(found, key=lambda c: (order[split(c)[1]], channel_order[split(c)[0]]))


def cue_label(name: str, lang: str = "fr") -> str:
    """Label of a cue event (its raw name when unknown)."""
    labels = CUES.get(name)
    if labels is None:
        return name.replace("_", " ")
    return labels[1] if lang == "en" else labels[0]
