"""Accuracy of the conversation metrics on two-channel calls built from real EmoDB utterances.

Each call alternates an agent (near channel, male speakers) and a prospect (far channel, female
speakers, band-limited to 300-3400 Hz like a phone line) with chosen gaps and overlaps. The truth is
the utterances' speech spans from the EmoDB ``lablaut/`` phone labels (first phone onset to the
``.`` end mark), never the project's VAD. The whole edge pipeline (Silero VAD, speech gates) runs
over the mix and feeds :class:`edge.conversation.Conversation` with the wiring the pipeline uses.

Run ``python -m bench.accuracy_conversation`` for the figures as JSON; ``conversation_figures()`` is
what ``bench.accuracy`` and ``tests/test_conversation.py`` call; ``noisy_line_figures()`` runs the
same calls with real noise on both channels.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.common import SHARED as DATA
from bench.common import read_wav
from edge.conversation import (
    AGENT,
    PROSPECT,
    CallSummary,
    Conversation,
    ConversationConfig,
    Event,
    Overlap,
    Response,
)
from edge.frames import RATE_HZ  # the EmoDB clips' rate too

EMODB = DATA / "emodb"
NOISE = DATA / "noise"
NOISY_LINE_DBFS = -45.0
"""The noise level of ``noisy_line_figures``: a loud but usable line or open-plan floor."""
CLIP_S = 2.0
"""Length of every EmoDB clip here (cut or padded to 2.0 s)."""
AGENT_SPEAKERS = ("03", "10", "12", "15")
PROSPECT_SPEAKERS = ("08", "09", "13", "16")
TAIL_S = 25.0
"""Silence after the last utterance: longer than the call-end timeout, so the call ends on silence."""
MATCH_S = 0.5
"""A measured overlap or response matches a true one of the same side starting this close."""
_LINE = re.compile(r"^\s*([0-9.]+)\s+-?\d+\s?(.*)$")


@functools.cache
def speech_span(name: str) -> tuple[float, float] | None:
    """Speech span (first phone onset, ``.`` end mark) of an EmoDB clip, seconds; None if unlabelled.

    The ``lablaut`` files are xlabel files: after the ``#`` line, one ``time -1 phone[\\tmarks]`` line
    per phone onset; a line with an empty phone only carries marks; ``(`` starts a pause or breath
    and ``.`` marks the end of the utterance.
    """
    path = EMODB / "lablaut" / f"{name}xx.lablaut"
    if not path.exists():
        return None
    lines = path.read_text(errors="replace").splitlines()
    if "#" not in lines:
        return None
    phones = []
    for line in lines[lines.index("#") + 1:]:
        m = _LINE.match(line)
        if m and m.group(2).split("\t")[0].strip():
            phones.append((float(m.group(1)), m.group(2).split("\t")[0].strip()))
    ends = [t for t, p in phones if p == "."]
    if not phones or not ends or phones[0][1] in (".", "("):
        return None
    return phones[0][0], ends[-1]


def _rms_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-9))


@functools.cache
def clean_clips() -> dict[str, list[str]]:
    """Clips whose labelled span is the whole utterance, by speaker.

    Kept: no pause or breath label inside, the end mark before 1.9 s (so the 2.0 s cut did not
    truncate the speech), and nothing louder than -40 dBFS outside the labelled span.
    """
    out: dict[str, list[str]] = {}
    for wav in sorted((EMODB / "wav").glob("*.wav")):
        name = wav.stem
        span = speech_span(name)
        lab = (EMODB / "lablaut" / f"{name}xx.lablaut").read_text(errors="replace") if span else ""
        if span is None or re.search(r"-1 \(", lab) or span[1] > 1.9:
            continue
        x = read_wav(wav)
        i0, i1 = int(span[0] * RATE_HZ), int(span[1] * RATE_HZ)
        outside = [part for part in (x[: max(0, i0 - 160)], x[i1 + 160:]) if len(part) > 160]
        if any(_rms_db(part) > -40.0 for part in outside):
            continue
        out.setdefault(name[:2], []).append(name)
    return out


@dataclass
class CallMix:
    """A built two-channel call and its true speech spans."""

    audio: np.ndarray
    """(2, n) float32 at 16 kHz: near (agent) then far (prospect)."""
    spans: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """True speech spans per channel (``near``, ``far``), seconds."""


def _line_filter(x: np.ndarray) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    sos = butter(4, [300, 3400], btype="bandpass", fs=RATE_HZ, output="sos")
    return np.asarray(sosfilt(sos, x), dtype=np.float32)


def build_call(seed: int, turns: int = 16, lead_s: float = 1.5, noise_dbfs: float | None = None
               ) -> CallMix:
    """Build one call: turns alternate, the prospect first; about a third start as overlaps.

    Args:
        seed: chooses speakers, utterances, gaps (0.25 to 1.5 s) and overlaps (0.3 to 0.7 s).
        turns: number of turns.
        lead_s: silence before the first utterance, seconds.
        noise_dbfs: if set, a noisy line and headset: one of the shared real noises (looped) on
            each channel at this RMS level, the line's through the same phone band first.

    Returns:
        The mix (with ``TAIL_S`` of silence at the end) and its true spans.
    """
    rng = np.random.default_rng(seed)
    clips = clean_clips()
    pools = {AGENT: list(clips[str(rng.choice(AGENT_SPEAKERS))]),
             PROSPECT: list(clips[str(rng.choice(PROSPECT_SPEAKERS))])}
    for pool in pools.values():
        rng.shuffle(pool)
    placed: list[tuple[str, str, float]] = []  # (channel, clip, clip offset in the call)
    spans: dict[str, list[tuple[float, float]]] = {AGENT: [], PROSPECT: []}
    used = {AGENT: 0, PROSPECT: 0}

    def place(ch: str, span_start_s: float) -> float:
        name = pools[ch][used[ch] % len(pools[ch])]
        used[ch] += 1
        s, e = speech_span(name) or (0.0, CLIP_S)
        offset = span_start_s - s
        placed.append((ch, name, offset))
        spans[ch].append((span_start_s, offset + e))
        return offset + e

    end = {AGENT: 0.0, PROSPECT: 0.0}
    for k in range(turns):
        ch = PROSPECT if k % 2 == 0 else AGENT
        other = AGENT if ch == PROSPECT else PROSPECT
        if k == 0:
            start = lead_s
        else:
            overlap = rng.random() < 0.35
            start = end[other] + (-float(rng.uniform(0.3, 0.7)) if overlap  # overlap the other's end
                                  else float(rng.uniform(0.25, 1.5)))  # or respond after a gap
            if start < end[ch] + 1.0:  # never continue one's own previous turn
                start = end[other] + float(rng.uniform(0.25, 1.5))
        end[ch] = place(ch, start)
        if ch == AGENT and rng.random() < 0.4:  # a two-utterance agent turn (pause < turn gap)
            end[ch] = place(ch, end[ch] + float(rng.uniform(0.3, 0.45)))
    total_s = max(end.values()) + TAIL_S
    audio = np.zeros((2, int(total_s * RATE_HZ)), dtype=np.float32)
    for ch, name, offset in placed:
        x = read_wav(EMODB / "wav" / f"{name}.wav")
        row = 0 if ch == AGENT else 1
        i = round(offset * RATE_HZ)
        audio[row, i:i + len(x)] += x
    audio[1] = _line_filter(audio[1])
    audio += rng.normal(0.0, 10 ** (-65 / 20), audio.shape).astype(np.float32)  # a quiet floor
    if noise_dbfs is not None:
        noises = sorted(NOISE.glob("*.wav"))
        if not noises:
            raise FileNotFoundError(f"no noise recordings in {NOISE}: see ../shared/data/README.md")
        for row in (0, 1):
            nz = read_wav(noises[(seed + row) % len(noises)])
            nz = np.tile(nz, audio.shape[1] // len(nz) + 1)[:audio.shape[1]]
            nz = _line_filter(nz) if row == 1 else nz  # the line's noise comes through its band
            audio[row] += nz * (10 ** (noise_dbfs / 20) / np.sqrt(np.mean(nz ** 2)))
    return CallMix(audio=audio, spans=spans)


CONVERSATION_EVENTS = frozenset({"call_start", "call_end", "overlap_start", "overlap_end",
                                 "interruption"})
"""The events of the conversation stage (the pipeline adds speech, far-end and cue events)."""


def run_pipeline(audio: np.ndarray, model: Any, config: ConversationConfig | None = None,
                 block_s: float = 0.1) -> tuple[Conversation, list[Event]]:
    """Run the whole edge pipeline over ``audio`` in blocks, its conversation stage keeping history.

    Returns:
        The pipeline's own conversation stage and the conversation events it published (the end
        of stream included), as the box sends them.
    """
    from edge.pipeline import Pipeline

    pipe = Pipeline(model, conversation=config or ConversationConfig(keep_history=True))
    step = int(block_s * RATE_HZ)
    messages = [m for i in range(0, audio.shape[1], step) for m in pipe(audio[:, i:i + step])]
    messages += pipe.finish()
    events = [m.body for m in messages if m.kind == "event" and m.body["name"] in CONVERSATION_EVENTS]
    return pipe.conversation, events


# ------------------------------------------------------------------------------------- truth
def _turns(spans: list[tuple[float, float]], gap_s: float) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s, e in sorted(spans):
        if out and s - out[-1][1] < gap_s:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def true_overlaps(spans: dict[str, list[tuple[float, float]]]) -> list[tuple[float, float, str]]:
    """Every interval where a near span and a far span intersect: (start, end, starter channel)."""
    out = []
    for ns, ne in spans[AGENT]:
        for fs, fe in spans[PROSPECT]:
            if min(ne, fe) > max(ns, fs):
                out.append((max(ns, fs), min(ne, fe), AGENT if ns > fs else PROSPECT))
    return sorted(out)


def true_interruptions(spans: dict[str, list[tuple[float, float]]], config: ConversationConfig
                       ) -> int:
    """Overlaps after which the overlapped side stopped first, within the yield time, while in a turn
    begun at least the hold time before."""
    n = 0
    for start, end, starter in true_overlaps(spans):
        other = AGENT if starter == PROSPECT else PROSPECT
        own = next(e for s, e in spans[starter] if s <= start < e)
        turn = next(s for s, e in _turns(spans[other], config.turn_gap_s) if s <= start < e)
        n += (own > end and end - start <= config.interrupt_yield_s
              and start - turn >= config.interrupt_hold_s)
    return n


def true_responses(spans: dict[str, list[tuple[float, float]]], gap_s: float
                   ) -> list[tuple[str, float, float]]:
    """(channel, turn start, latency) for each turn starting after the other side spoke last."""
    call_start = min(s for s, _ in spans[PROSPECT])
    out = []
    for ch, other in ((AGENT, PROSPECT), (PROSPECT, AGENT)):
        for start, _ in _turns(spans[ch], gap_s):
            if any(s <= start < e for s, e in spans[other]):
                continue  # started in overlap
            other_end = max((e for _, e in spans[other] if e <= start), default=None)
            own_end = max((e for _, e in spans[ch] if e <= start), default=None)
            if other_end is None or other_end < call_start:
                continue
            if own_end is not None and own_end >= other_end:
                continue
            out.append((ch, start, start - other_end))
    return sorted(out, key=lambda r: r[1])


def true_agent_share(spans: dict[str, list[tuple[float, float]]]) -> float:
    """Agent speech / all speech, from the true spans."""
    near = sum(e - s for s, e in spans[AGENT])
    far = sum(e - s for s, e in spans[PROSPECT])
    return near / (near + far)


def _match(truth: list[tuple[str, float]], found: list[tuple[str, float]]) -> list[int | None]:
    """For each true (channel, time), the index of the closest unused found item of that channel."""
    used: set[int] = set()
    out: list[int | None] = []
    for ch, t in truth:
        best = None
        for i, (fch, ft) in enumerate(found):
            if i in used or fch != ch or abs(ft - t) > MATCH_S:
                continue
            if best is None or abs(ft - t) < abs(found[best][1] - t):
                best = i
        if best is not None:
            used.add(best)
        out.append(best)
    return out


def score_call(mix: CallMix, conv: Conversation) -> dict[str, Any]:
    """Compare one call's measured overlaps, latencies and talk share with the truth."""
    assert conv.history is not None
    gap_s = conv.config.turn_gap_s
    t_ov = true_overlaps(mix.spans)
    f_ov: list[Overlap] = conv.history.overlaps
    m_ov = _match([(ch, s) for s, _, ch in t_ov], [(o.starter, o.start_s) for o in f_ov])
    ov_err = [abs(f_ov[i].duration_s - (e - s)) for (s, e, _), i in zip(t_ov, m_ov, strict=True)
              if i is not None]
    t_rs = true_responses(mix.spans, gap_s)
    f_rs: list[Response] = conv.history.responses
    m_rs = _match([(ch, t) for ch, t, _ in t_rs], [(r.channel, r.t_s) for r in f_rs])
    lat_err = [abs(f_rs[i].latency_s - lat) for (_, _, lat), i in zip(t_rs, m_rs, strict=True)
               if i is not None]
    calls: list[CallSummary] = conv.history.calls
    share = calls[0].agent_share if calls and calls[0].agent_share is not None else 0.0
    return {
        "overlaps_true": len(t_ov),
        "overlaps_found": len(f_ov),
        "overlaps_matched": sum(i is not None for i in m_ov),
        "overlap_errs_s": ov_err,
        "responses_true": len(t_rs),
        "responses_found": len(f_rs),
        "responses_matched": sum(i is not None for i in m_rs),
        "latency_errs_s": lat_err,
        "interruptions_true": true_interruptions(mix.spans, conv.config),
        "interruptions_found": sum(o.interruption for o in f_ov),
        "agent_share_true": true_agent_share(mix.spans),
        "agent_share": share,
        "calls": len(calls),
        "call_end_reason": calls[0].end_reason if calls else None,
    }


