"""The ``miroir`` command: one dispatcher for the box, the dashboard, the models and the demo.

Heavy modules are imported inside each command, so ``miroir --help`` works on any install.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import logging
import math
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from miroir import __version__
from miroir.numbers import DECIMAL_RULE, WHOLE_RULE, decimal_number, whole_number

if TYPE_CHECKING:  # (the edge package is imported by the commands that need it, not for --help)
    from edge.settings import EdgeSettings

log = logging.getLogger("miroir")

Handler = Callable[[argparse.Namespace], int]

EXTENSIONS = ("provisioning.cli", "models.cli", "bench.cli", "edge.cli", "dashboard.cli")
"""Modules that add commands: each has ``register_cli(groups)``, where ``groups`` maps
``root``, ``edge``, ``dashboard``, ``models`` and ``bench`` to their argparse subparsers.
They import only the standard library at module level, so ``--help`` stays fast."""


class CliError(Exception):
    """An error to print as one line, with a non-zero exit (2 unless ``exit_code`` says)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def read_text_file(path: str | os.PathLike[str], option: str | None = None) -> str:
    """A text file the command line names, UTF-8 (a spreadsheet's byte-order mark dropped), or a
    one-line :class:`CliError` saying why it cannot be read (``option`` names it: "--password-file")."""
    where = f"{option} {path}" if option else str(path)
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CliError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{where}: is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"{where}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:  # no permission, a path through a file
        raise CliError(f"{where}: cannot read ({exc.strerror or exc})") from None


def os_error_text(exc: OSError) -> str:
    """A system error as one line: the path (both, for a rename) and the reason, without the
    errno Python puts first ("[Errno 17] File exists: 'x'" reads "x: File exists")."""
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    reason = exc.strerror or str(exc)
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def ask_secret(prompt: str, what: str, option: str) -> str:
    """A secret typed on the terminal (not echoed); with no terminal (a cron job, ssh without
    -t), the first line piped in; a one-line :class:`CliError` naming ``option`` when there is
    neither."""
    import getpass

    try:
        with open("/dev/tty"):  # where getpass asks
            pass
    except OSError:  # none: getpass would warn of echo, prompt, then fail on an empty input
        line = sys.stdin.readline() if sys.stdin is not None else ""
        if line.rstrip("\r\n"):
            return line.rstrip("\r\n")
    else:
        try:
            return getpass.getpass(prompt)
        except EOFError:  # Ctrl-D
            pass
    raise CliError(f"no {what} given (no terminal to ask on, nor one piped in): give it in a "
                   f"file, {option} FILE")


