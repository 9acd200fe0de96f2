"""``miroir edge check`` (install check of the headset) and ``miroir edge update`` (signed updates)."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edge.publisher import RECONNECT_MAX_S
from edge.update import INSTALL_ROOTS
from miroir.cli import CliError

log = logging.getLogger(__name__)

DEFAULT_RELEASES = Path(INSTALL_ROOTS[0])
DEFAULT_RELEASE_KEY = Path("/usr/share/miroir/release-key.pem")
DEFAULT_STATE = Path("/var/lib/miroir")
DEFAULT_CONFIG = Path("/data/miroir/box.toml")
BROKER_SETTLE_S = RECONNECT_MAX_S + 10.0
"""How long after the broker's port opens again a new release that has not published yet is
still waited for: the agent's longest reconnection back-off, and time to publish."""


EXIT_REFUSED = 3
"""``edge update``: the release was refused; nothing changed on the box."""
EXIT_ROLLED_BACK = 4
"""``edge update``: the release was switched to, failed, and was rolled back."""
EXIT_BROKER_UNREACHABLE = 5
"""``edge update``: the box does not reach the broker, so the release could not be checked; the
running release is the one before (nothing changed, or switched back): run it again later."""


def _os_error(exc: OSError, bundle: Path | None) -> str:
    """One line for a file error of ``edge update``: the file at fault (the bundle, or the
    releases' own files), and sudo when the command was run without root."""
    where = f"release bundle {bundle}" if exc.filename in (None, str(bundle)) else exc.filename
    hint = (": updates need root, run it with sudo"
            if exc.errno in (errno.EACCES, errno.EPERM) else "")
    return f"{where}: {exc.strerror or exc}{hint}"


def cmd_edge_check(args: argparse.Namespace) -> int:
    """Record a few seconds from the headset, report levels, noise floor, clipping, swapped channels."""
    import numpy as np

    from edge.capture import CaptureConfig, CaptureError, CaptureSource
    from edge.frames import RATE_HZ
    from edge.installcheck import PART_MIN_S, check

    if not PART_MIN_S <= args.cue_s <= args.seconds - PART_MIN_S:
        raise CliError(f"--cue-s {args.cue_s:g} with --seconds {args.seconds:g}: the agent must be "
                       f"quiet for {PART_MIN_S:g} s before the cue and speak for {PART_MIN_S:g} s "
                       f"after it; give a --cue-s from {PART_MIN_S:g} to "
                       f"{args.seconds - PART_MIN_S:g}")
    device, far_device = args.device, args.far_device
    state_dir = None
    if args.config is not None:
        from edge import settings as edge_settings

        try:
            cfg = edge_settings.load(args.config)
        except edge_settings.SettingsError as exc:
            raise CliError(str(exc)) from None
        if device is None:
            device, far_device = cfg.capture_device, cfg.capture_far_device
        state_dir = cfg.state_dir
    if device is None:
        raise CliError("give --device (see `miroir edge devices`) or --config with capture_device")
    source = CaptureSource(CaptureConfig(device=device, far_device=far_device,
                                         max_seconds=args.seconds))
    try:
        source.open()  # a missing device is said now, with the devices there are, not in 12 s
    except CaptureError as exc:
        raise CliError(str(exc)) from None
    print(f"recording {args.seconds:.0f} s: stay quiet, and speak when told "
          f"(at {args.cue_s:.0f} s)", file=sys.stderr)
    blocks = []
    cued = False
    got = 0
    start = time.monotonic()
    try:
        for block in source.blocks():
            blocks.append(block)
            got += block.shape[1]
            if not cued and got >= args.cue_s * RATE_HZ:
                print(">>> agent: speak now, until the end <<<", file=sys.stderr)
                cued = True
            if got >= args.seconds * RATE_HZ or time.monotonic() - start > args.seconds + 10:
                break
    except CaptureError as exc:
        raise CliError(str(exc)) from None
    finally:
        source.close()
    if got < args.seconds * RATE_HZ * 0.9:
        why = f": {source.last_error}" if source.last_error else ""
        raise CliError(f"only {got / RATE_HZ:.1f} s of audio came from {device}{why}")
    audio = np.concatenate(blocks, axis=1)
    del blocks
    report = check(audio[0], audio[1], args.cue_s)
    del audio  # keep no audio
    report["overruns"] = source.status_fields().get("overruns", 0)
    if state_dir is not None:  # the box's affect model runs only on channels checked this way
        from edge.installcheck import save_verdict

        try:
            save_verdict(state_dir, device, far_device, report)
        except OSError as exc:
            print(f"could not save the verdict in {state_dir}: {exc.strerror}", file=sys.stderr)
    if args.json:
        json.dump(report, sys.stdout)
        sys.stdout.write("\n")
    else:
        for ch, label in (("near", "agent (near)"), ("far", "line (far)")):
            r = report[ch]
            assert isinstance(r, dict)
            print(f"{label}: level {r['rms_dbfs']} dBFS, peak {r['peak_dbfs']} dBFS, noise floor "
                  f"{r['noise_floor_dbfs']} dBFS, clipped {100 * r['clipped_ratio']:.3f} %, "
                  f"rise after cue {r['rise_after_cue_db']} dB")
        problems = report["problems"]
        assert isinstance(problems, list)
        print("OK" if report["ok"] else "\n".join(f"PROBLEM: {p}" for p in problems))
    return 0 if report["ok"] else 1


