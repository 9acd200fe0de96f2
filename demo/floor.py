"""The live demo floor: a real Mosquitto, the dashboard and N boxes replaying French calls.

Every part is a real process started here: the broker with the project's generated TLS and ACL
configuration, ``miroir dashboard serve``, and one ``miroir edge run --replay`` per box. A box that
exits is started again (as systemd does on a box), and so is the broker. Ctrl-C, SIGTERM, the
terminal's hang-up (SIGHUP, unless ignored as ``nohup`` does) or ``--seconds`` stops them all, boxes
first so that their outboxes drain. Killed with SIGKILL, the demo cannot stop them: its guard
(``demo/guard.py``, a process of its own told of each process started) then does.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.outbox import numbers_used
from miroir.cli import DEMO_MAX_BOXES

if TYPE_CHECKING:
    from demo.calls import DemoCall

log = logging.getLogger(__name__)

SITE = "demo"
REPO = Path(__file__).resolve().parent.parent
CALLS_DIR = REPO / ".cache" / "demo-calls"


AGENT_NAMES = ("Inès", "Karim", "Léa", "Youssef", "Chloé", "Mamadou", "Sarah", "Hugo")
"""The demo floor's agents, seated in order; two teams, ``equipe-a`` and ``equipe-b``."""


def seat_agents(db_path: Path, box_ids: list[str]) -> None:
    """Seat a demo agent at each box, half the floor in each of two teams, as ``miroir dashboard
    import`` does from a site's inventory: the agent pages and team boards have someone to show."""
    from dashboard import db as store
    from dashboard import schema

    rows = [{"box": box, "seat": box, "agent": f"agent-{i + 1:02d}",
             "agent_name": AGENT_NAMES[i % len(AGENT_NAMES)] + (f" {i // len(AGENT_NAMES) + 1}"
                                                               if i >= len(AGENT_NAMES) else ""),
             "team": "equipe-a" if i < (len(box_ids) + 1) // 2 else "equipe-b"}
            for i, box in enumerate(box_ids)]
    db = store.open_db(db_path)
    try:
        schema.ensure_schema(db)
        schema.import_inventory(db, rows, site=SITE)
    finally:
        db.conn.close()


BOX_QUICK_EXIT_S = 10.0
"""A box that exits sooner than this after its start failed to start..."""
BOX_QUICK_EXITS = 3
"""...and this many such exits in a row end the demo (a box's systemd start limit does the same)."""


LAG_WARN_MS = 1000.0
"""A p95 from a box's publish to the dashboard's database row above this (the README's budget for
speech onset to the supervisor's page) means this machine cannot keep up with the demo's boxes."""
LAG_CHECK_S = 10.0
"""While the demo runs, the lag is measured over each such window (the first one, as the boxes
start, left out), and a warning given the first time it is over ``LAG_WARN_MS``."""

INGEST_WAIT_S = 1.0
"""Once the boxes stopped, how long the dashboard is given to store their last messages before it
stops too; the demo goes on as soon as it holds them all (:func:`ingested_all`)."""

LAG_SCAN_S = 600.0
"""How long before a window a metrics row it stored may have been sent, for the index on ``ts``."""


def lag_warning(p95_ms: float | None, boxes: int) -> str | None:
    """The warning line for a publish-to-row p95 of ``p95_ms`` with ``boxes`` boxes, None if the
    machine keeps up."""
    if p95_ms is None or p95_ms <= LAG_WARN_MS:
        return None
    hint = (f"run fewer boxes, e.g. --boxes {boxes // 2}" if boxes > 1
            else "close what else keeps the processor busy")
    return (f"warning: the dashboard gets the boxes' metrics {p95_ms / 1000:.1f} s after they are "
            f"sent (p95; {LAG_WARN_MS / 1000:g} s at most when the machine keeps up): this machine "
            f"cannot keep up with {boxes} box{'es' if boxes > 1 else ''}, the floor shows them late; "
            f"{hint}")


def _lag_p95_ms(db_path: Path, since_ts: float) -> float | None:
    """p95 of publish to database row (ms) of the metrics the dashboard stored since ``since_ts``
    (epoch seconds); None if none or the database cannot be read now."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True,
                                                timeout=1.0)) as db:
            # through the index on ts (a kept --workdir holds days of rows): a row stored since
            # was sent at most LAG_SCAN_S before, or an earlier window has warned already
            rows = db.execute("SELECT ingested_ts - ts FROM metrics WHERE ts > ? AND ingested_ts > ?",
                              (since_ts - LAG_SCAN_S, since_ts)).fetchall()
    except sqlite3.Error:
        return None
    return _percentile([1000 * r[0] for r in rows], 95)


class DemoError(RuntimeError):
    """The demo could not start or did not complete."""


@dataclass
class _Box:
    """One simulated box's process, started again when it exits, as systemd does on a box."""

    name: str
    cmd: list[str]
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    started_s: float = 0.0
    quick_exits: int = 0
    guard: _Guard | None = None

    def start(self) -> None:
        """Start the box's process, its output appended to its log, in a process group of its
        own: a terminal's Ctrl-C reaches the demo alone, which stops the boxes first."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, process_group=0)
        if self.guard is not None:
            self.guard.watch(_Guard.BOXES, self.proc.pid)
        self.started_s = time.monotonic()

    def restart(self, code: int) -> None:
        """Start the box again after it exited with ``code``, unless it keeps failing to start."""
        quick = time.monotonic() - self.started_s < BOX_QUICK_EXIT_S
        self.quick_exits = self.quick_exits + 1 if quick else 0
        if self.quick_exits >= BOX_QUICK_EXITS:
            raise DemoError(f"box {self.name} exited {self.quick_exits} times in a row within "
                            f"{BOX_QUICK_EXIT_S:.0f} s of its start (code {code}); its log says: "
                            f"{_log_end(self.log)}")
        log.warning("box %s exited (code %s); starting it again", self.name, code)
        self.start()


def _log_end(path: Path) -> str:
    """A process's log's last error line, else its last line, for an error that outlives the log
    (a temporary folder is removed when the demo stops): uvicorn's bind error, for one, is
    followed by its shutdown lines."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    errors = [ln for ln in lines if ln.startswith(("ERROR", "CRITICAL", "Traceback", "miroir: error:"))
              or "Error" in ln]
    return (errors or lines or ["(empty)"])[-1][:300]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[k], 1)


