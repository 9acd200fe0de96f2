"""Host side of the qemu proof: the site's broker, a dashboard-identity subscriber, the guest, verdict.

``run.sh`` builds the guest; this module starts a real Mosquitto with the site's generated TLS
configuration on 127.0.0.1 (qemu's user network maps the guest's 10.0.2.2 there), subscribes with
the dashboard's certificate, boots the guest, waits for it to power itself off, then checks the
``MIROIR-PROOF`` lines the guest wrote on its serial console against what the broker received.

Usage (from the repository root, as root): ``python firmware/qemu-proof/host.py --site-dir DIR
--box BOX --console LOG --result JSON -- qemu-system-x86_64 ...``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from miroir import wire  # noqa: E402
from provisioning.broker import Mosquitto, dashboard_identity, tls_client  # noqa: E402
from provisioning.site import Site  # noqa: E402

log = logging.getLogger("qemu-proof")

BROKER_ADDRESS = "10.0.2.2"
"""The host as seen from qemu's user network: the only address the agent may reach."""
DENY_ALL = {"0.0.0.0/0", "::/0"}
DYNAMIC_UID_MIN = 61184
"""systemd allocates DynamicUser ids from 61184 to 65519."""
MIN_METRICS = 10
"""Metrics messages the broker must receive from the box (one per ``window_s`` = 1 s)."""
LINE = re.compile(r"MIROIR-PROOF (\S+) ?(.*)$")
EMERGENCY = "You are in emergency mode"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class BrokerLog:
    """What the dashboard identity received from the proof's box, with host times."""

    box: str
    t0: float = field(default_factory=time.monotonic)
    counts: dict[str, int] = field(default_factory=dict)
    invalid: int = 0
    first_s: dict[str, float] = field(default_factory=dict)
    last_metrics: dict[str, Any] | None = None
    events: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        """Paho callback: count a message of the box by kind, validating it against the wire."""
        try:
            topic = wire.parse_topic(msg.topic)
            body = wire.decode(topic.kind, msg.payload)
        except wire.WireError as exc:
            log.warning("invalid message on %s: %s", msg.topic, exc)
            with self.lock:
                self.invalid += 1
            return
        if topic.box != self.box:
            return
        with self.lock:
            self.counts[topic.kind] = self.counts.get(topic.kind, 0) + 1
            self.first_s.setdefault(topic.kind, round(time.monotonic() - self.t0, 1))
            if topic.kind == "metrics":
                self.last_metrics = body
            elif topic.kind == "event":
                self.events.append(str(body.get("name")))


def parse_console(text: str) -> dict[str, Any]:
    """Collect the guest's ``MIROIR-PROOF`` lines: key/value lines, probes, the agent's journal."""
    out: dict[str, Any] = {"probes": [], "journal": [], "unit": [], "waiting": [], "sandbox": {}}
    for raw in text.splitlines():
        m = LINE.search(raw.rstrip("\r"))
        if not m:
            continue
        tag, rest = m.group(1), m.group(2).strip()
        if tag == "probe":
            try:
                out["probes"].append(json.loads(rest))
            except json.JSONDecodeError:
                log.warning("unreadable probe line: %s", raw)
        elif tag in ("journal", "unit", "waiting"):
            out.setdefault(tag, []).append(rest)
        elif tag == "sandbox":
            kv = dict(p.split("=", 1) for p in rest.split() if "=" in p)
            out["sandbox"][kv.get("unit", "?")] = kv
        elif tag in ("start", "box-active", "box-after-hold", "egress-unit", "main-user", "panel"):
            entry: dict[str, Any] = dict(p.split("=", 1) for p in rest.split() if "=" in p)
            entry["_words"] = [p for p in rest.split() if "=" not in p]
            out[tag] = entry
        else:
            out[tag] = rest
    return out


def _loopback(cidr: str) -> bool:
    return ipaddress.ip_network(cidr, strict=False).is_loopback


def _allowed(host: str, cidrs: list[str]) -> bool:
    """True if ``host`` falls in one of the unit's IPAddressAllow= ranges."""
    addr = ipaddress.ip_address(host)
    return any(addr in ipaddress.ip_network(c, strict=False) for c in cidrs)


def _probe(guest: dict[str, Any], label: str, target: str) -> dict[str, Any] | None:
    for p in guest["probes"]:
        if p.get("label") == label and p.get("target") == target:
            return p
    return None


