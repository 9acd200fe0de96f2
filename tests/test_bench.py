"""The benchmarks measure what they say: their boxes, baselines and timings (bench/)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from bench.vad import headset_pair
from edge.settings import EdgeSettings


def _bench_json(args: list[str], logger: str, timeout_s: float = 300) -> tuple[dict, list[str]]:
    """Run ``python -m ARGS``: it must succeed with one JSON line alone on stdout. Returns the
    figures and what ``logger`` said at INFO on stderr (the text after its name)."""
    import json

    out = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                         timeout=timeout_s, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert len(lines) == 1, lines[:5]
    marker = f" INFO {logger}: "
    return json.loads(lines[0]), [line.split(marker, 1)[1] for line in out.stderr.splitlines()
                                  if marker in line]


def test_latency_bench_boxes_run_side_by_side_as_separate_boxes(tmp_path: Path) -> None:
    """``bench.latency`` runs its boxes as threads of one process: each box's pipeline, run at the
    same time as the others on two real talkers, fails on no block and reads what it reads alone
    (with one LiteRT interpreter shared between the threads, blocks failed and the boxes read each
    other's audio)."""
    from bench.latency import box_agent

    audio = headset_pair(seconds=4.0)
    talks = [audio, audio[::-1].copy(), audio * 0.5, audio[::-1] * 0.5]

    def speech(box_id: str, talk: np.ndarray, out: dict[str, list]) -> None:
        box = box_agent(EdgeSettings(site="bench", box=box_id, broker_port=9,
                                     state_dir=tmp_path / box_id))
        got, failed = out.setdefault(box_id, []), 0
        for i in range(0, talk.shape[1], 1024):
            try:
                got += [m.body for m in box.pipeline(talk[:, i:i + 1024]) if m.kind == "event"]
            except Exception:  # what Box.step counts as a failed block
                failed += 1
        got.append(failed)

    alone: dict[str, list] = {}
    for k, talk in enumerate(talks):
        speech(f"alone-{k}", talk, alone)
    together: dict[str, list] = {}
    threads = [threading.Thread(target=speech, args=(f"seat-{k}", talk, together))
               for k, talk in enumerate(talks)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for k in range(len(talks)):
        assert together[f"seat-{k}"] == alone[f"alone-{k}"], k
        assert alone[f"alone-{k}"][-1] == 0 and len(alone[f"alone-{k}"]) > 2


def test_far_end_cost_baseline_is_the_published_fp32_file_on_onnx_runtime() -> None:
    """``bench.farend`` scales its ratio by 0.0045, the cost of the published fp32 Silero file on
    ONNX Runtime per channel: its baseline gives that file's probabilities exactly on a real
    talker (the box's LiteRT file, which it used to time, is 2.4 times faster and differs)."""
    from bench.farend import reference_vad
    from bench.vad import per_channel
    from edge.runtime import OnnxModel
    from models.build import model_path

    talk = headset_pair(seconds=10.0)[:1]
    published = per_channel(OnnxModel(model_path("silero_vad")), talk)
    assert published.max() > 0.9
    assert np.array_equal(per_channel(reference_vad(), talk), published)


@pytest.mark.parametrize("module", ["edge", "latency", "vad", "leak"])
def test_a_bench_run_as_a_module_takes_its_options_or_refuses_them(module: str) -> None:
    """`python -m bench.edge --affect` ran the bench without the affect stage (and `--help` ran
    the whole bench): the options were ignored. They are now the CLI's (`miroir bench edge`)."""
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", f"bench.{module}", *args], capture_output=True,
                              text=True, timeout=60, check=False)

    shown = run("--help")
    assert shown.returncode == 0 and shown.stdout.startswith("usage:"), shown.stderr
    bad = run("--no-such-option")
    assert bad.returncode == 2 and "unrecognized arguments: --no-such-option" in bad.stderr


def test_the_latency_bench_prints_one_line_of_json_and_nothing_else() -> None:
    """`miroir bench latency --json` printed the dashboard's access log (uvicorn's, on stdout)
    before its JSON line: `| jq` failed on it. Stdout holds the JSON line alone. And it said
    nothing while its boxes spoke, in real time (26 utterances of 3.6 s by default: over 90 s):
    it now says so on stderr, with how long it will take, then every PROGRESS_S how far."""
    figures, said = _bench_json(["miroir", "bench", "latency", "--json", "--samples", "2",
                                 "--boxes", "1"], "bench.latency")
    assert figures["onsets"] >= 2 and figures["latency_ms_p50"] > 0, figures
    assert said[:1] == ["bench latency: 1 box(es) speaking, 3 utterances each (the first a "
                        "warm-up), in real time: about 11 s"], said


def test_the_edge_bench_says_how_far_it_has_got_on_stderr_and_prints_its_json_alone() -> None:
    """`miroir bench edge --json` (10 minutes of audio, 3 runs of each side) ran 83 s printing
    nothing but LiteRT's one line: a stuck command cannot be told from a slow one. It says what
    it measures, then each run as it ends (with its RTFs), on stderr; stdout holds the JSON
    line alone."""
    figures, said = _bench_json(["miroir", "bench", "edge", "--json", "--seconds", "20",
                                 "--repeats", "2"], "bench.edge")
    assert said and said[0].startswith("bench edge: 20 s of audio, 2 run(s) of each side"), said
    assert [s.split(" (")[0] for s in said[1:]] == ["bench edge: run 1 of 2 done",
                                                     "bench edge: run 2 of 2 done"], said
    assert figures["repeats"] == 2 and figures["rtf_pipeline"] > 0, figures


def test_the_vad_bench_says_each_variant_as_it_ends_on_stderr() -> None:
    """`miroir bench vad --json` (7 variants, 5 runs of each on a minute of two headsets, then
    each one's AUC on AMI) ran 32 s saying nothing of its own. Each variant is logged as it
    ends (its RTF and AUC), on stderr; stdout holds the JSON line alone."""
    figures, said = _bench_json(["miroir", "bench", "vad", "--json", "--repeats", "1"],
                                "bench.vad")
    names = [k for k, v in figures.items() if isinstance(v, dict)]
    assert [s.split(" (")[0] for s in said] == [
        f"bench vad: variant {k} of {len(names)} done: {name}"
        for k, name in enumerate(names, start=1)], said


def test_the_ingest_bench_says_each_phase_as_it_starts() -> None:
    """`miroir bench ingest --json` (by default 2000 boxes: their certificates, their TLS
    connections, then a 60 s window and the drain) said nothing of its own until its JSON line:
    over a minute, several on a first run, of a silent terminal. Each phase is logged on stderr
    as it starts; stdout holds the JSON line alone."""
    import shutil

    from provisioning.broker import new_site_dir

    pki = new_site_dir() / "pki"  # one the broker's user can reach
    try:
        figures, said = _bench_json(["miroir", "bench", "ingest", "--json", "--boxes", "2",
                                     "--duration", "1", "--pki-dir", str(pki)], "bench.ingest")
    finally:
        shutil.rmtree(pki.parent, ignore_errors=True)
    assert figures["boxes"] == 2
    assert said == [
        f"bench ingest: the site's certificates for 2 boxes (in {pki}; the first "
        "run issues them)",
        "bench ingest: broker and dashboard ingest up; 2 boxes connecting",
        "bench ingest: 2 boxes connected; measuring for 1 s",
        "bench ingest: measured; waiting for the boxes' last messages to be stored"], said


def test_the_accuracy_bench_says_each_part_as_it_ends_on_stderr() -> None:
    """`python -m bench.accuracy --json` (and `miroir bench accuracy`) ran 136 s saying nothing
    of its own until its JSON: nine parts (VAD on AMI, prosody, raised voices, rate, tempo,
    pauses, hesitations, conversation, noisy line), one after the other. Each is logged on stderr
    as it ends, with its time; stdout holds the JSON line alone (every 100th EmoDB clip here)."""
    figures, logged = _bench_json(["bench.accuracy", "--json", "--step", "100"], "__main__",
                                  timeout_s=600)
    said = [line.removeprefix("bench accuracy: ").split(" (")[0] for line in logged
            if line.startswith("bench accuracy: ")]
    assert said == [f"part {k} of 9 done: {name}" for k, name in enumerate(
        ["VAD on AMI", "prosody on EmoDB", "raised voices", "speaking rate, cross-validated",
         "tempo, 1.3x against normal speech", "pauses", "hesitations", "conversation",
         "noisy line"], start=1)], said
    assert figures["rate_r"] == figures["rate_r_cv"] and "rate_r_shipped" in figures
