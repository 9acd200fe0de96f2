#!/usr/bin/python3
"""Guest side of the qemu proof: listeners to aim at, and a connection probe.

Runs inside the qemu guest with the system Python (standard library only). ``listen`` opens
listeners on the guest's own addresses; ``probe`` tries to reach the broker and those listeners
and prints one ``MIROIR-PROOF probe {json}`` line per target. Run unsandboxed (the control) every
target must be reachable; run inside ``miroir-egress-probe.service`` (the box unit's sandbox) only
the broker may be. Every target is the broker (qemu's 10.0.2.2) or an address of the guest itself:
nothing here ever aims outside the machine.
"""

from __future__ import annotations

import argparse
import errno
import json
import socket
import sys
import threading
import time
import tomllib
from pathlib import Path

PREFIX = "MIROIR-PROOF"


def _split(target: str) -> tuple[str, str, int]:
    """``tcp:10.0.2.15:9999`` or ``tcp:[::1]:9997`` -> (proto, host, port)."""
    proto, rest = target.split(":", 1)
    host, _, port = rest.rpartition(":")
    return proto, host.strip("[]"), int(port)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _serve(sock: socket.socket) -> None:
    while True:
        conn, _ = sock.accept()
        conn.close()


def listen(addresses: list[str]) -> int:
    """Accept (and close at once) TCP connections on each ``host:port`` until killed."""
    threads = []
    for address in addresses:
        _, host, port = _split(f"tcp:{address}")
        sock = socket.socket(_family(host), socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(16)
        thread = threading.Thread(target=_serve, args=(sock,), daemon=True)
        thread.start()
        threads.append(thread)
        print(f"{PREFIX} listening {address}", flush=True)
    for thread in threads:
        thread.join()
    return 0


def try_target(target: str, timeout_s: float = 5.0) -> dict[str, object]:
    """Try one ``proto:host:port`` target; return what happened (ok, errno name, duration)."""
    proto, host, port = _split(target)
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    start = time.monotonic()
    result: dict[str, object] = {"target": target}
    try:
        with socket.socket(_family(host), kind) as sock:
            sock.settimeout(timeout_s)
            if proto == "tcp":
                sock.connect((host, port))
            else:
                sock.sendto(b"miroir-proof", (host, port))
        result.update(ok=True, error=None)
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        result.update(ok=False, error=name)
    result["ms"] = round(1000 * (time.monotonic() - start), 1)
    return result


def probe(label: str, settings: Path, targets: list[str]) -> int:
    """Probe the broker named in the box's settings, then each target; print JSON lines."""
    cfg = tomllib.loads(settings.read_text())
    broker = f"tcp:{cfg['broker_host']}:{cfg['broker_port']}"
    for target in [broker, *targets]:
        line = {"label": label, "broker": target == broker, **try_target(target)}
        print(f"{PREFIX} probe {json.dumps(line, sort_keys=True)}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line: ``listen ADDR...`` or ``probe --label L --settings FILE TARGET...``."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("listen", help="accept TCP connections on host:port addresses")
    p.add_argument("addresses", nargs="+", help="host:port, IPv6 as [::1]:port")
    p = sub.add_parser("probe", help="try the broker, then each target")
    p.add_argument("--label", required=True, help="name of this run (control or sandbox)")
    p.add_argument("--settings", type=Path, required=True, help="the box's box.toml")
    p.add_argument("targets", nargs="*", help="proto:host:port, proto tcp or udp")
    args = parser.parse_args(argv)
    if args.cmd == "listen":
        return listen(args.addresses)
    return probe(args.label, args.settings, args.targets)


if __name__ == "__main__":
    sys.exit(main())
