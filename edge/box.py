"""The box agent's main loop: source -> pipeline -> outbox -> publisher.

One loop runs the stages and owns the outbox; paho's network thread does the MQTT I/O.
SIGTERM or SIGINT ends the loop cleanly: the outbox is drained for up to ``drain_s`` seconds and
the retained status says ``offline``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from edge.outbox import Outbox
from edge.pipeline import Pipeline
from edge.publisher import Publisher
from edge.settings import EdgeSettings
from edge.vad import GateConfig

log = logging.getLogger(__name__)

STATUS_EVERY_S = 10.0


class Box:
    """Wires one box's pipeline, outbox and publisher; :meth:`run` consumes audio blocks."""

    def __init__(self, settings: EdgeSettings, model: Any, version: str = "") -> None:
        self.settings = settings
        gate = GateConfig(settings.vad_on_threshold, settings.vad_off_threshold,
                          settings.vad_min_speech_ms, settings.vad_min_silence_ms)
        self.pipeline = Pipeline(model, gate=gate, window_s=settings.window_s)
        self.outbox = Outbox(settings.state_dir / "outbox.sqlite", settings.site, settings.box)
        self.publisher = Publisher(settings, version=version)
        self.stop_event = threading.Event()
        self.source_status: Callable[[], dict[str, Any]] = dict
        self._online = False
        self._last_status = 0.0

    def status_fields(self) -> dict[str, Any]:
        """Allow-listed counters for the retained status (the source's too)."""
        return {"seq_last": self.outbox.last_seq, "outbox_depth": self.outbox.depth(),
                "dropped": self.outbox.dropped, **self.source_status()}

    def pump(self) -> None:
        """Record acknowledgements and send what is stored and not yet in flight."""
        self.outbox.ack(self.publisher.take_acked())
        connected = self.publisher.connected.is_set()
        now = time.monotonic()
        if connected and (not self._online or now - self._last_status > STATUS_EVERY_S):
            self.publisher.publish_status("online", **self.status_fields())
            self._last_status = now
        self._online = connected
        if not connected:
            return
        inflight = self.publisher.in_flight()
        for seq, kind, payload in self.outbox.pending(limit=200):
            if seq in inflight:
                continue
            if not self.publisher.send(seq, kind, payload):
                break

    def run(self, blocks: Iterable[np.ndarray], drain_s: float = 5.0) -> None:
        """Process blocks until they end or :attr:`stop_event` is set, then shut down cleanly."""
        self.publisher.start()
        try:
            for block in blocks:
                for msg in self.pipeline(block):
                    self.outbox.put(msg.kind, msg.body)
                self.pump()
                if self.stop_event.is_set():
                    break
            deadline = time.monotonic() + drain_s
            while self.outbox.depth() and time.monotonic() < deadline:
                self.pump()
                time.sleep(0.02)
            self.pump()
        finally:
            self.outbox.purge()
            self.publisher.stop(self.status_fields())
            self.outbox.close()

    def install_signal_handlers(self) -> None:
        """Make SIGTERM and SIGINT end the loop cleanly."""
        def handler(signum: int, frame: Any) -> None:
            log.info("signal %d: stopping", signum)
            self.stop_event.set()
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