def _split_hint(free_mb: float | None, seconds: float) -> str:
    """How to cut a recording of ``seconds`` into parts that fit in ``free_mb`` (MB; if None,
    halves)."""
    from edge.pipeline import ANALYZE_BASE_MB, ANALYZE_MB_PER_HOUR

    fits_min = int(seconds / 120) if free_mb is None else \
        int(0.8 * (free_mb - ANALYZE_BASE_MB) / ANALYZE_MB_PER_HOUR * 60)
    fits_min = max(10, fits_min // 10 * 10)
    return (f"analyse it in parts of {fits_min} min at most, e.g. `sox IN.wav PART1.wav trim 0 "
            f"{fits_min * 60}` (its first {fits_min} min)")


def _memory_free_mb() -> float | None:
    """Memory this process may still take, MB: the system's available memory and free swap, and
    under an address-space limit (`ulimit -v`) what the limit leaves; None if unknown."""
    import resource

    free: list[float] = []
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        free.append((int(info["MemAvailable"].split()[0]) + int(info["SwapFree"].split()[0])) / 1024)
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            status = dict(line.split(":", 1)
                          for line in Path("/proc/self/status").read_text().splitlines())
            free.append((limit / 1024 - int(status["VmSize"].split()[0])) / 1024)
    except (OSError, KeyError, ValueError):  # not Linux
        pass
    return min(free) if free else None


def positive_int(text: str) -> int:
    """An argparse type: a count, a whole number of at least 1 (0 runs nothing and has no median)."""
    try:
        value = whole_number(text, text, signed=True)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not {WHOLE_RULE}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def plain_float(text: str) -> float:
    """An argparse type: a finite number written in plain digits (its range is the command's to
    check); one past a float's range is refused as too large (or too far below 0)."""
    try:
        value = decimal_number(text, text, signed=True)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not {DECIMAL_RULE}") from None
    if math.isinf(value):
        raise argparse.ArgumentTypeError(
            f"{text} is {'too large' if value > 0 else 'too far below 0'}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a duration or a rate, a finite number above 0."""
    try:
        value = decimal_number(text, text, signed=True)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not {DECIMAL_RULE}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def span_text(lo: float, hi: float | None = None) -> str:
    """A range as the help and the error both say it: "1 to 200", or "1 or more"."""
    return f"{lo:g} or more" if hi is None else f"{lo:g} to {hi:g}"


def int_between(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``lo`` to ``hi`` (None: no upper bound), refused with
    the range the option's help gives (:func:`span_text`)."""
    def parse(text: str) -> int:
        try:
            value = whole_number(text, text, signed=True)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text} is not {WHOLE_RULE}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{text} is outside {span_text(lo, hi)}")
        return value

    return parse


def float_at_least(lo: float) -> Callable[[str], float]:
    """An argparse type: a finite number of at least ``lo``, refused with the range the help
    gives (:func:`span_text`)."""
    def parse(text: str) -> float:
        try:
            value = decimal_number(text, text, signed=True)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text} is not {DECIMAL_RULE}") from None
        if not lo <= value < float("inf"):
            raise argparse.ArgumentTypeError(f"{text} is outside {span_text(lo)}")
        return value

    return parse


DEMO_MAX_BOXES = 200
"""Most boxes ``miroir demo`` runs (as :func:`demo.floor.run_demo` allows)."""

UNEVEN_FILES_S = 1.0
"""Agent and line files whose lengths differ by this much are warned of (one is padded)."""


def cmd_analyze(args: argparse.Namespace) -> int:
    """Run the edge pipeline offline over recordings and print the call's metrics."""
    from edge.pipeline import ANALYZE_BASE_MB, ANALYZE_MB_PER_HOUR, analyze, load_vad_model
    from edge.source import TWO_FILES, AudioInputError, WavStream, pair_blocks

    two_files = f"{TWO_FILES}: `miroir analyze NEAR --far FAR`"
    try:  # each file's header and first second, so that a bad file fails at once
        near = WavStream(args.near, two_files=two_files)
        far = WavStream(args.far, two_files=two_files) if args.far else None
    except AudioInputError as exc:
        raise CliError(str(exc)) from None
    from edge.affect import AffectConfig

    campaign = None
    if args.campaign is not None:
        from edge.campaign import CampaignError
        from edge.campaign import load as load_campaign

        try:
            campaign = load_campaign(args.campaign)
        except CampaignError as exc:
            raise CliError(str(exc)) from None
        if args.affect and not campaign.affect.disclosed:
            raise CliError(f"--affect: the campaign {args.campaign} does not disclose emotion "
                           "recognition to the prospect ([affect] disclosed = true), so a box "
                           "keeps the model off for its calls")
    near_s, far_s = near.expected_s, far.expected_s if far else 0.0
    # None: a pipe's writer left no length (the progress then gives no total)
    expected_s = None if near_s is None or far_s is None else max(near_s, far_s)
    if far is not None and near_s is not None and far_s is not None \
            and abs(near_s - far_s) >= UNEVEN_FILES_S:
        short = "agent" if near_s < far_s else "line"
        log.warning("the agent file lasts %.1f s and the line file %.1f s: past its end the %s "
                    "channel is read as digital silence, that is as no signal (give both channels "
                    "of the same call, from the same start)", near_s, far_s, short)
    need_mb = ANALYZE_BASE_MB + ANALYZE_MB_PER_HOUR * (expected_s or 0.0) / 3600.0
    free_mb = _memory_free_mb()
    if expected_s is not None and free_mb is not None and need_mb > free_mb:  # at once, not hours on
        raise CliError(f"{expected_s / 3600.0:.1f} h of audio needs about {need_mb:.0f} MB to "
                       f"analyse and {free_mb:.0f} MB is free; {_split_hint(free_mb, expected_s)}")
    try:  # the files are read a second at a time, never whole
        result = analyze(pair_blocks(near, far), load_vad_model(),
                         affect=AffectConfig(enabled=args.affect), campaign=campaign,
                         expected_s=expected_s)
    except AudioInputError as exc:  # a read that failed midway
        raise CliError(str(exc)) from None
    except MemoryError:
        length = "a recording" if expected_s is None else f"{expected_s / 3600.0:.1f} h of audio"
        raise CliError(f"out of memory analysing {length} (about {ANALYZE_MB_PER_HOUR:.0f} MB per "
                       f"hour); {_split_hint(None, expected_s or 7200.0)}") from None
    result["files"] = {"near": str(args.near), "far": str(args.far) if args.far else None}
    from edge.quality import QualityConfig

    dead_after_s = QualityConfig().dead_after_s
    if result["duration_s"] < dead_after_s:
        log.warning("the recording lasts %.1f s: a channel reads as dead only after %.1f s flat, "
                    "so a dead channel is not told from silence in so short a file",
                    result["duration_s"], dead_after_s)
    if args.json:
        json.dump(result, sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
        return 0
    call = result["call"]
    print(f"duration: {result['duration_s']:.1f} s")
    for ch, label in (("near", "agent (near)"), ("far", "line (far)")):
        if ch == "far" and not args.far:
            continue
        segs = result["vad"][ch]["segments"]
        if call[f"{ch}_signal"] == "none":
            print(f"{label}: no signal (a dead or disconnected channel)")
            continue
        flag = "" if call[f"{ch}_signal"] == "ok" else f"; signal: {call[f'{ch}_signal']}"
        if call[f"{ch}_no_signal_s"] > 0:  # a stretch with none: its share counts it as silence
            flag += f"; no signal for {call[f'{ch}_no_signal_s']:.0f} s"
        print(f"{label}: speech {100 * call[f'{ch}_speech_ratio']:.1f} % in {len(segs)} segments{flag}")
    for ep in result["cues"]:
        end = "open" if ep["end_s"] is None else f"{ep['end_s']:.1f} s"
        print(f"cue {ep['cue']} ({ep['label_en']}): {ep['start_s']:.1f} s to {end}, {ep['severity']}, "
              f"{ep['evidence_value']:g} {ep['evidence_unit']} (threshold {ep['evidence_threshold']:g})")
    fatigue = result["fatigue"]
    if fatigue.get("fatigue_index") is not None:
        print(f"fatigue index: {fatigue['fatigue_index']:g} / 100"
              + ("; break suggested" if fatigue.get("break_suggested") else ""))
    return 0


_interrupted = 0
"""The stop signals received in this run of :func:`main` (the first raised KeyboardInterrupt)."""

STILL_STOPPING = b"miroir: still stopping (cleaning up); Ctrl-\\ or kill -9 forces it\n"
"""Said once, at the second stop signal: the command has not ignored it, it is finishing its
clean-up (a half copy being removed), and the user is told how to force it."""


def _interrupt(signum: int, frame: Any) -> None:
    """A stop signal as Ctrl-C: :func:`main` ends the command, "interrupted" (exit 130). Raised
    once: the signals that follow land in the command's clean-up (a half copy being removed) or
    in that line, and are only noted (the second says so on stderr, by ``os.write``, which a
    signal handler may call while a line is being printed)."""
    global _interrupted
    _interrupted += 1
    if _interrupted == 2:
        with contextlib.suppress(OSError):
            os.write(2, STILL_STOPPING)
    if _interrupted == 1:
        raise KeyboardInterrupt


def _say_interrupted() -> None:
    """Say "interrupted" on stderr in one write: ``print`` writes the line and its newline apart,
    and a second stop signal landing between them put its line on this one (a suite run:
    "miroir: interruptedmiroir: still stopping ...")."""
    with contextlib.suppress(OSError):  # a terminal that hung up cannot be written to
        sys.stderr.write("miroir: interrupted\n")
        sys.stderr.flush()


def _stop_signals_interrupt() -> dict[int, Any]:
    """SIGTERM (a service stop, `kill`) and SIGHUP (a closed terminal) end every command as Ctrl-C
    does, each raised once (:func:`_interrupt`), Ctrl-C's as well: "interrupted", exit 130, the
    command's cleanup run (no half-written file left); a signal ignored (`nohup`, a background
    job's Ctrl-C) stays ignored, and a command with its own handlers installs them after.
    Not for the two services (`edge run`, `dashboard serve`): systemd counts an end by SIGTERM
    as a clean stop, and each stops itself on it. Returns the handlers replaced, for
    :func:`main` to put back."""
    if threading.current_thread() is not threading.main_thread():  # (only it may set them)
        return {}
    # Ctrl-C too, though Python raises it already: at every press, so that a second one cut the
    # command's clean-up short as a repeated SIGTERM did; an ignored one (a background job)
    # stays ignored
    defaults = {signal.SIGTERM: signal.SIG_DFL, signal.SIGHUP: signal.SIG_DFL,
                signal.SIGINT: signal.default_int_handler}
    return {sig: signal.signal(sig, _interrupt) for sig, default in defaults.items()
            if signal.getsignal(sig) is default}


def cmd_edge_run(args: argparse.Namespace) -> int:
    """Run the box agent: capture (or replay), analyse, publish metrics."""
    from edge import settings as edge_settings

    try:
        cfg = edge_settings.load(args.config, state_dir=args.state_dir)
    except edge_settings.SettingsError as exc:
        raise CliError(str(exc)) from None
    named = "--state-dir" if args.state_dir is not None else f"{args.config}: state_dir"
    same_box = _same_box_running(cfg)  # before the state directory is made or locked
    if same_box is not None:
        raise CliError(f"{args.config}: {same_box}")
    problem = edge_settings.state_dir_problem(cfg.state_dir)  # said now, not in a traceback
    if problem is not None:
        raise CliError(f"{named} {cfg.state_dir}: {problem}")
    try:  # before anything in it is opened: a second agent there would share the outbox
        lock = edge_settings.hold_state_dir(cfg.state_dir)
    except edge_settings.SettingsError as exc:
        raise CliError(f"{named} {cfg.state_dir}: {exc}") from None
    try:
        return _run_agent(args, cfg, named)
    finally:
        os.close(lock)


def _same_box_running(cfg: EdgeSettings) -> str | None:
    """Why this box already runs (another agent listens on its control socket, its state
    elsewhere: the two would close each other's broker connection); None if it does not, or if
    the other holds this state directory too (the lock's refusal names its pid)."""
    from edge import settings as edge_settings
    from edge.control import listened_on

    path = cfg.control_socket
    if path is None or not path.is_socket() or not listened_on(path):
        return None
    if edge_settings.held_by_another(cfg.state_dir):
        return None
    return (f"box {cfg.box} already runs: another agent listens on its control_socket {path} "
            "(its state elsewhere; both would connect to the broker as this box, each closing "
            "the other's connection): stop it first (`sudo systemctl stop miroir-box` for the "
            "service); nothing was changed")


def _run_agent(args: argparse.Namespace, cfg: EdgeSettings, named: str) -> int:
    """:func:`cmd_edge_run` once the state directory is held: the agent until it stops."""
    from edge import baselines
    from edge import settings as edge_settings
    from edge.box import Box
    from edge.campaign import CampaignError
    from edge.outbox import await_clock
    from edge.pipeline import load_vad_model
    from edge.publisher import PublisherError
    from edge.source import TWO_FILES, AudioInputError, ReplaySource, pair, read_wav
    from edge.watchdog import Notifier
    from models.build import ModelError

    if cfg.clock_wait_s > 0:  # systemd's start timeout must not kill the wait (nor loop on it)
        Notifier().notify(f"EXTEND_TIMEOUT_USEC={int((cfg.clock_wait_s + 60.0) * 1e6)}",
                          "STATUS=waiting for NTP before numbering messages from the clock")
    behind = cfg.baseline_max_age_h > 0 and baselines.clock_behind(cfg.state_dir)
    await_clock(cfg.state_dir / "outbox.sqlite", cfg.clock_wait_s, behind=behind)
    try:  # its runtime missing (a model file missing or damaged too): one line, the key named
        vad = load_vad_model(cfg.model_backend)
    except RuntimeError as exc:
        raise CliError(f"{args.config}: model_backend {cfg.model_backend}: {exc}") from None
    try:
        box = Box(cfg, vad, version=__version__)
    except (CampaignError, PublisherError) as exc:
        raise CliError(str(exc)) from None

    def check_files() -> None:  # a `reload` command: the files the service would start with
        from edge.campaign import load as load_campaign
        from edge.publisher import check_tls_files

        fresh = edge_settings.load(args.config, state_dir=args.state_dir)
        # what the start would stop on: refused now, the box runs on
        problem = edge_settings.state_dir_problem(fresh.state_dir)
        if problem is not None:
            raise edge_settings.SettingsError(f"{named} {fresh.state_dir}: {problem}")
        try:
            check_tls_files(fresh)
        except PublisherError as exc:
            raise edge_settings.SettingsError(f"{args.config}: {exc}") from None
        try:  # its runtime installed, its model file whole: as the start will load it
            load_vad_model(fresh.model_backend)
        except (ModelError, RuntimeError, ValueError, OSError) as exc:
            raise edge_settings.SettingsError(
                f"{args.config}: model_backend {fresh.model_backend}: {exc}") from None
        if fresh.campaign_file is not None:
            load_campaign(fresh.campaign_file)

    box.on_reload = check_files
    box.install_signal_handlers()
    if args.replay:
        # the box's handlers only ask its loop to stop: until it runs, SIGTERM and Ctrl-C end the
        # command (a FIFO no one writes to yet waits in open(), which a handler that returns
        # does not end)
        handlers = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            two_files = f"{TWO_FILES}: `miroir edge run --config " \
                f"{shlex.quote(str(args.config))} --replay NEAR FAR`"
            audio = pair(read_wav(args.replay[0], two_files=two_files),
                         read_wav(args.replay[1], two_files=two_files))
        except AudioInputError as exc:
            raise CliError(str(exc)) from None
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        replay = ReplaySource(audio, realtime=not args.fast, loop=args.loop)
        log.info("box %s/%s replaying %s and %s", cfg.site, cfg.box, *args.replay)
        box.run(replay.blocks())
        return box.exit_code
    from edge.capture import CaptureConfig, CaptureError, CaptureSource

    if cfg.capture_device is None:
        raise CliError("no capture_device in the settings (see `miroir edge devices`), "
                       "or give --replay NEAR.wav FAR.wav")
    capture = CaptureSource(CaptureConfig(device=cfg.capture_device,
                                          far_device=cfg.capture_far_device,
                                          device_rate_hz=cfg.capture_rate_hz))
    # one stop flag from before the open (seconds for some adapters): a SIGTERM meanwhile set
    # the box's, which the capture's then replaced, and the box ran on
    capture.stop_event = box.stop_event
    try:
        capture.open()
    except CaptureError as exc:
        log.warning("%s; waiting for the device", exc)
    box.source_status = capture.status_fields
    log.info("box %s/%s capturing from %s", cfg.site, cfg.box, cfg.capture_device)
    try:
        box.run(capture.blocks())
    finally:
        capture.close()
    return box.exit_code


def cmd_edge_devices(args: argparse.Namespace) -> int:
    """List the audio input devices this box can capture from."""
    from edge.capture import CaptureError, list_devices

    try:
        names = list_devices()
    except CaptureError as exc:
        raise CliError(str(exc)) from None
    for name in names:
        print(name)
    if not names:
        print("no audio input device found", file=sys.stderr)
    return 0


def cmd_dashboard_serve(args: argparse.Namespace) -> int:
    """Serve the supervisor dashboard (settings from MIROIR_DASH_* environment variables)."""
    import sqlite3

    from dashboard.app import serve
    from dashboard.cli import db_error, load_settings

    settings = load_settings()
    try:
        serve(settings)
    except ValueError as exc:
        raise CliError(f"dashboard: {exc}") from None
    except OSError as exc:
        raise CliError(f"dashboard: {os_error_text(exc)}") from None
    except sqlite3.Error as exc:  # opened before anything is served
        raise db_error(settings.db_path, exc) from None
    return 0


def cmd_models_build(args: argparse.Namespace) -> int:
    """Build the model files from pinned, checksummed sources."""
    from models.build import ModelError, build

    try:
        for path in build(force=args.force):
            print(f"ok {path}")
    except ModelError as exc:
        raise CliError(str(exc)) from None
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run a live demo floor: broker, dashboard and simulated boxes replaying French calls."""
    from demo.calls import DemoToolError
    from demo.floor import DemoError, run_demo

    if not args.verbose:
        # the demo says what it does in lines of its own: the modules' routine records (a
        # certificate per box, each database migration) stay out of the terminal; warnings show
        logging.getLogger().setLevel(logging.WARNING)
    try:
        return run_demo(boxes=args.boxes, seconds=args.seconds, as_json=args.json,
                        http_port=args.port, workdir=args.workdir)
    except (DemoError, DemoToolError) as exc:
        raise CliError(str(exc)) from None


def cmd_bench_edge(args: argparse.Namespace) -> int:
    """Whole edge pipeline vs fp32 Silero VAD alone on real two-party audio (one thread)."""
    from bench.edge import ShortAudioError, run

    try:
        result = run(seconds=args.seconds, repeats=args.repeats, affect=args.affect,
                     prospect_alone=args.prospect_alone)
    except ShortAudioError as exc:
        raise CliError(f"--seconds {args.seconds:g}: {exc}") from None
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


def cmd_bench_accuracy(args: argparse.Namespace) -> int:
    """Accuracy on real recordings with ground truth: VAD, pitch, voice quality, rate, dynamics."""
    from bench.accuracy import main as accuracy_main

    return accuracy_main(["--json"] if args.json else [])


def cmd_bench_latency(args: argparse.Namespace) -> int:
    """Speech onset in a box's audio to the seat on an open page, and box publish to the page."""
    from bench.latency import run

    print(json.dumps(run(samples=args.samples, boxes=args.boxes), indent=None if args.json else 2))
    return 0


def cmd_bench_vad(args: argparse.Namespace) -> int:
    """Silero VAD variants: ONNX Runtime per channel, batched, pre-gate, int8; LiteRT per channel,
    batched, and batched with the pre-gate (the box); accuracy and cost."""
    from bench.vad import run

    print(json.dumps(run(repeats=args.repeats), indent=None if args.json else 2))
    return 0


class _CommandParser(argparse.ArgumentParser):
    """A command's parser: takes ``-v`` after the command too, and names its own usage when an
    option is unknown (argparse left that to the top parser: ``miroir demo --bxoes 3`` printed
    ``usage: miroir [-h] [--version] [-v] COMMAND ...``), a prefix of an option included
    (argparse took ``--rol`` for ``--role``; a prefix that means one option today means another
    once an option is added)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})
        # SUPPRESS: absent after the command, it leaves the value given before the command
        self.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                          help="log debug messages (as `miroir -v COMMAND`)")

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        """Parse as argparse does, but an argument left over is this command's usage error."""
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)} "
                       f"(`{self.prog} --help` lists its options)")
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (also used by the README test)."""
    parser = argparse.ArgumentParser(
        prog="miroir", description="Miroir: audio-free vocal posture metrics for call-centre floors.",
        allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"miroir {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_CommandParser)

    p = sub.add_parser("demo", help="run a live demo floor (broker, dashboard, simulated boxes)",
                       description=cmd_demo.__doc__)
    p.add_argument("--boxes", type=int_between(1, DEMO_MAX_BOXES), default=8,
                   help=f"number of simulated boxes, {span_text(1, DEMO_MAX_BOXES)} (default 8)")
    p.add_argument("--seconds", type=positive_float, default=None,
                   help="stop after this many seconds, a positive number (default: run until "
                        "Ctrl-C)")
    p.add_argument("--json", action="store_true",
                   help="headless: print one JSON summary at the end (needs --seconds)")
    p.add_argument("--port", type=int_between(1, 65535), default=8000,
                   help=f"dashboard HTTP port, {span_text(1, 65535)} (default 8000)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the demo keeps its site files (default: a fresh temporary folder)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("analyze", help="analyse recordings offline and print the call's metrics",
                       description=cmd_analyze.__doc__)
    p.add_argument("near", type=Path, help="the agent's channel, a mono WAV file")
    p.add_argument("--far", type=Path, default=None, help="the line's channel, a mono WAV file")
    p.add_argument("--json", action="store_true",
                   help="print the whole result as JSON (conversation, prosody, call summaries, "
                        "per-second metrics and events, per-frame VAD probabilities and speech "
                        "segments); without it, a summary")
    p.add_argument("--affect", action="store_true",
                   help="run the prospect affect model on the far channel (only for calls whose "
                        "script discloses emotion recognition to the prospect)")
    p.add_argument("--campaign", type=Path, default=None,
                   help="the campaign's cue settings (TOML, docs/cues.md; default: the defaults)")
    p.set_defaults(func=cmd_analyze)

    edge = sub.add_parser("edge", help="the box agent", description="Commands run on a box.")
    edge_sub = edge.add_subparsers(dest="edge_command", metavar="COMMAND", required=True)
    p = edge_sub.add_parser("run", help="run the box agent", description=cmd_edge_run.__doc__)
    p.add_argument("--config", type=Path, required=True, help="the box's settings file (TOML)")
    p.add_argument("--state-dir", type=Path, default=None,
                   help="override the settings' state_dir (the outbox, baselines, private mode, last "
                        "good campaign)")
    p.add_argument("--replay", nargs=2, type=Path, metavar=("NEAR", "FAR"),
                   help="replay two mono WAV files instead of capturing from capture_device")
    p.add_argument("--loop", action="store_true", help="replay in a loop")
    p.add_argument("--fast", action="store_true", help="replay as fast as possible, not paced")
    p.set_defaults(func=cmd_edge_run)
    p = edge_sub.add_parser("devices", help="list the audio input devices",
                            description=cmd_edge_devices.__doc__)
    p.set_defaults(func=cmd_edge_devices)

    dash = sub.add_parser("dashboard", help="the supervisor dashboard",
                          description="Commands run on the site server.")
    dash_sub = dash.add_subparsers(dest="dashboard_command", metavar="COMMAND", required=True)
    p = dash_sub.add_parser("serve", help="serve the dashboard and ingest MQTT",
                            description=cmd_dashboard_serve.__doc__)
    p.set_defaults(func=cmd_dashboard_serve)

    models = sub.add_parser("models", help="model files", description="Model file commands.")
    models_sub = models.add_subparsers(dest="models_command", metavar="COMMAND", required=True)
    p = models_sub.add_parser("build", help="build model files from pinned, checksummed sources",
                              description=cmd_models_build.__doc__)
    p.add_argument("--force", action="store_true", help="rebuild even files that verify")
    p.set_defaults(func=cmd_models_build)

    bench = sub.add_parser("bench", help="benchmarks and accuracy reports (JSON)",
                           description="Benchmarks: medians, ratios against a baseline run "
                                       "in the same process.")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="COMMAND",
                                     required=True)
    p = bench_sub.add_parser("edge", help="edge pipeline cost against Silero alone (RTF, RSS)",
                             description=cmd_bench_edge.__doc__)
    p.add_argument("--seconds", type=positive_float, default=600.0,
                   help="audio length (default 600)")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help="runs of each side, their median kept (default 3)")
    p.add_argument("--affect", action="store_true",
                   help="with the prospect affect stage on (as a campaign that discloses it)")
    p.add_argument("--prospect-alone", action="store_true",
                   help="a call where the prospect speaks alone (EmoDB speech, the agent's side a "
                        "quiet floor) instead of the two headsets")
    p.add_argument("--json", action="store_true", help="one line of JSON")
    p.set_defaults(func=cmd_bench_edge)
    p = bench_sub.add_parser("accuracy", help="accuracy figures on real speech with ground truth",
                             description=cmd_bench_accuracy.__doc__)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_bench_accuracy)
    p = bench_sub.add_parser("latency", help="speech onset to the supervisor's page (chromium)",
                             description=cmd_bench_latency.__doc__)
    p.add_argument("--samples", type=positive_int, default=200,
                   help="speech onsets measured (default 200)")
    p.add_argument("--boxes", type=positive_int, default=8,
                   help="boxes speaking in parallel (default 8)")
    p.add_argument("--json", action="store_true", help="one line of JSON")
    p.set_defaults(func=cmd_bench_latency)
    p = bench_sub.add_parser("vad", help="Silero VAD variants side by side",
                             description=cmd_bench_vad.__doc__)
    p.add_argument("--repeats", type=positive_int, default=5,
                   help="runs of each variant, their median kept (default 5)")
    p.add_argument("--json", action="store_true", help="one line of JSON")
    p.set_defaults(func=cmd_bench_vad)
    groups = {"root": sub, "edge": edge_sub, "dashboard": dash_sub, "models": models_sub,
              "bench": bench_sub}
    for name in EXTENSIONS:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register_cli(groups)
    return parser


def _log_stream() -> TextIO:
    """stderr for the log on a descriptor of its own: the capture stage diverts descriptor 2 for
    a moment while PortAudio probes devices, and another thread's log lines must not go there."""
    if logging.getLogger().handlers:  # already set up (a second call in the same process)
        return sys.stderr
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, errors="backslashreplace")
    except (AttributeError, OSError, ValueError):  # no descriptor (a test's captured stderr)
        return sys.stderr


def _is_model_error(exc: BaseException) -> bool:
    """A model file missing or damaged (:class:`models.build.ModelError`, which says how to build
    it), from whichever command loaded it; the module is not imported for the check."""
    build = sys.modules.get("models.build")
    return build is not None and isinstance(exc, build.ModelError)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``miroir`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=_log_stream())
    handler: Handler = args.func
    global _interrupted
    _interrupted = 0
    before = {} if handler in (cmd_edge_run, cmd_dashboard_serve) else _stop_signals_interrupt()
    try:
        return handler(args)
    except CliError as exc:
        print(f"miroir: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C, or a command's own stop (SIGTERM, a closed terminal)
        _say_interrupted()
        return 130
    except BrokenPipeError:  # `miroir analyze --json | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a path that is no folder, no room, no permission: not a bug
        log.debug("%s in full", type(exc).__name__, exc_info=True)
        print(f"miroir: error: {os_error_text(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # (after BrokenPipeError, which is one)
        if not _is_model_error(exc):
            raise
        print(f"miroir: error: {exc}", file=sys.stderr)  # it says which command builds it
        return 2
    finally:
        for sig, previous in before.items():
            signal.signal(sig, previous)


if __name__ == "__main__":
    sys.exit(main())