SEEDS = tuple(range(1, 16))
"""Fifteen built calls (5.4 s to build and run on 2026-11-29, on a 2-core AMD EPYC; about 45 s on the
slower machine): three were too few to tell a typical call from a lucky one."""


@functools.cache
def call_scores(seeds: tuple[int, ...] = SEEDS, noise_dbfs: float | None = None
                ) -> tuple[dict[str, Any], ...]:
    """Build, run and score one call per seed (cached: the tests and the bench share it)."""
    from edge.pipeline import load_vad_model

    model = load_vad_model()
    out = []
    for seed in seeds:
        mix = build_call(seed, noise_dbfs=noise_dbfs)
        conv, _ = run_pipeline(mix.audio, model)
        out.append(score_call(mix, conv))
    return tuple(out)


def conversation_figures(seeds: tuple[int, ...] = SEEDS, noise_dbfs: float | None = None
                         ) -> dict[str, Any]:
    """The conversation accuracy figures over the built calls (on noisy lines: ``noise_dbfs``).

    Returns:
        ``overlap_count_exact`` (every call's overlap count equals the truth's, each matched),
        ``latency_err_ms_median``, ``overlap_err_ms_median`` (median absolute errors over all
        matched items, ms), ``talk_ratio_err_pts`` (largest absolute error of the agent's share of
        speech over the calls, percentage points), ``talk_ratio_err_pts_median``,
        ``talk_ratio_calls_within_2_pts``, and counts.
    """
    scores = call_scores(seeds, noise_dbfs)
    lat = [e for s in scores for e in s["latency_errs_s"]]
    ovl = [e for s in scores for e in s["overlap_errs_s"]]
    share = [abs(s["agent_share"] - s["agent_share_true"]) * 100 for s in scores]
    return {
        "overlap_count_exact": all(s["overlaps_found"] == s["overlaps_true"] == s["overlaps_matched"]
                                   for s in scores),
        "latency_err_ms_median": round(statistics.median(lat) * 1000, 1) if lat else None,
        "overlap_err_ms_median": round(statistics.median(ovl) * 1000, 1) if ovl else None,
        "talk_ratio_err_pts": round(max(share), 2),
        "talk_ratio_err_pts_median": round(statistics.median(share), 2),
        "talk_ratio_calls_within_2_pts": sum(e <= 2.0 for e in share),
        "conversation_calls": len(scores),
        "overlaps_true": sum(s["overlaps_true"] for s in scores),
        "responses_true": sum(s["responses_true"] for s in scores),
        "responses_matched": sum(s["responses_matched"] for s in scores),
    }