def verdict(guest: dict[str, Any], broker: BrokerLog, qemu_rc: int | None,
            broker_port: int, first_boot: bool = True) -> list[tuple[str, bool, str]]:
    """Every check of one boot as (name, passed, detail)."""
    checks: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append((name, bool(ok), detail))

    first = str(guest.get("firstboot", ""))
    if first_boot:
        check("first boot installed the bundle", f"at {BROKER_ADDRESS}" in first, first or "no line")
    else:
        check("first boot did not run again (bundle consumed)", "firstboot" in guest and not first,
              first or "skipped")
    active = guest.get("box-active", {})
    ok_active = "yes" in active.get("_words", [])
    detail = "never active"
    if ok_active:
        t_active = int(active["active_us"]) / 1e6
        t_start = int(active["exec_start_us"]) / 1e6
        detail = (f"active {t_active:.1f} s after the kernel started "
                  f"(agent start to READY=1: {t_active - t_start:.1f} s), restarts {active['restarts']}")
    check("miroir-box.service reached active", ok_active, detail)
    user = guest.get("main-user", {})
    uid = int(user.get("uid", "0") or 0)
    check("agent runs as a dynamic user", uid >= DYNAMIC_UID_MIN,
          f"{' '.join(user.get('_words', []))} uid={uid}")
    allowed: dict[str, list[str]] = {}
    for unit in ("miroir-box.service", "miroir-egress-probe.service"):
        sb = guest["sandbox"].get(unit, {})
        allow, deny = sb.get("allow", ""), sb.get("deny", "")
        allowed[unit] = sorted(a for a in allow.split(",") if a)
        remote = [a for a in allowed[unit] if not _loopback(a)]
        check(f"{unit}: IPAddressDeny=any, IPAddressAllow={BROKER_ADDRESS} only (besides loopback)",
              remote == [f"{BROKER_ADDRESS}/32"] and set(deny.split(",")) == DENY_ALL,
              f"allow={allow or '?'} deny={deny or '?'}")
    check("the probe unit has the agent's exact address lists",
          allowed["miroir-box.service"] == allowed["miroir-egress-probe.service"],
          f"{allowed['miroir-box.service']} vs {allowed['miroir-egress-probe.service']}")
    broker_target = f"tcp:{BROKER_ADDRESS}:{broker_port}"
    others = ["tcp:10.0.2.15:9999", "tcp:127.0.0.1:9998", "tcp:[::1]:9997", "udp:10.0.2.15:9996"]
    for target in [broker_target, *others]:
        ctl = _probe(guest, "control", target)
        box = _probe(guest, "sandbox", target)
        host = target.split(":", 1)[1].rsplit(":", 1)[0].strip("[]")
        if target == broker_target or _allowed(host, allowed["miroir-box.service"]):
            ok = bool(ctl and ctl["ok"] and box and box["ok"])
            want = "reachable from the sandbox (allowed)"
        else:
            # UDP: sendto() fails with EPERM. TCP: the cgroup filter drops the SYN, so connect()
            # times out. Anything else (a refusal, a reset) would mean a packet got through.
            ok = bool(ctl and ctl["ok"] and box and not box["ok"]
                      and box["error"] in ("EPERM", "TimeoutError"))
            want = "reachable outside, blocked inside the sandbox"
        ctl_s = "?" if ctl is None else ("ok" if ctl["ok"] else ctl["error"])
        box_s = "?" if box is None else ("ok" if box["ok"] else f"{box['error']} in {box['ms']} ms")
        check(f"{target} {want}", ok, f"control: {ctl_s}; sandbox: {box_s}")
    panel = guest.get("panel", {})
    private = '"private":true'
    check("the front panel's button (miroir-control group) toggles private mode; others are refused",
          panel.get("stranger") == "PermissionError" and private not in panel.get("after_stranger", "")
          and panel.get("member") == "sent" and private in panel.get("after_member", "")
          and private not in panel.get("after_second", "x" + private)
          and "private_on" in broker.events and "private_off" in broker.events,
          " ".join(f"{k}={v}" for k, v in panel.items() if k != "_words")
          + f"; events at the broker: private_on x{broker.events.count('private_on')}, "
            f"private_off x{broker.events.count('private_off')}")
    hold = guest.get("box-after-hold", {})
    check("agent still active after the probes, no restart",
          hold.get("state") == "active/running" and hold.get("restarts") == "0",
          f"state={hold.get('state', '?')} restarts={hold.get('restarts', '?')}")
    n = broker.counts.get("metrics", 0)
    check(f"broker received >= {MIN_METRICS} metrics from the box (dashboard identity)",
          n >= MIN_METRICS and broker.invalid == 0,
          f"metrics={n} status={broker.counts.get('status', 0)} event={broker.counts.get('event', 0)} "
          f"invalid={broker.invalid}; first metrics {broker.first_s.get('metrics', '-')} s after boot")
    check("guest powered itself off", qemu_rc == 0 and "done" in guest, f"qemu exit code {qemu_rc}")
    return checks


