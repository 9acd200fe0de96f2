"""Benchmark commands (``miroir bench ...``): a thin registry; each benchmark lives in its own
module, imported only when its command runs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def cmd_bench_ingest(args: argparse.Namespace) -> int:
    """Many simulated boxes through a real Mosquitto into the dashboard ingest; print figures."""
    from miroir.cli import CliError

    if args.boxes < 1 or args.duration < 1 or args.rate <= 0 or args.per_process < 1:
        raise CliError("--boxes, --duration, --per-process must be >= 1 and --rate > 0")
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
    bench = groups["bench"]
    p = bench.add_parser(
        "ingest", help="dashboard ingest under N simulated boxes (real Mosquitto, TLS)",
        description="Start a real Mosquitto, the dashboard ingest in its own process and N "
                    "simulated boxes (each its own MQTT client with its own TLS certificate, the "
                    "box's publisher) spread over several processes; publish for --duration "
                    "seconds and report throughput, loss, duplicates, ingest lag and CPU.")
    p.add_argument("--boxes", type=int, default=2000, help="simulated boxes (default 2000)")
    p.add_argument("--duration", type=float, default=60.0,
                   help="measured publishing window in seconds (default 60)")
    p.add_argument("--rate", type=float, default=1.0,
                   help="messages per second per box (default 1)")
    p.add_argument("--per-process", type=int, default=500,
                   help="boxes per generator process (default 500)")
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