def _broker_port(config: Path) -> Callable[[], bool] | None:
    """Whether the broker's port (the box's settings) takes a connection now, as a callable; None
    when the settings cannot be read (the health check then does without)."""
    from edge.health import broker_open
    from edge.settings import SettingsError, load

    try:
        settings = load(config)
    except SettingsError as exc:
        log.info("the broker's port is not watched during the check: %s", exc)
        return None
    return lambda: broker_open(settings.broker_host, settings.broker_port)


def cmd_edge_update(args: argparse.Namespace) -> int:
    """Install a signed release side by side, switch atomically, health-check, commit or roll back."""
    import subprocess

    from edge.health import note_restart, wait_healthy, wait_published
    from edge.update import BrokerUnreachable, RolledBack, UpdateError, Updater

    updater = Updater(args.root)
    if updater.current_version() is None:  # a mistyped --root: never start a second releases folder
        raise CliError(f"{args.root} holds no running release (no {updater.current}): check --root "
                   f"(a box keeps its releases in {DEFAULT_RELEASES}); nothing changed", EXIT_REFUSED)
    if args.recover:
        try:
            print(f"running release: {updater.recover()}")
        except OSError as exc:
            raise CliError(_os_error(exc, None), EXIT_REFUSED) from None
        return 0
    if (args.bundle is None) == (not args.previous):
        raise CliError("give a release bundle, or --previous, or --recover")
    try:
        key = b"" if args.previous else args.key.read_bytes()
    except OSError as exc:
        raise CliError(f"release key {args.key}: {exc.strerror}") from None

    def restart() -> None:
        # (the unit's own start timeout is 60 s: a new agent that never gets ready times out
        # here too, and the install rolls back)
        try:  # the agent's offline status then says "restart": the dashboard waits before alerting
            note_restart(args.state_dir, "update")
        except OSError as exc:  # the update matters more: the restart then alerts as a stop
            log.warning("no restart note in %s: %s", args.state_dir, exc)
        try:
            subprocess.run(["systemctl", "restart", args.unit], check=False, timeout=90)
        except subprocess.TimeoutExpired:
            raise UpdateError(f"{args.unit} did not restart within 90 s") from None

    def health(version: str) -> bool:
        # (an agent that found the broker gone backs off up to RECONNECT_MAX_S between attempts:
        # after the broker's return it is given that and a margin, never judged before)
        return wait_healthy(args.state_dir, version, time.time(), args.health_timeout_s,
                            args.soak_s, broker_up=_broker_port(args.config),
                            settle_s=BROKER_SETTLE_S)

    def reaches_broker(since_ts: float) -> bool:
        # (the agent running now; one just restarted may first wait out its reconnect backoff)
        return bool(wait_published(args.state_dir, since_ts, args.health_timeout_s))

    # a closed SSH session or a stop ends it as Ctrl-C does (miroir.cli's stop signals, which
    # leave a `nohup`'s ignored hang-up ignored): rolled back, never left unconfirmed
    try:
        if args.previous:
            version = updater.go_back(restart=restart, health=health, broker=reaches_broker,
                                      even_if_offline=args.even_if_offline)
        else:
            version = updater.install(args.bundle, key, restart=restart, health=health,
                                      allow_downgrade=args.allow_downgrade,
                                      broker=reaches_broker, even_if_offline=args.even_if_offline)
    except BrokerUnreachable as exc:
        raise CliError(str(exc), EXIT_BROKER_UNREACHABLE) from None
    except RolledBack as exc:
        raise CliError(str(exc), EXIT_ROLLED_BACK) from None
    except UpdateError as exc:
        raise CliError(str(exc), EXIT_REFUSED) from None
    except OSError as exc:
        raise CliError(_os_error(exc, args.bundle), EXIT_REFUSED) from None
    print(f"running release {version}")
    return 0


