"""`miroir analyze` on long recordings: the real command's peak memory and time.

An engineer checks a headset recording before a site goes live; it can last an hour. Each case
loops the two AMI headsets of one meeting (``../shared/data/ami-headsets``, 60 s each, real talkers)
to ``--minutes`` with sox, as two mono files at ``--rate`` (8 kHz is a phone line's, resampled on
the way in), runs ``python -m miroir analyze NEAR --far FAR --json`` on them (output discarded) and
reports the command's peak resident memory (``rss_mb_peak``, the kernel's own figure for the child,
as ``/usr/bin/time -v`` prints it), its wall and CPU seconds and the real-time factor. The files are
written to a temporary folder and deleted after each case. Run
``python -m bench.analyze --minutes 1 10 60`` (on 2026-11-29, on a 2-core AMD EPYC shared with other
jobs, the hour took 45 s of wall time at 16 kHz and 38 s at 8 kHz; 86 s and 101 s on the slower
machine on 2026-11-28).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import HEADSETS


def _looped(src: Path, dest: Path, minutes: int, rate_hz: int) -> Path:
    """``src`` (60 s) looped to ``minutes`` at ``rate_hz``, written by sox."""
    subprocess.run(["sox", str(src), "-r", str(rate_hz), str(dest), "repeat", str(minutes - 1)],
                   check=True, timeout=600)
    return dest


def run_case(minutes: int, rate_hz: int) -> dict[str, Any]:
    """Analyse ``minutes`` of two headsets at ``rate_hz`` with the real command; its figures."""
    with tempfile.TemporaryDirectory(prefix="miroir-bench-analyze-") as tmp:
        near = _looped(HEADSETS / "source0.wav", Path(tmp) / "near.wav", minutes, rate_hz)
        far = _looped(HEADSETS / "source1.wav", Path(tmp) / "far.wav", minutes, rate_hz)
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "miroir", "analyze", str(near), "--far",
                                 str(far), "--json"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall_s = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"miroir analyze failed ({proc.returncode}): {err.strip()[-500:]}")
    cpu_s = usage.ru_utime + usage.ru_stime
    return {"minutes": minutes, "rate_hz": rate_hz,
            "rss_mb_peak": round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
            "wall_s": round(wall_s, 1), "cpu_s": round(cpu_s, 1),
            "rtf_cpu": round(cpu_s / (60.0 * minutes), 4),
            "progress_lines": err.count("analysed ")}


def main(argv: list[str] | None = None) -> int:
    """Print one JSON object: each case's figures, and the memory per hour of audio."""
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="python -m bench.analyze", description=__doc__)
    parser.add_argument("--minutes", type=int, nargs="+", default=[1, 10],
                        help="recording lengths in minutes (default 1 10)")
    parser.add_argument("--rate", type=int, nargs="+", default=[16000],
                        help="the files' sample rates in Hz (default 16000; 8000: a phone line)")
    args = parser.parse_args(argv)
    if min(args.minutes) < 1:
        parser.error("--minutes must be >= 1")
    cases = [run_case(m, r) for r in args.rate for m in sorted(set(args.minutes))]
    out: dict[str, Any] = {"cases": cases}
    for r in args.rate:
        mine = [c for c in cases if c["rate_hz"] == r]
        if len(mine) >= 2:  # the growth between the shortest and the longest recording
            a, b = mine[0], mine[-1]
            out[f"rss_mb_per_hour_{r}"] = round(
                (b["rss_mb_peak"] - a["rss_mb_peak"]) * 60.0 / (b["minutes"] - a["minutes"]), 1)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