def watch(proc: subprocess.Popen[bytes], console: Path, timeout_s: float) -> int | None:
    """Wait for the guest to power off; kill it on timeout or when it falls into emergency mode.

    Returns:
        qemu's exit code, None if it had to be killed.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            pass
        text = console.read_text(errors="replace") if console.exists() else ""
        if EMERGENCY in text or time.monotonic() > deadline:
            why = "fell into emergency mode" if EMERGENCY in text else f"ran past {timeout_s:.0f} s"
            log.error("the guest %s: killing qemu", why)
            proc.kill()
            proc.wait()
            return None


def boot(args: argparse.Namespace, site: Site, n: int) -> dict[str, Any]:
    """Boot the guest once (the disks keep what earlier boots wrote); return what was seen."""
    console = args.console if n == 1 else args.console.with_name(f"{args.console.stem}-{n}.log")
    qemu = [a.replace(f"file:{args.console}", f"file:{console}") for a in args.qemu]
    received = BrokerLog(args.box)
    client = tls_client(site.dashboard, site.ca.cert, f"proof-{dashboard_identity(site.site)}")
    client.on_message = received.on_message

    def on_connect(c: Any, *_: Any) -> None:
        for topic in wire.site_filters(site.site):
            c.subscribe(topic, qos=1)

    client.on_connect = on_connect
    client.connect("127.0.0.1", site.port)
    client.loop_start()
    try:
        console.unlink(missing_ok=True)
        received.t0 = time.monotonic()
        log.info("boot %d of the guest (console: %s)", n, console)
        with open(console.with_suffix(".qemu.log"), "wb") as qlog:
            proc = subprocess.Popen(qemu, stdin=subprocess.DEVNULL, stdout=qlog, stderr=qlog)
            try:
                qemu_rc = watch(proc, console, args.timeout_s)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        boot_s = time.monotonic() - received.t0
    finally:
        client.loop_stop()
        client.disconnect()
    text = console.read_text(errors="replace") if console.exists() else ""
    guest = parse_console(text)
    checks = verdict(guest, received, qemu_rc, site.port, first_boot=n == 1)
    passed = all(ok for _, ok, _ in checks)
    print(f"\n== boot {n}: {'PASS' if passed else 'FAIL'} ({args.accel}) ==")
    for name, ok, detail in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}")
    print(f"  guest ran {boot_s:.0f} s (boot to power-off); console log {console}")
    failed_units = [ANSI.sub("", line).strip() for line in text.splitlines()
                    if "FAILED" in line or "DEPEND" in line]
    if not passed and failed_units:
        print("  the guest's console reports:")
        for line in failed_units[:15]:
            print(f"    {line}")
    if not passed:
        for line in guest["unit"]:
            print(f"  {line}")
        if guest["journal"]:
            print("  the journals of those units:")
        for line in guest["journal"][-40:]:
            print(f"    {line}")
    return {"boot": n, "passed": passed, "guest_run_s": round(boot_s, 1), "console": str(console),
            "checks": [{"name": c, "passed": ok, "detail": d} for c, ok, d in checks],
            "broker": {"counts": received.counts, "first_s": received.first_s,
                       "invalid": received.invalid, "last_metrics": received.last_metrics},
            "guest": guest}


def run(args: argparse.Namespace) -> int:
    """Start the broker, boot the guest ``--boots`` times, check each boot, print the summary."""
    site = Site(args.site_dir)
    boots = []
    with Mosquitto(site.config, site.port, site.log):
        for n in range(1, args.boots + 1):
            boots.append(boot(args, site, n))
            if not boots[-1]["passed"]:
                break
    passed = len(boots) == args.boots and all(b["passed"] for b in boots)
    print(f"\n== Miroir hardened box unit under qemu ({args.accel}): {'PASS' if passed else 'FAIL'} "
          f"({sum(b['passed'] for b in boots)}/{args.boots} boots passed; verdict in {args.result}) ==")
    args.result.write_text(json.dumps({"passed": passed, "accel": args.accel, "boots": boots},
                                      indent=1, default=str) + "\n")
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    """Command line; everything after ``--`` is the qemu command."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--site-dir", type=Path, required=True, help="the site made by run.sh")
    parser.add_argument("--box", required=True, help="the guest's box id")
    parser.add_argument("--console", type=Path, required=True, help="qemu's serial console file")
    parser.add_argument("--result", type=Path, required=True, help="write the verdict here (JSON)")
    parser.add_argument("--accel", default="?", help="qemu accelerator (for the summary)")
    parser.add_argument("--timeout-s", type=int, default=1800,
                        help="kill the guest if it has not powered off by then (default 1800)")
    parser.add_argument("--boots", type=int, default=2,
                        help="boot the guest this many times (the first provisions it; default 2)")
    parser.add_argument("qemu", nargs=argparse.REMAINDER, help="-- then the qemu command")
    args = parser.parse_args(argv)
    if args.qemu[:1] == ["--"]:
        args.qemu = args.qemu[1:]
    if not args.qemu:
        parser.error("give the qemu command after --")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # Killed or interrupted: unwind, so that the broker and the guest are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