def _box_config(path: Path, box: str, site: Any, state_dir: Path) -> Path:
    cert = site.box(box)
    path.write_text(
        f'site = "{SITE}"\nbox = "{box}"\nbroker_host = "127.0.0.1"\n'
        f"broker_port = {site.port}\n"
        f'ca_file = "{site.ca_cert}"\ncert_file = "{cert.cert}"\nkey_file = "{cert.key}"\n'
        f'state_dir = "{state_dir}"\n'
        # a simulated box runs on the server: its clock is the server's, not a box's to check
        "clock_shared = true\n"
    )
    return path


def _listener(port: int) -> str | None:
    """The process listening on TCP ``port`` as ``pid N (command)``; None if there is none this
    user may see, or not on Linux."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:  # local address, remote address, state (0A: listening), ..., inode
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                sockets.add(f"socket:[{fields[9]}]")
    if not sockets:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in sockets for fd in (proc / "fd").iterdir()):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").strip()
                return f"pid {proc.name} ({command.decode(errors='replace')})"
        except OSError:  # gone, or another user's
            continue
    return None


def _check_port(port: int, host: str = "127.0.0.1") -> None:
    """Raise :class:`DemoError` unless ``port`` is a TCP port free on ``host`` (the dashboard's)."""
    if not 1 <= port <= 65535:
        raise DemoError(f"--port {port} is not a TCP port (1..65535)")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise DemoError(f"cannot use port {port} on {host}: {exc.strerror}") from None
            owner = _listener(port)
            if owner is None:
                raise DemoError(f"port {port} on {host} is already in use: stop what uses it or "
                                "choose another with --port") from None
            raise DemoError(f"port {port} on {host} is already in use by {owner}: stop it or "
                            "choose another with --port") from None


def _check_workdir(path: Path) -> None:
    """Create ``path``; raise :class:`DemoError` if the broker's user could not reach files in it."""
    from provisioning.broker import BrokerError, check_reachable

    path.mkdir(parents=True, exist_ok=True)
    try:
        check_reachable(path)
    except BrokerError as exc:
        reason = str(exc).partition(";")[0]  # not the hint meant for a developer
        raise DemoError(f"--workdir {path}: the broker's {reason}; choose a folder every user may "
                        "traverse, such as one under /tmp") from None


def _admin_password(path: Path) -> str:
    """The password of the admin an earlier run in this workdir created, else a new one saved."""
    if path.is_file() and (kept := path.read_text().strip()):
        return kept
    password = secrets.token_urlsafe(12)
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password


class _Interrupts:
    """Ctrl-C, SIGTERM and the terminal's SIGHUP as :class:`KeyboardInterrupt` (the demo's
    processes stopped, its files removed), held while a process is started: one that arrived in
    the middle left that process running, unknown to the stop. Raised once: the signals that
    follow land in the stop itself, and are only noted (one in its first lines, before they set
    the signals aside, cut it short)."""

    def __init__(self) -> None:
        self.held = False
        self.pending = False
        self.stopping = False
        """The stop has begun (an interrupt raised, or the demo's time is up): no more raises."""

    def handler(self, signum: int, frame: object) -> None:
        """The signal handler: interrupt now, or once the process being started is known."""
        if self.held or self.stopping:
            self.pending = True
            return
        self.stopping = True
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the interrupts while the block starts a process and records it."""
        self.held = True
        try:
            yield
        finally:
            self.held = False
        if self.pending and not self.stopping:
            self.stopping = True
            raise KeyboardInterrupt


class _Guard:
    """The guard process (``demo/guard.py``): told of each process the demo starts, it stops them
    if the demo dies without doing so (SIGKILL), the boxes first, and removes the demo's
    temporary folder."""

    BOXES = 0
    """The phase stopped first: the boxes, whose outboxes drain while the broker runs."""
    SERVERS = 1
    """Then the dashboard and the broker."""

    def __init__(self) -> None:
        # a group of its own: a terminal's Ctrl-C or hang-up is the demo's to act on, not its;
        # none of the demo's output: a reader of it (`miroir demo --json | jq`) sees its end when
        # the demo ends, not when the guard does
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("guard.py"))],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, process_group=0)

    def watch(self, phase: int, pid: int | None) -> None:
        """Have the guard stop process ``pid`` in ``phase`` if the demo dies first."""
        if pid is None or self.proc.stdin is None:
            return
        try:
            self.proc.stdin.write(f"{phase} {pid}\n".encode())
            self.proc.stdin.flush()
        except OSError:  # the guard is gone: the demo's own stop still works
            log.warning("the demo's guard exited (code %s)", self.proc.poll())

    def remove_after(self, folder: Path) -> None:
        """Have the guard remove ``folder`` once it stopped the processes, if the demo dies first."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write(f"remove {folder}\n".encode())
                self.proc.stdin.flush()

    def close(self) -> None:
        """The demo stopped its processes itself: end the guard without it stopping anything."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write(b"done\n")
                self.proc.stdin.close()
        try:
            self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _wait_http(url: str, proc: subprocess.Popen[bytes], log_path: Path, port: int,
               timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = _log_end(log_path)
            if "address already in use" in said.lower():  # taken since _check_port found it free
                owner = _listener(port)
                raise DemoError(f"port {port} was taken{f' by {owner}' if owner else ''} while the "
                                "demo started: run it again, or choose another with --port")
            raise DemoError(f"the dashboard exited with code {proc.returncode}; its log says: "
                            f"{said}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise DemoError(f"the dashboard did not answer on {url} within {timeout_s:.0f} s")


def _stop(procs: list[subprocess.Popen[bytes]], timeout_s: float = 15.0) -> None:
    """SIGTERM to each of ``procs``, SIGKILL to those still running ``timeout_s`` later; bounded
    even if a Popen's wait lock was left held (an interrupt between its acquire and its release
    once left the demo waiting for ever on a dashboard already gone)."""
    from provisioning.broker import KILL_WAIT_S

    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(KILL_WAIT_S)
            except subprocess.TimeoutExpired:
                log.warning("pid %d still runs %.0f s after SIGKILL; not waiting for it", proc.pid,
                            KILL_WAIT_S)


def summarize(db_path: Path, outboxes: dict[str, Path],
              numbered_before: dict[str, int] | None = None) -> dict[str, Any]:
    """Compare what each box stored with what the dashboard holds.

    Args:
        db_path: the dashboard's SQLite database.
        outboxes: box id -> that box's outbox file.
        numbered_before: box id -> the last sequence number its outbox had used before this run
            (a ``--workdir`` used before): only the messages numbered since are counted.

    Returns:
        ``boxes_seen``, ``messages_sent``, ``messages_ingested``, ``messages_lost``,
        ``latency_ms_p50`` and ``latency_ms_p95`` (box publish to dashboard row).
    """
    sent = 0
    lost = 0
    ingested = 0
    lags_ms: list[float] = []
    seen = 0
    with sqlite3.connect(db_path) as db:
        for box, outbox in outboxes.items():
            first_seq, last_seq = numbers_used(outbox)
            first_seq = max(first_seq, (numbered_before or {}).get(box, 0) + 1)
            seqs: set[int] = set()
            for table in ("metrics", "events"):
                rows = db.execute(f"SELECT seq, ts, ingested_ts FROM {table} WHERE box = ? "
                                  "AND seq BETWEEN ? AND ?", (box, first_seq, last_seq)).fetchall()
                seqs.update(int(r[0]) for r in rows)
                if table == "metrics":
                    lags_ms.extend(1000 * (r[2] - r[1]) for r in rows)
            sent += last_seq - first_seq + 1
            ingested += len(seqs)
            lost += len(set(range(first_seq, last_seq + 1)) - seqs)
            seen += bool(seqs)
    return {
        "boxes_seen": seen,
        "messages_sent": sent,
        "messages_ingested": ingested,
        "messages_lost": lost,
        "latency_ms_p50": _percentile(lags_ms, 50),
        "latency_ms_p95": _percentile(lags_ms, 95),
    }


def ingested_all(db_path: Path, outboxes: dict[str, Path],
                 numbered_before: dict[str, int] | None = None) -> bool:
    """True when the dashboard's database holds every message the boxes numbered in this run
    (:func:`summarize` finds none lost); False while one is missing or the database cannot be
    read."""
    if not db_path.exists():  # (summarize's connection would make an empty one)
        return False
    try:
        return summarize(db_path, outboxes, numbered_before)["messages_lost"] == 0
    except sqlite3.Error:
        return False


def run_demo(boxes: int = 8, seconds: float | None = None, as_json: bool = False,
             http_port: int = 8000, workdir: Path | None = None) -> int:
    """Start the whole floor; return 0 when every box reported (with ``seconds``) or on Ctrl-C.

    Args:
        boxes: number of simulated boxes.
        seconds: run this long, then stop and summarise; None runs until Ctrl-C.
        as_json: print only one JSON summary on stdout.
        http_port: the dashboard's port on 127.0.0.1.
        workdir: where to keep the site files (default: a fresh temporary folder, removed after).

    Returns:
        The process exit code.
    """
    from demo.calls import build_calls
    from provisioning import broker as broker_files
    from provisioning.broker import BrokerError, new_site_dir

    if not 1 <= boxes <= DEMO_MAX_BOXES:
        raise DemoError(f"--boxes must be between 1 and {DEMO_MAX_BOXES}")
    if as_json and seconds is None:
        raise DemoError("--json needs --seconds")
    if seconds is not None and not 0 < seconds < math.inf:
        raise DemoError(f"--seconds {seconds} is not a positive number of seconds")
    _check_port(http_port)
    if not os.access(broker_files.MOSQUITTO, os.X_OK):
        raise DemoError(f"the demo's broker needs Mosquitto ({broker_files.MOSQUITTO} is missing): "
                        "install the Debian package with `apt-get install mosquitto`")
    if workdir is not None:
        _check_workdir(workdir)
    say = (lambda msg: print(msg, file=sys.stderr)) if as_json else print
    calls = build_calls(CALLS_DIR, progress=lambda m: say(f"  {m}"))
    box_ids = [f"seat-{i + 1:02d}" for i in range(boxes)]
    own_dir = workdir is None
    root = new_site_dir("miroir-demo-") if workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    say(f"site files in {root}")
    guard = _Guard()
    if own_dir:
        guard.remove_after(root)
    try:
        return _run_floor(root, box_ids, calls, guard, say, seconds=seconds, as_json=as_json,
                          http_port=http_port)
    except BrokerError as exc:
        raise DemoError(f"the demo's broker did not start: {exc}") from None
    finally:
        if own_dir:  # after an error too: the site files hold the CA key and the admin password
            shutil.rmtree(root, ignore_errors=True)
        guard.close()


def _run_floor(root: Path, box_ids: list[str], calls: list[DemoCall], guard: _Guard,
               say: Callable[[str], None], *, seconds: float | None, as_json: bool,
               http_port: int) -> int:
    """Run the floor from its site files in ``root`` (see :func:`run_demo`); return the exit
    code. Every process it starts is stopped when it returns, and told to ``guard`` first."""
    from demo.calls import replay_files
    from provisioning.broker import Mosquitto, free_port, make_site

    boxes = len(box_ids)
    site = make_site(root / "site", SITE, box_ids, port=free_port(avoid={http_port}))
    # each process in a group of its own, as each box below: a terminal's Ctrl-C, which signals
    # its whole foreground group, reaches the demo alone, and the demo stops the boxes first
    # (their outboxes drain) while the broker and the dashboard still run
    broker = Mosquitto(site.config, site.port, site.log, own_group=True)
    procs: list[subprocess.Popen[bytes]] = []
    demo_boxes: list[_Box] = []
    pw_file = root / "admin-password"
    password = _admin_password(pw_file)
    db_path = root / "dashboard.sqlite"
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    miroir = [sys.executable, "-m", "miroir"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    outboxes: dict[str, Path] = {}
    numbered_before: dict[str, int] = {}
    interrupts = _Interrupts()
    on_main = threading.current_thread() is threading.main_thread()
    if on_main:
        # Ctrl-C stops the demo even when it was started in the background of a script, where the
        # shell hands it SIGINT ignored (the boxes and the dashboard set their own handlers)
        signal.signal(signal.SIGINT, interrupts.handler)
        signal.signal(signal.SIGTERM, interrupts.handler)
        # the terminal closed (its shell hangs up the demo alone, the others being in groups of
        # their own), unless started with nohup to outlive it
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            signal.signal(signal.SIGHUP, interrupts.handler)
    try:
        replays = [replay_files(call, root / "calls") for call in calls[:boxes]]
        seat_agents(db_path, box_ids)
        with interrupts.hold():
            broker.start()
            guard.watch(_Guard.SERVERS, broker.pid)
        say(f"broker: mosquitto on 127.0.0.1:{site.port} (TLS, client certificates, ACL)")
        # the demo's settings alone: a shell that read a site's dashboard.env must not stop the
        # demo's dashboard (a setting it refuses) nor serve it to the network (its HTTP host)
        dash_env = dict({k: v for k, v in env.items() if not k.upper().startswith("MIROIR_DASH_")},
                        MIROIR_DASH_SITE=SITE, MIROIR_DASH_DB_PATH=str(db_path),
                        MIROIR_DASH_MQTT_PORT=str(site.port),
                        MIROIR_DASH_MQTT_CA=str(site.ca_cert),
                        MIROIR_DASH_MQTT_CERT=str(site.dashboard.cert),
                        MIROIR_DASH_MQTT_KEY=str(site.dashboard.key),
                        MIROIR_DASH_HTTP_PORT=str(http_port),
                        MIROIR_DASH_ADMIN_PASSWORD_FILE=str(pw_file),
                        # a loopback demo with a printed password: no one-time codes
                        MIROIR_DASH_TOTP_REQUIRED="false")
        with interrupts.hold(), (logs / "dashboard.log").open("wb") as out:
            dash = subprocess.Popen([*miroir, "dashboard", "serve"], env=dash_env,
                                    stdout=out, stderr=subprocess.STDOUT, process_group=0)
            procs.append(dash)
            guard.watch(_Guard.SERVERS, dash.pid)
        url = f"http://127.0.0.1:{http_port}/"
        _wait_http(url + "healthz", dash, logs / "dashboard.log", http_port)
        for i, box in enumerate(box_ids):
            call = calls[i % len(calls)]
            state = root / "boxes" / box
            state.mkdir(parents=True, exist_ok=True)
            config = _box_config(state / "box.toml", box, site, state)
            outboxes[box] = state / "outbox.sqlite"
            numbered_before[box] = numbers_used(outboxes[box])[1]  # a kept workdir's earlier runs
            near, far = replays[i % len(calls)]
            demo_boxes.append(_Box(box, [*miroir, "edge", "run", "--config", str(config), "--loop",
                                         "--replay", str(near), str(far)],
                                   logs / f"{box}.log", env, guard=guard))
            with interrupts.hold():
                demo_boxes[-1].start()
            say(f"box {box}: replaying call '{call.name}'")
        if not as_json:
            print(f"\nDashboard: {url}\nLog in as 'admin' with password: {password}\n"
                  f"(also in {pw_file}). Press Ctrl-C to stop.\n", flush=True)
        deadline = None if seconds is None else time.monotonic() + seconds
        lag_since_ts = time.time() + LAG_CHECK_S  # the boxes' start left out
        lag_check = time.monotonic() + 2 * LAG_CHECK_S
        lag_warned = False
        while deadline is None or time.monotonic() < deadline:
            # one Ctrl-C lands in the sleep below or at this block's end, never inside a Popen's
            # poll: one between its lock's acquire and release left the stop waiting for ever
            with interrupts.hold():
                for proc in procs:
                    if (code := proc.poll()) is not None:
                        raise DemoError(f"the dashboard exited early (code {code}); its log says: "
                                        f"{_log_end(logs / 'dashboard.log')}")
                if not broker.running:  # the boxes and the dashboard reconnect by themselves
                    log.warning("the broker exited; starting it again on port %d", site.port)
                    broker.start()
                    guard.watch(_Guard.SERVERS, broker.pid)
                for seat in demo_boxes:
                    if seat.proc is not None and (code := seat.proc.poll()) is not None:
                        seat.restart(code)
                if not lag_warned and time.monotonic() >= lag_check:
                    warning = lag_warning(_lag_p95_ms(db_path, lag_since_ts), boxes)
                    lag_since_ts, lag_check = time.time(), time.monotonic() + LAG_CHECK_S
                    if warning is not None:
                        print(warning, file=sys.stderr, flush=True)
                        lag_warned = True
            time.sleep(0.5)
        interrupts.stopping = True  # the time is up: a signal from now lands in the stop below
    except KeyboardInterrupt:
        seconds = None
        with contextlib.suppress(OSError):  # a terminal that hung up cannot be written to
            say("stopping")
    finally:
        if on_main:  # the stop is bounded: a second Ctrl-C must not leave the site files behind
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
        _stop([seat.proc for seat in demo_boxes if seat.proc is not None])
        ingest_end = time.monotonic() + INGEST_WAIT_S  # the boxes' last messages
        while not ingested_all(db_path, outboxes, numbered_before) \
                and time.monotonic() < ingest_end:
            time.sleep(0.05)
        _stop(procs)
        broker.stop()
    result: dict[str, Any] = (summarize(db_path, outboxes, numbered_before) if db_path.exists()
                              else {"boxes_seen": 0})
    result["boxes"] = boxes
    result["seconds"] = seconds
    if as_json:
        print(json.dumps(result))
    elif seconds is not None:
        say(json.dumps(result, indent=2))
    if seconds is not None and (warning := lag_warning(result.get("latency_ms_p95"), boxes)):
        print(warning, file=sys.stderr)  # the exit code says only what the README promises
    ok = result.get("boxes_seen") == boxes and result.get("messages_lost") == 0
    return 0 if ok or seconds is None else 1

