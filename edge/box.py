"""The box agent's main loop: source -> pipeline -> outbox -> publisher, and commands.

One loop runs the stages and owns the outbox; paho's network thread (or a shared loop) does the
MQTT I/O. SIGTERM or SIGINT ends the loop cleanly: the outbox is drained for up to ``drain_s``
seconds and the retained status says ``offline``, with ``restart`` when the stop is a planned
restart: a good ``reload`` (below), or an update (``miroir edge update`` leaves a note in the state
folder first, :func:`edge.health.note_restart`). A stop for good (``systemctl stop``, a shutdown)
carries none: systemd's SIGTERM is the same for a stop and a restart.

Commands arrive on the box's own ``cmd`` topic (see ``docs/wire.md``); anything on another topic,
malformed, retained or addressed to another box is refused and counted in ``cmd_refused``, never
raised, and so is a private-mode or call-state command sent no later than that state last changed
(a resend must not undo what the agent did since).
Private mode (``private_on``) keeps every metric and event out of the outbox until
``private_off``; the retained status carries ``private`` and is republished at once on a change.
The same local commands (private mode, call state, identify) also come from the box's control
socket (:mod:`edge.control`: the front panel's button, a softphone/CTI connector).

``reload`` re-reads the settings and campaign files: a bad file is refused (logged, counted in
``reload_refused``) and the box goes on as it was; good files end the loop once no call is in
progress, with :data:`EXIT_RELOAD`, and systemd starts the service again with them (read once more
then: files gone bad meanwhile are refused, and the box goes on). SIGHUP (``systemctl reload``) asks
the same. A campaign file found bad at start-up (edited, never reloaded, then a reboot) is replaced
by the last one the box started with (:data:`LAST_GOOD_CAMPAIGN`); ``settings_error`` in the status
says why, as it does after a refused reload. Either way the prospect affect model stays off: the
bad file may be a new campaign whose call script does not disclose it.
"""

from __future__ import annotations

import logging
import math
import signal
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge import baselines
from edge.control import ControlError, ControlSocket, parse
from edge.conversation import ConversationConfig
from edge.health import health_facts, take_restart_note, write_heartbeat
from edge.outbox import Outbox
from edge.publisher import Publisher
from edge.settings import EdgeSettings
from edge.stop import StopFlag
from edge.watchdog import Notifier
from miroir import wire
from miroir.files import atomic_write
from miroir.journal import Refusals

log = logging.getLogger(__name__)

STATUS_EVERY_S = 10.0
"""Period of the retained status while connected, in seconds."""
HEARTBEAT_EVERY_S = 10.0
"""Shortest time between two writes of the heartbeat file (:func:`edge.health.write_heartbeat`,
after an acknowledged message: the update's health check reads it), in seconds."""
PURGE_EVERY_S = 60.0
"""Period of the outbox retention purge, in seconds."""
IDENTIFY_S = 10.0
"""How long an ``identify`` command keeps :attr:`Box.identifying` true, in seconds."""
PANEL_EVERY_S = 2.0
"""Period of the front panel's state file when nothing changes, in seconds."""
EXIT_RELOAD = 75
"""Exit status after a ``reload`` with valid files (``RestartForceExitStatus`` in the unit)."""
CMD_MAX_AGE_S = 60.0
"""A command that sets the seat's state, sent longer ago than this (by the two NTP clocks), is
refused: a ``private_off`` resent after a broken connection must not end a private call the agent
started since. A ``reload`` or ``forget_baselines`` sent further ahead is refused too."""
STATEFUL_ACTIONS = frozenset({"private_on", "private_off", "call_state"})
_STATE_OF = {"private_on": "private mode", "private_off": "private mode",
             "call_state": "call state"}
"""The seat's state each stateful action sets: a command for it sent no later than its last
change (from the ``cmd`` topic or the control socket) is refused, resent or overtaken."""
LAST_GOOD_CAMPAIGN = "campaign.last-good.toml"
"""The campaign file the box last started with, a copy kept in its state directory."""
LAST_RELOAD = "last-reload"
"""When (the sender's ``ts``) the last ``reload`` the box applied was sent, kept in its state
directory: the same command again after the restart it made (a QoS 1 resend) is refused."""


class _Message(Protocol):
    kind: str
    body: dict[str, Any]