def register_cli(groups: dict[str, argparse._SubParsersAction]) -> None:
    """Add ``check`` and ``update`` to the ``edge`` command group."""
    from miroir.cli import float_at_least, plain_float, positive_float

    edge = groups["edge"]
    p = edge.add_parser("check", help="install check: levels, noise, clipping, swapped channels",
                        description=cmd_edge_check.__doc__)
    p.add_argument("--config", type=Path, default=None,
                   help="the box's settings file (for capture_device); the verdict is kept in its "
                        "state_dir, which the prospect affect model requires")
    p.add_argument("--device", default=None, help="capture device name (overrides --config)")
    p.add_argument("--far-device", default=None, help="the line's mono device, if separate")
    p.add_argument("--seconds", type=positive_float, default=6.0,
                   help="seconds to record (default 6)")
    p.add_argument("--cue-s", type=plain_float, default=2.0,
                   help="second at which the agent is told to speak, 1 s at least after the start "
                        "and before the end (default 2)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_edge_check)

    p = edge.add_parser("update", help="install a signed release, with automatic rollback",
                        description=cmd_edge_update.__doc__)
    p.add_argument("bundle", type=Path, nargs="?", default=None, help="the release bundle file")
    p.add_argument("--recover", action="store_true",
                   help="roll back an unconfirmed update (run at boot)")
    p.add_argument("--previous", action="store_true",
                   help="go back to the release kept before the running one (no bundle needed), "
                        "health-checked like an update; both releases stay")
    p.add_argument("--root", type=Path, default=DEFAULT_RELEASES,
                   help=f"releases folder (default {DEFAULT_RELEASES})")
    p.add_argument("--key", type=Path, default=DEFAULT_RELEASE_KEY,
                   help=f"Ed25519 release public key, PEM (default {DEFAULT_RELEASE_KEY})")
    p.add_argument("--unit", default="miroir-box.service",
                   help="the agent's unit to restart (default miroir-box.service)")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE,
                   help=f"the agent's state folder holding heartbeat.json (default {DEFAULT_STATE})")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                   help="the box's settings file, for the broker's address: a new release that "
                        "has not published yet while the broker's port is closed is given "
                        f"{BROKER_SETTLE_S:.0f} s after it opens (default {DEFAULT_CONFIG})")
    p.add_argument("--health-timeout-s", type=positive_float, default=90.0,
                   help="seconds the new release has to publish, a positive number (default 90)")
    p.add_argument("--soak-s", type=float_at_least(0.0), default=120.0,
                   help="seconds the new release must then run without a restart before it is "
                        "kept, 0 or more (default 120)")
    p.add_argument("--allow-downgrade", action="store_true",
                   help="install a release older than the running one (refused by default: a "
                        "replayed old bundle)")
    p.add_argument("--even-if-offline", action="store_true",
                   help="install although the running release does not reach the broker now "
                        "(refused by default, exit 5: the new one could not be checked); for a "
                        "running agent that is the one failing. The new release must still "
                        "publish to be kept")
    p.set_defaults(func=cmd_edge_update)