def noisy_line_figures(seeds: tuple[int, ...] = SEEDS) -> dict[str, Any]:
    """The talk ratio and latency figures of the same calls on noisy lines (``NOISY_LINE_DBFS``).

    Returns:
        ``talk_ratio_err_pts_noisy``, ``talk_ratio_err_pts_median_noisy``,
        ``latency_err_ms_median_noisy``, ``responses_matched_noisy`` of ``responses_true``.
    """
    f = conversation_figures(seeds, NOISY_LINE_DBFS)
    return {"talk_ratio_err_pts_noisy": f["talk_ratio_err_pts"],
            "talk_ratio_err_pts_median_noisy": f["talk_ratio_err_pts_median"],
            "latency_err_ms_median_noisy": f["latency_err_ms_median"],
            "responses_matched_noisy": f["responses_matched"]}


def main(argv: list[str] | None = None) -> int:
    """Print the conversation accuracy figures as JSON."""
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     description="Conversation-metric accuracy on calls built from "
                                                 "EmoDB utterances, truth from the phone labels.")
    parser.add_argument("--detail", action="store_true", help="also print per-call scores")
    args = parser.parse_args(argv)
    out = {**conversation_figures(), **noisy_line_figures()}
    if args.detail:
        out["detail"] = [{k: v for k, v in s.items() if not k.endswith("errs_s")}
                         for s in call_scores()]
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