class Box:
    """Wires one box's pipeline, outbox and publisher; :meth:`run` consumes audio blocks.

    Args:
        settings: The box's settings.
        model: The VAD model for the default pipeline (unused when ``pipeline`` is given).
        version: Software version put in the status.
        pipeline: A callable turning one block into messages (``kind``, ``body``); by default
            :class:`edge.pipeline.Pipeline` over ``model``.
        outbox: The outbox; by default ``state_dir/outbox.sqlite``.
    """

    def __init__(self, settings: EdgeSettings, model: Any = None, version: str = "", *,
                 pipeline: Callable[[Any], Iterable[_Message]] | None = None,
                 outbox: Outbox | None = None) -> None:
        self.settings = settings
        if pipeline is None:
            from edge.pipeline import Pipeline
            from edge.vad import GateConfig

            gate = GateConfig(settings.vad_on_threshold, settings.vad_off_threshold,
                              settings.vad_min_speech_ms, settings.vad_min_silence_ms)
            campaign, self.settings_error = start_campaign(settings)
            affect = self._affect_stage(settings, campaign is not None and campaign.affect.disclosed)
            saved = baselines.load(settings.state_dir, settings.baseline_max_age_h)
            self._learned_ts = saved.learned_ts
            self.baselines_ts = time.time() if saved.learned_ts is None else saved.learned_ts
            calls = ConversationConfig(call_start_on_speech=settings.call_start_on_speech,
                                       call_end_silence_s=settings.call_end_silence_s or None)
            pipeline = Pipeline(model, gate=gate, window_s=settings.window_s, affect=affect,
                                conversation=calls, campaign=campaign,
                                agent_baseline=saved.agent, fatigue_baseline=saved.fatigue)
        else:
            self._learned_ts = None
            self.baselines_ts = time.time()
            self.affect_state = "off"
            self.settings_error = ""
        # self.baselines_ts: when the agent baselines the box holds were learned (or began to be):
        # a ``forget_baselines`` for a seat change after this time applies, one before it is stale
        self._expired = False
        self._expired_shift = 0
        self.relearn_pending = False
        """A seat change: the baselines are learned afresh once no call is in progress."""
        self.pipeline: Callable[[Any], Iterable[_Message]] = pipeline
        self.outbox = outbox or Outbox(settings.state_dir / "outbox.sqlite", settings.site,
                                       settings.box)
        self.publisher = Publisher(settings, version=version)
        self.version = version
        self.watchdog = Notifier()
        self._last_heartbeat = 0.0
        self.stop_event = StopFlag()
        self.source_status: Callable[[], dict[str, Any]] = dict
        self._capture_ok = True
        self.on_reload: Callable[[], None] | None = None
        """Called on a ``reload`` command to read and validate the files again; raises ``ValueError``
        or ``OSError`` on a bad one (by default: the campaign file of the running settings)."""
        self.reload_pending = False
        """Valid files were reloaded: the loop ends once no call is in progress."""
        self.reload_refused = 0
        self.reload_asked = False
        """SIGHUP asked for a reload (done by the loop, at its next block)."""
        self.stop_signal = 0
        """The SIGTERM or SIGINT that ended the loop (logged by the loop, not by the handler)."""
        self.exit_code = 0
        """What the service should exit with: :data:`EXIT_RELOAD` after a reload, else 0."""
        self.private = False
        """Private mode: nothing about the call is put in the outbox (kept across a restart)."""
        self.call_state = "idle"
        """Call state from the softphone/CTI connector (``cmd`` ``call_state``)."""
        self._shown_call_state = "idle"
        """The call state the status shows: frozen while private (it would tell when the call was
        held or ended)."""
        self._idle_call: int | None = None
        """The pipeline's call count when an ``idle`` was last taken (one hang-up ends one call)."""
        self.identify_until = 0.0
        self._state_ts: dict[str, float] = {}
        """When (wall clock, seconds) private mode and the call state were last set, by whom
        ever: a ``cmd`` sent earlier (paho resends a command its broken connection left
        unacknowledged, same bytes) must not undo it."""
        self.control: ControlSocket | None = None
        """The local control socket, open while :meth:`run` runs (``control_socket``)."""
        self._panel: tuple[bool, ...] = ()
        self._panel_at = 0.0
        self.cmd_refused = 0
        self._refusals = {"cmd": Refusals("MQTT command", logger=log),
                          "local": Refusals("local command", logger=log)}
        """The journal's account of refused commands, per source."""
        self._call_states = Refusals("call state", "applied", log, plural="call states",
                                     counter="", level=logging.INFO)
        """The journal's account of the call states applied: a flipping connector is counted."""
        self.pipeline_errors = 0
        """Blocks on which a stage raised (a bug: logged, the stages started again)."""
        self.fields_dropped = 0
        """Numbers left out of the box's own messages and statuses: outside their range in the
        wire contract, or not finite (a bug: logged; the rest of the message goes)."""
        self._reload_ts = self._last_reload()
        """When the last ``reload`` applied was sent (its ``ts``; -1 for none)."""
        self.cmd_done = 0
        self.resent = 0
        self.suppressed = 0
        self._online = False
        self._status_due = False
        self._last_status = 0.0
        self._last_purge = time.monotonic()
        self._lost_at: float | None = None
        if self._private_file.exists():  # private when the box stopped (a restart, an update)
            log.info("private mode was on when the box stopped: it stays on")
            try:  # set then: an older private_off resent after the restart is refused
                since = self._private_file.stat().st_mtime
            except OSError:
                since = time.time()
            self._apply({"action": "private_on", "ts": since})

    def _affect_stage(self, settings: EdgeSettings, disclosed: bool) -> Any:
        """The prospect affect stage, or None, with why in ``affect_state``: not enabled, not
        disclosed by the campaign, blocked by the install check (the line must be the line:
        swapped channels would read the agent), or its model will not load (an optional stage
        never stops the box's other metrics)."""
        self.affect_state = "off"
        if not settings.affect_enabled:
            return None
        self.affect_state = "undisclosed"
        if not disclosed:
            log.warning("the prospect affect model stays off: the campaign does not disclose it "
                        "([affect] disclosed = true)")
            return None
        if settings.capture_device is not None:
            from edge.installcheck import verified

            blocked = verified(settings.state_dir, settings.capture_device,
                               settings.capture_far_device)
            if blocked is not None:
                log.error("the prospect affect model stays off: %s", blocked)
                self.affect_state = "blocked"
                return None
        from edge.affect import AffectConfig, AffectModel, AffectStage
        from models.build import ModelError

        config = AffectConfig(enabled=True, backend=settings.model_backend)
        try:
            stage = AffectStage(AffectModel(config.backend), config)
        except (ModelError, OSError, ValueError, RuntimeError) as exc:
            log.error("the prospect affect model stays off: %s", exc)
            self.affect_state = "failed"
            return None
        self.affect_state = "on"
        return stage

    @property
    def identifying(self) -> bool:
        """True for :data:`IDENTIFY_S` after an ``identify`` command (blink the LED)."""
        return time.monotonic() < self.identify_until

    def status_fields(self) -> dict[str, Any]:
        """Allow-listed counters for the retained status (the source's too)."""
        health = health_facts(self.version, self.settings.cert_file,
                              releases_root=self.settings.releases_root)
        health.pop("version")  # the publisher puts it in every status
        if self.settings.clock_shared:  # only then: a dashboard older than the field refuses it
            health["clock_shared"] = True
        raw = {**health,
               "seq_last": self.outbox.last_seq, "seq_first": self.outbox.first_seq(),
               "seq_origin": self.outbox.origin,
               "outbox_depth": self.outbox.depth(), "dropped": self.outbox.dropped,
               "private": self.private, "call_state": self._shown_call_state,
               "cmd_refused": self.cmd_refused + self.publisher.cmd_dropped,
               "reload_refused": self.reload_refused,
               "settings_error": self.settings_error,
               "pipeline_errors": self.pipeline_errors,
               "prospect_affect_state": self.affect_state,
               "baselines_ts": round(self.baselines_ts, 3),
               **getattr(self.pipeline, "input_counts", dict)(), **self.source_status()}
        fields = self._in_range("status", raw)
        return {**fields, "fields_dropped": self.fields_dropped}

    def _in_range(self, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` without the numbers outside their range on the wire (logged, counted)."""
        bad = wire.out_of_range(fields)
        if not bad:
            return fields
        self.fields_dropped += len(bad)
        log.error("%s: field(s) outside the wire contract's range left out: %s", kind,
                  ", ".join(f"{name}={fields[name]!r}" for name in bad))
        return {k: v for k, v in fields.items() if k not in bad}

    def submit(self, messages: Iterable[_Message]) -> int:
        """Store the pipeline's messages in the outbox (none while private); return how many."""
        n = 0
        for msg in messages:
            if self.private:
                self.suppressed += 1
                continue
            n += self._store(msg.kind, msg.body)
        return n

    def _store(self, kind: str, body: dict[str, Any]) -> int:
        """Put one message in the outbox; 0 if the disk refused it (counted there as dropped)."""
        try:
            self.outbox.put(kind, self._in_range(kind, body))
        except sqlite3.Error:
            self._status_due = True  # logged by the outbox; the loop goes on
            return 0
        except wire.WireError as exc:  # a stage broke the contract: a bug, never a stopped box
            log.error("a %s message outside the wire contract was dropped: %s", kind, exc)
            self.outbox.dropped += 1  # (written with the next message)
            self._status_due = True
            return 0
        return 1

    def handle_command(self, topic: str, payload: bytes, retained: bool = False) -> str:
        """Apply one command; return its action, or ``refused`` (counted, never raised).

        A ``retained`` one (published with the retain flag, kept by the broker and handed over
        again at every connection of the box) is refused: a retained ``reload`` would restart the
        box at each of its starts.
        """
        try:
            if topic != self.publisher.cmd_topic:
                raise wire.WireError(f"command on {topic!r}, not on {self.publisher.cmd_topic}")
            if retained:
                raise wire.WireError(f"a retained command on {topic} (the broker hands it over at "
                                     f"every connection): {payload[:80]!r}; clear it with an empty "
                                     "retained message")
            msg = wire.decode(wire.CMD_KIND, payload)
            if (msg["site"], msg["box"]) != (self.settings.site, self.settings.box):
                raise wire.WireError(f"command for {msg['site']}/{msg['box']}")
            age_s = time.time() - float(msg["ts"])
            if msg["action"] in STATEFUL_ACTIONS and abs(age_s) > CMD_MAX_AGE_S:
                raise wire.WireError(f"{msg['action']} sent {age_s:.0f} s ago: too old to apply")
            if msg["action"] == "forget_baselines" and age_s < -CMD_MAX_AGE_S:
                raise wire.WireError(f"forget_baselines for a seat change {-age_s:.0f} s ahead")
            if msg["action"] == "reload" and age_s < -CMD_MAX_AGE_S:
                # (kept as the last reload applied, it would refuse every reload until then)
                raise wire.WireError(f"reload sent {-age_s:.0f} s ahead of the box's clock")
            if msg["action"] == "reload" and float(msg["ts"]) <= self._reload_ts:
                raise wire.WireError(f"reload sent at {float(msg['ts']):.3f}, not after the last "
                                     f"reload applied (sent at {self._reload_ts:.3f}): a resent "
                                     "or stale command")
            state = _STATE_OF.get(msg["action"])
            if state is not None and float(msg["ts"]) <= self._state_ts.get(state, -1.0):
                raise wire.WireError(f"{msg['action']} sent at {float(msg['ts']):.3f}, not after "
                                     f"the last change of the {state} (at "
                                     f"{self._state_ts[state]:.3f}): a resent or stale command")
        except wire.WireError as exc:
            self.cmd_refused += 1
            self._refusals["cmd"].refused(str(exc))
            return "refused"
        return self._apply_safely(msg, "the cmd topic")

    def answer_local(self, text: str) -> tuple[str, str]:
        """Apply one command from the control socket; return its action (or ``refused``) and the
        answer for its sender: ``ok <command>`` (a toggle says where it went) or ``refused: <why>``."""
        try:
            msg = {**parse(text, self.private), "ts": time.time()}
        except ControlError as exc:
            self.cmd_refused += 1
            self._refusals["local"].refused(str(exc))
            return "refused", f"refused: {exc}"
        action = self._apply_safely(msg, "the control socket")
        if action == "refused":
            return action, "refused: the command failed (see the box's journal)"
        if action == "call_state":
            return action, f"ok call {msg['call_state']}"
        return action, "ok " + action.replace("_", " ")

    @property
    def _private_file(self) -> Path:
        return Path(self.settings.state_dir) / "private"

    def _remember_private(self, on: bool) -> None:
        """Keep private mode in the state directory: a restart must not end it."""
        try:
            if on:
                self.settings.state_dir.mkdir(parents=True, exist_ok=True)
                self._private_file.write_text("on\n")
            else:
                self._private_file.unlink(missing_ok=True)
        except OSError as exc:
            log.error("cannot keep private mode in %s: %s", self.settings.state_dir, exc)

    def _last_reload(self) -> float:
        """The ``ts`` of the last ``reload`` applied, from the state directory (-1 for none)."""
        path = Path(self.settings.state_dir) / LAST_RELOAD
        try:
            ts = float(path.read_text())
            if not math.isfinite(ts):
                raise ValueError(f"{ts} is not a time")
            return ts
        except FileNotFoundError:
            return -1.0
        except (OSError, ValueError) as exc:
            log.warning("%s is unreadable (%s): any reload is taken", path, exc)
            return -1.0

    def _remember_reload(self, ts: float) -> None:
        """Keep when the reload now applied was sent, for after the restart it makes."""
        self._reload_ts = max(self._reload_ts, ts)
        try:
            atomic_write(Path(self.settings.state_dir) / LAST_RELOAD,
                         f"{self._reload_ts!r}\n".encode())
        except OSError as exc:
            log.error("cannot keep the reload's time in %s: %s", self.settings.state_dir, exc)

    def _apply_safely(self, msg: dict[str, Any], source: str) -> str:
        """:meth:`_apply`, counting a command that fails as refused: the loop must go on."""
        try:
            return self._apply(msg, source)
        except Exception:
            self.cmd_refused += 1
            log.exception("command %s failed", msg.get("action"))
            return "refused"

    def _apply(self, msg: dict[str, Any], source: str = "") -> str:
        """Apply one accepted command from ``source`` (for the journal); return its action."""
        action = str(msg["action"])
        state = _STATE_OF.get(action)
        if state is not None and "ts" in msg:
            self._state_ts[state] = max(self._state_ts.get(state, -1.0), float(msg["ts"]))
        if action in ("private_on", "private_off"):
            private = action == "private_on"
            if private != self.private:
                self.private = private
                self._status_due = True
                self._remember_private(private)
                if not private:
                    self._shown_call_state = self.call_state
                set_private = getattr(self.pipeline, "set_private", None)
                if set_private is not None:  # the fact that the seat is private does leave
                    for m in set_private(private):
                        self._store(m.kind, m.body)
                log.info("private mode %s", "on" if private else "off")
        elif action == "identify":
            self.identify_until = time.monotonic() + IDENTIFY_S
        elif action == "reload":
            if self.reload() and "ts" in msg:
                self._remember_reload(float(msg["ts"]))
        elif action == "resend":
            n = self.outbox.resend(int(msg["from_seq"]), msg.get("to_seq"))
            self.resent += n
            log.info("resend from %d: %d message(s)", msg["from_seq"], n)
            if int(msg["from_seq"]) < self.outbox.first_seq():
                self._status_due = True  # tell the dashboard what is gone for good
        elif action == "forget_baselines":
            self.forget_baselines(float(msg["ts"]))
        elif action == "call_state":
            self._set_call_state(str(msg["call_state"]), source)
        self.cmd_done += 1
        return action

    def _set_call_state(self, state: str, source: str = "") -> None:
        """Take the softphone's call state; the same state again changes nothing, except that an
        ``idle`` ends a call that the prospect's speech started since the last ``idle`` (the box's
        state was ``idle`` already: its start, or the last hang-up), once per call. A change is
        written to the journal (a few a minute, then counted), except while private: it would
        date the private call's hold and end, as the status would."""
        begun = getattr(getattr(self.pipeline, "conversation", None), "calls_begun", None)
        if state == self.call_state and (state != "idle" or self.private or not self._in_call()
                                         or begun == self._idle_call):
            return
        if state == "idle":
            self._idle_call = begun
        if state != self.call_state:
            if not self.private:
                self._call_states.refused(f"{state} (was {self.call_state}; from {source})")
            self.call_state = state
            if not self.private:
                self._shown_call_state = state
                self._status_due = True
        call_state = getattr(self.pipeline, "call_state", None)
        if call_state is not None:  # while private, the pipeline keeps it for later
            call_state(state)

    def forget_baselines(self, changed_ts: float) -> bool:
        """The seat changed hands at ``changed_ts``: forget the baselines learned before then
        (the file now, the pipeline's once no call is in progress); return False if stale."""
        if changed_ts <= self.baselines_ts:
            log.info("forget_baselines for a seat change at %.0f: the baselines were learned "
                     "since (%.0f), kept", changed_ts, self.baselines_ts)
            return False
        try:
            baselines.forget(self.settings.state_dir)
        except OSError as exc:  # the pipeline still relearns; the file is not saved over
            log.error("could not delete the baselines: %s", exc)
        self.baselines_ts = max(time.time(), changed_ts)
        self._learned_ts, self._expired = None, False
        self.relearn_pending = hasattr(self.pipeline, "relearn_baselines")
        self._status_due = True
        log.info("the seat changed hands: the agent baselines are learned afresh")
        return True

    def pump(self) -> None:
        """Record acknowledgements, apply commands, send what is stored and not in flight."""
        # In flight first, then the acks: a message acknowledged in between is in the snapshot,
        # so it is not sent again below (a duplicate at the broker).
        inflight = self.publisher.in_flight()
        acked = self.publisher.take_acked()
        given_up = self.publisher.take_given_up()
        try:
            self.outbox.ack(acked)
            if given_up:  # the broker refused them again and again: in dropped, not resent
                log.error("gave up %d message(s) the broker keeps refusing (seq %s)",
                          len(given_up), ", ".join(map(str, given_up[:10])))
                self.outbox.give_up(given_up)
                self._status_due = True
        except sqlite3.Error as exc:  # a full disk: kept in memory, written with the next acks
            log.error("outbox: cannot record acknowledgements: %s", exc)
        self.watchdog.ping()
        if acked and time.monotonic() - self._last_heartbeat > HEARTBEAT_EVERY_S:
            # the update health check: this version reaches the broker and publishes
            self._last_heartbeat = time.monotonic()
            try:
                write_heartbeat(self.settings.state_dir, self.version)
            except OSError as exc:  # the update check will say so; the metrics go on
                log.warning("cannot write the heartbeat in %s: %s", self.settings.state_dir, exc)
        for topic, payload, retained in self.publisher.take_commands():
            self.handle_command(topic, payload, retained)
        for refusals in (*self._refusals.values(), self._call_states, self.publisher.drops):
            refusals.flush()
        connected = self.publisher.connected.is_set()
        now = time.monotonic()
        if self.control is not None:
            for text, sender in self.control.take():
                self.control.answer(sender, self.answer_local(text)[1])
            panel = (connected, self.private, self.identifying)
            if panel != self._panel or now - self._panel_at > PANEL_EVERY_S:
                self._panel, self._panel_at = panel, now
                self.control.write_panel(online=connected, private=self.private,
                                         identifying=self.identifying)
        if now - self._last_purge > PURGE_EVERY_S:
            self._last_purge = now
            try:
                self.outbox.purge()
            except sqlite3.Error as exc:
                log.error("outbox: purge failed: %s", exc)
            self.save_baselines()
        if connected and (not self._online or self._status_due
                          or now - self._last_status > STATUS_EVERY_S):
            self.publisher.publish_status("online", **self.status_fields())
            self._last_status = now
            self._status_due = False
        self._online = connected
        if not connected:
            return
        for seq, kind, payload in self.outbox.pending(limit=200):
            if seq in inflight:
                continue
            if not self.publisher.send(seq, kind, payload):
                break

    def save_baselines(self) -> None:
        """Keep the agent's learned baselines in the state directory for the next start (with the
        time they were learned); past ``baseline_max_age_h``, have the next shift learn them afresh."""
        learned = getattr(self.pipeline, "learned_baselines", None)
        if learned is None or self.relearn_pending:  # the previous agent's: never saved again
            return
        shifts = getattr(self.pipeline, "shifts", 0)
        if self._expired and shifts != self._expired_shift:  # a new shift relearns them
            self._learned_ts, self._expired = None, False
            self.baselines_ts = time.time()
        agent, fatigue = learned()
        if not agent and not fatigue:
            self._learned_ts = None
            return
        now = time.time()
        if self._learned_ts is None:  # never before the seat change they follow
            self._learned_ts = max(now, self.baselines_ts)
        if now - self._learned_ts > self.settings.baseline_max_age_h * 3600:
            if not self._expired:
                log.info("the agent's baselines are over %.0f h old: the next shift learns them "
                         "afresh", self.settings.baseline_max_age_h)
                self.pipeline.forget_baselines()  # type: ignore[attr-defined]
                self._expired, self._expired_shift = True, shifts
            return
        try:
            baselines.save(self.settings.state_dir, agent, fatigue, self._learned_ts)
        except OSError as exc:
            log.warning("could not save the baselines: %s", exc)

    def reload(self) -> bool:
        """Read and validate the settings and campaign files again; return True if they are good.

        A bad file is refused (logged, counted in ``reload_refused``): the box goes on with what it
        runs, and a reload still pending from good files is dropped. Good files end the loop at the
        next block outside a call (:data:`EXIT_RELOAD`), once :meth:`_files_ok` finds them good still.
        """
        if not self._files_ok():
            return False
        self.reload_pending = True
        log.info("reload: the files are valid; restarting once no call is in progress")
        return True

    def _files_ok(self) -> bool:
        """Validate the files a restart would start with; refuse (and forget the reload) if bad."""
        try:
            if self.on_reload is not None:
                self.on_reload()
            elif self.settings.campaign_file is not None:
                from edge.campaign import load as load_campaign

                load_campaign(self.settings.campaign_file)
        except (ValueError, OSError) as exc:
            self.reload_refused += 1
            self.reload_pending = False
            self.settings_error = str(exc)[:wire.MAX_TEXT_CHARS]
            self._withdraw_affect()
            self._status_due = True
            log.error("reload refused, the box goes on with its running settings: %s", exc)
            return False
        if self.settings_error:
            self.settings_error = ""
            self._status_due = True
        return True

    def _withdraw_affect(self) -> None:
        """Stop the prospect affect model: the campaign file now in place is bad, and may be a new
        campaign whose call script does not disclose it (a good file restarts the box anyway)."""
        if getattr(self.pipeline, "affect", None) is not None:
            self.pipeline.affect = None  # type: ignore[attr-defined]
            self.affect_state = "undisclosed"
            log.warning("the prospect affect model stops: the campaign file is refused")

    def _in_call(self) -> bool:
        conversation = getattr(self.pipeline, "conversation", None)
        return bool(getattr(conversation, "in_call", False))

    def step(self, block: Any) -> None:
        """Run the pipeline on one block, store its messages and pump.

        When the capture device is lost (the source's ``capture_ok``), the call in progress ends
        there: what comes back after the device returns is a new stretch of audio, not the same call.
        """
        ok = bool(self.source_status().get("capture_ok", True))
        if ok != self._capture_ok:
            self._capture_ok = ok
            self._status_due = True  # the dashboard hears of a lost headset at once
            interrupt = getattr(self.pipeline, "interrupt", None)
            if not ok and interrupt is not None:
                self.submit(interrupt())
            gap = getattr(self.pipeline, "gap", None)
            if not ok:
                self._lost_at = time.monotonic()
            elif self._lost_at is not None and gap is not None:
                gap(time.monotonic() - self._lost_at)  # nobody spoke while it was unplugged
                self._lost_at = None
        try:
            messages = self.pipeline(block)
        except Exception:  # a stage's bug: logged and counted, the stages start again, the box runs on
            log.exception("the pipeline failed on a block; its stages start again")
            self.pipeline_errors += 1
            self._status_due = True
            interrupt = getattr(self.pipeline, "interrupt", None)
            messages = []
            if interrupt is not None:
                try:
                    messages = interrupt()
                except Exception:
                    log.exception("the pipeline could not start its stages again")
        self.submit(messages)
        if self.relearn_pending and not self._in_call():
            self.relearn_pending = False
            self.submit(self.pipeline.relearn_baselines())  # type: ignore[attr-defined]
        self.pump()
        if self.reload_asked:
            self.reload_asked = False
            self.reload()
        if self.reload_pending and not self.private and not self._in_call() and self._files_ok():
            self.exit_code = EXIT_RELOAD
            self.stop_event.set()

    def run(self, blocks: Iterable[np.ndarray] | Iterable[Any], drain_s: float = 5.0) -> None:
        """Process blocks until they end or :attr:`stop_event` is set, then shut down cleanly."""
        if take_restart_note(self.settings.state_dir) is not None:  # left by a restart of no agent
            log.info("an update's restart note was left from before this start: removed")
        self.publisher.start()
        if self.settings.control_socket is not None:
            try:
                self.control = ControlSocket(self.settings.control_socket,
                                             self.settings.control_group)
            except (OSError, ControlError) as exc:  # the metrics matter more than the button
                log.error("no control socket at %s: %s", self.settings.control_socket, exc)
        self.watchdog.ready()
        try:
            for block in blocks:
                self.step(block)
                if self.stop_event.is_set():
                    break
            if self.stop_signal:
                log.info("signal %d: stopping", self.stop_signal)
            stop = getattr(self.pipeline, "stop", None)
            if stop is not None:  # the call in progress and every open cue end here
                self.submit(stop())
            deadline = time.monotonic() + drain_s
            while self.outbox.depth() and time.monotonic() < deadline:
                self.pump()
                time.sleep(0.02)
            self.pump()
        finally:
            self.watchdog.stopping()
            self.save_baselines()
            for refusals in (*self._refusals.values(), self._call_states, self.publisher.drops):
                refusals.flush(force=True)
            if self.control is not None:
                self.control.close()
                self.control = None
            try:
                self.outbox.purge()
            except sqlite3.Error as exc:  # a failing card must not cost the clean goodbye
                log.error("outbox: purge failed: %s", exc)
            self.publisher.stop({**self.status_fields(), **self._restart_field()})
            self.outbox.close()

    def _restart_field(self) -> dict[str, str]:
        """``restart`` for the ``offline`` status of a planned restart (a good ``reload``, or an
        update's note), so that the dashboard waits for the agent back before it alerts."""
        noted = take_restart_note(self.settings.state_dir)  # taken either way: it is this stop's
        reason = "reload" if self.exit_code == EXIT_RELOAD else noted
        if reason:
            log.info("stopping for a restart (%s)", reason)
        return {"restart": reason} if reason else {}

    def install_signal_handlers(self) -> None:
        """Make SIGTERM and SIGINT end the loop cleanly, and SIGHUP ask for a ``reload``."""
        def handler(signum: int, frame: Any) -> None:
            # No logging here: a signal landing while the loop writes a log line made the
            # handler's own line a reentrant write ("--- Logging error ---" and a traceback).
            # No lock either: the stop flag is set without one (edge.stop.StopFlag).
            self.stop_signal = signum
            self.stop_event.set()

        def hangup(signum: int, frame: Any) -> None:
            self.reload_asked = True
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGHUP, hangup)


def start_campaign(settings: EdgeSettings) -> tuple[Any, str]:
    """The campaign a box starts with, and what to say in the status's ``settings_error``.

    A good campaign file is used and copied to :data:`LAST_GOOD_CAMPAIGN` in the state directory.
    A bad one is replaced by that copy (logged; the error is returned), without its prospect
    affect disclosure: the copy's call script is not known to be the one the seat now follows,
    so the affect model stays off (``undisclosed``) until a good file says otherwise. With no
    copy, its ``CampaignError`` is raised (a box never started: site IT is at hand).

    Returns:
        (the ``CampaignConfig``, or None for the defaults; the file's error, "" if none).
    """
    if settings.campaign_file is None:
        return None, ""
    from edge.campaign import CampaignError, load, load_text

    kept = Path(settings.state_dir) / LAST_GOOD_CAMPAIGN
    try:
        campaign, raw = load_text(settings.campaign_file)
    except CampaignError as exc:
        if not kept.is_file():
            raise
        log.error("%s; the box runs the campaign it last started with (%s), without the prospect "
                  "affect model", exc, kept)
        return undisclosed(load(kept)), str(exc)[:wire.MAX_TEXT_CHARS]
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(kept, raw, mode=0o600)
    except OSError as exc:
        log.error("cannot keep the campaign in %s: %s", kept, exc)
    return campaign, ""


def undisclosed(campaign: Any) -> Any:
    """``campaign`` with its prospect affect disclosure withdrawn (the model stays off)."""
    import dataclasses

    from edge.campaign import AffectDisclosure

    return dataclasses.replace(campaign, affect=AffectDisclosure(disclosed=False))
