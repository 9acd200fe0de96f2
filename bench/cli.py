"""Benchmark commands (``miroir bench ...``): a thin registry; each benchmark lives in its own
module, imported only when its command runs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def cmd_bench_ingest(args: argparse.Namespace) -> int:
    """Many simulated boxes through a real Mosquitto into the dashboard ingest; print figures."""
    from bench.ingest import CACHE_DIR, bench_ingest

    result = bench_ingest(boxes=args.boxes, duration_s=args.duration, rate_hz=args.rate,
                          per_process=args.per_process, site_dir=args.pki_dir or CACHE_DIR,
                          sim=args.sim)
    if args.json:
        json.dump(result, sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


def register_cli(groups: dict[str, Any]) -> None:
    """Add the benchmark commands to ``miroir bench``."""
    from miroir.cli import float_at_least, int_between, positive_float, span_text

    bench = groups["bench"]
    p = bench.add_parser(
        "ingest", help="dashboard ingest under N simulated boxes (real Mosquitto, TLS)",
        description="Start a real Mosquitto, the dashboard ingest in its own process and N "
                    "simulated boxes (each its own MQTT client with its own TLS certificate, the "
                    "box's publisher) spread over several processes; publish for --duration "
                    "seconds and report throughput, loss, duplicates, ingest lag and CPU.")
    p.add_argument("--boxes", type=int_between(1), default=2000,
                   help=f"simulated boxes, {span_text(1)} (default 2000)")
    p.add_argument("--duration", type=float_at_least(1.0), default=60.0,
                   help=f"measured publishing window in seconds, {span_text(1)} (default 60)")
    p.add_argument("--rate", type=positive_float, default=1.0,
                   help="messages per second per box, a positive number (default 1)")
    p.add_argument("--per-process", type=int_between(1), default=500,
                   help=f"boxes per generator process, {span_text(1)} (default 500)")
    p.add_argument("--sim", choices=("lean", "box"), default="lean",
                   help="simulated boxes: lean (publisher and a RAM queue; measures the broker and "
                        "dashboard) or box (the whole box path: outbox, status, heartbeat); "
                        "default lean")
    p.add_argument("--pki-dir", type=_path, default=None,
                   help="where the benchmark site's certificates are kept between runs "
                        "(default: a directory under the system temp dir)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_bench_ingest)


def _path(value: str) -> Any:
    from pathlib import Path

    return Path(value)
