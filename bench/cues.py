"""How the posture cues generalise: the test calls rebuilt with eight agents and two or four seeds.

``tests/test_signals.py`` proves the cues on one agent (EmoDB speaker 08) and one prospect. This
benchmark rebuilds the same calls (``tests/_fixtures_signals.py``: a clean call with injected events
and a steady call with none), and a slow call (a stretch at 0.7x tempo) with each EmoDB speaker who
has neutral clips as the agent, and runs the whole pipeline (``edge.pipeline.analyze``) on each. It
prints one JSON object: per injected cue the share detected, the share within 3 s and the median
delay; the precision on the clean and slow calls; and the cues per hour on the steady calls. Run
``python -m bench.cues`` (``--seeds 4`` for 32 calls of each kind). On 2026-11-29, on a 2-core
AMD EPYC shared with other jobs, the default run took 2 min 16 s and ``--held-out`` 2 min 25 s
(about 10 minutes each on the slower machine the defaults were chosen on). The default calls are
those the pace cues' defaults were chosen on (:data:`TUNING_SEEDS`): ``--held-out`` runs only the
others.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

import tests._fixtures_signals as calls
from edge.pipeline import analyze, load_vad_model

PAIRS = (("08", "03"), ("03", "08"), ("09", "13"), ("13", "09"), ("15", "16"), ("16", "15"),
         ("10", "12"), ("12", "10"))
"""(agent, prospect) EmoDB speakers; the agent speaks neutral clips, the prospect any emotion."""
SEEDS = ((4, 5), (14, 15), (24, 25), (34, 35))
"""(clean call seed, steady call seed) pairs (the slow call's seed is the clean one plus 2); the
first two by default."""
TUNING_SEEDS = SEEDS[:2]
"""The calls the pace and tempo cues' defaults were chosen on (docs/cues.md: ``too_fast`` and ``too_slow``);
with agent 08 they are the test calls themselves. Only the other seeds measure how those generalise."""
DELAY_S = 3.0
"""A cue up to this long after its injected event's end still detects it (the tests' ``match_cues``);
``within_3s`` is the share of events detected this soon."""


def run(pairs: tuple[tuple[str, str], ...] = PAIRS, seeds: tuple[tuple[int, int], ...] = SEEDS[:2]
        ) -> dict[str, Any]:
    """Build and analyse every call; return the figures (see the module docstring)."""
    model = load_vad_model()
    delays: dict[str, list[float | None]] = {}
    true_cues = raised = steady_cues = 0
    steady_min = 0.0
    for agent, prospect in pairs:
        calls.AGENT, calls.PROSPECT = agent, prospect
        for clean_seed, steady_seed in seeds:
            for call in (calls.clean_call(clean_seed), calls.slow_call(clean_seed + 2)):
                cues = [c for c in analyze(call.audio, model)["cues"] if c["cue"] != "take_break"]
                raised += len(cues)
                found, matched = calls.match_cues(call.truth, cues, DELAY_S)
                true_cues += matched
                for i, t in enumerate(call.truth):
                    delays.setdefault(t.cue, []).append(found.get(i))
            steady = calls.steady_call(steady_seed)
            steady_cues += len(analyze(steady.audio, model)["cues"])
            steady_min += steady.audio.shape[1] / 16000 / 60
            print(f"agent {agent} seeds {clean_seed}/{steady_seed} done", file=sys.stderr, flush=True)
    per_cue = {}
    for cue, ds in delays.items():
        got = [d for d in ds if d is not None]
        per_cue[cue] = {"events": len(ds), "detected": round(len(got) / len(ds), 3),
                        "within_3s": round(sum(d <= DELAY_S for d in got) / len(ds), 3),
                        "delay_s_median": round(statistics.median(got), 2) if got else None}
    return {"calls": len(pairs) * len(seeds), "seeds": [list(p) for p in seeds],
            "held_out": not set(seeds) & set(TUNING_SEEDS), "cues": per_cue,
            "precision_clean": round(true_cues / raised, 3) if raised else 1.0,  # clean and slow calls
            "steady_cues_per_hour": round(60.0 * steady_cues / steady_min, 2)}


def main() -> None:
    """Print the figures as one JSON object."""
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__)
    ap.add_argument("--seeds", type=int, default=2, choices=range(1, len(SEEDS) + 1),
                    help="how many seed pairs per agent (each a clean, a slow and a steady call; 4: "
                         "32 calls of each kind, twice the default's time; default 2)")
    ap.add_argument("--held-out", action="store_true",
                    help="only the seeds the pace cues' defaults were not chosen on (16 calls of "
                         "each kind, as long as the default run)")
    args = ap.parse_args()
    seeds = SEEDS[len(TUNING_SEEDS):] if args.held_out else SEEDS[:args.seeds]
    print(json.dumps(run(seeds=seeds)))


if __name__ == "__main__":
    main()
