"""The agent's speech on real headsets, with and without the line-leak check, against turn labels.

The four AMI headsets of one meeting (``../shared/data/ami-headsets``) each pick up the other
speakers a little, as a call-centre headset picks up its own earpiece. Every ordered pair of
headsets is run through the whole pipeline as (agent, line); the agent channel's speech frames are
scored against the agent's turns in ``mixture.rttm`` (which headset is which speaker: the speaker
whose turns are loudest on the headset against the rest of the meeting). The same pairs run with the
check switched off in the same process. Prints one JSON object. Run ``python -m bench.leak`` (about
a minute).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

import edge.pipeline as pipeline
from edge.frames import FRAME_S, RATE_HZ
from edge.source import read_wav

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ami-headsets"


def _mask(spans: list[tuple[float, float]], n: int) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    for a, b in spans:
        m[int(a / FRAME_S):int(b / FRAME_S)] = True
    return m


def leak_figures() -> dict[str, Any]:
    """Agent-channel frame precision and recall over the 12 headset pairings, check on and off."""
    heads = [read_wav(DATA / f"source{i}.wav", notice=False).samples for i in range(4)]
    n_samples = min(len(h) for h in heads)
    n = int(n_samples / RATE_HZ / FRAME_S)
    turns: dict[str, list[tuple[float, float]]] = {}
    for line in (DATA / "mixture.rttm").read_text().splitlines():
        f = line.split()
        turns.setdefault(f[7], []).append((float(f[3]), float(f[3]) + float(f[4])))
    frame = round(FRAME_S * RATE_HZ)
    energy = [np.square(h[:n * frame]).reshape(n, frame).mean(axis=1) + 1e-12 for h in heads]
    def loudest(e: np.ndarray) -> str:
        """The speaker whose turns are loudest on this headset against the rest of the meeting."""
        def contrast(spk: str) -> float:
            inside = _mask(turns[spk], n)
            return float(np.log(e[inside].mean()) - np.log(e[~inside].mean()))
        return max(turns, key=contrast)

    speaker = [loudest(e) for e in energy]
    model = pipeline.load_vad_model()
    out: dict[str, Any] = {"pairs": 12, "speakers": speaker, "near_leak_db": pipeline.NEAR_LEAK_DB}
    ratio = pipeline._LEAK_RATIO
    for name, check in (("with_check", ratio), ("without_check", 1e30)):
        pipeline._LEAK_RATIO = check  # 1e30: no frame is ever quiet enough to be a leak
        tp = fp = fn = 0
        for i in range(4):
            for j in range(4):
                if i == j:
                    continue
                audio = np.stack([heads[i][:n_samples], heads[j][:n_samples]])
                got = _mask(pipeline.analyze(audio, model)["vad"]["near"]["segments"], n)
                truth = _mask(turns[speaker[i]], n)
                tp += int((got & truth).sum())
                fp += int((got & ~truth).sum())
                fn += int((~got & truth).sum())
        out[name] = {"precision": round(tp / (tp + fp), 3), "recall": round(tp / (tp + fn), 3)}
    pipeline._LEAK_RATIO = ratio
    return out


if __name__ == "__main__":
    import argparse

    # no options: --help says what it does
    argparse.ArgumentParser(allow_abbrev=False, description=__doc__).parse_args()
    print(json.dumps(leak_figures()))
