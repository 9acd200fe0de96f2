"""MQTT subscriber that validates every message against the wire contract and stores it."""

from __future__ import annotations

import logging
import math
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from miroir import wire

from . import db as store
from .settings import DashboardSettings

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 86400
"""Broker keeps the dashboard's session (subscription and QoS 1 queue) this long while away."""
LAG_WINDOW = 10000
"""How many recent ingest lags are kept for percentiles."""

Notify = Callable[[dict[str, Any]], None]


def client_id_for(site: str) -> str:
    """MQTT client id of a site's dashboard (stable, so the broker resumes its session)."""
    return f"dash-{wire.check_id(site, 'site')}"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0..100) of ``values``, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100.0 * len(ordered))))
    return ordered[rank - 1]


class Ingest:
    """Subscribe to a site's boxes, store valid messages, quarantine the rest, notify listeners."""

    def __init__(self, settings: DashboardSettings, notify: Notify | None = None,
                 *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.site = wire.check_id(settings.site, "site")
        self.notify = notify
        self._clock = clock
        self._lock = threading.Lock()
        self._db = store.open_db(settings.db_path)
        store.ensure_schema(self._db)
        self._client: Any = None
        self.connected = threading.Event()
        self.received = 0
        self.inserted = 0
        self.duplicates = 0
        self.quarantined = 0
        self.notify_errors = 0
        self.connects = 0
        self._lags_ms: deque[float] = deque(maxlen=LAG_WINDOW)
        self._boxes_seen: set[str] = set()

    # ----------------------------------------------------------------- message handling
    def handle(self, topic: str, payload: bytes) -> str:
        """Process one message; return its outcome (inserted, duplicate, status, quarantined).

        Never raises: anything unexpected ends in the quarantine table.
        """
        now = self._clock()
        with self._lock:
            self.received += 1
        try:
            outcome, update = self._store(topic, payload, now)
        except wire.WireError as exc:
            return self._quarantine(topic, str(exc), payload, now)
        except Exception as exc:  # a bug or a db error must not kill paho's thread
            log.exception("ingest failed on %s", topic)
            return self._quarantine(topic, f"internal error: {type(exc).__name__}: {exc}",
                                    payload, now)
        if update is not None and self.notify is not None:
            try:
                self.notify(update)
            except Exception:
                log.exception("notify callback failed")
                with self._lock:
                    self.notify_errors += 1
        return outcome

    def _store(self, topic: str, payload: bytes, now: float) -> tuple[str, dict[str, Any] | None]:
        t = wire.parse_topic(topic)
        if t.site != self.site:
            raise wire.WireError(f"topic site {t.site!r} is not this dashboard's {self.site!r}")
        msg = wire.decode(t.kind, bytes(payload))
        if msg["site"] != t.site or msg["box"] != t.box:
            raise wire.WireError(
                f"payload site/box {msg['site']}/{msg['box']} differ from topic {t.site}/{t.box}")
        update: dict[str, Any] = {"kind": t.kind, **msg, "ingested_ts": now}
        if t.kind == "status":
            store.apply_status(self._db, msg, now)
            with self._lock:
                self._boxes_seen.add(t.box)
            return "status", update
        insert = store.insert_metrics if t.kind == "metrics" else store.insert_event
        new = insert(self._db, msg, now)
        with self._lock:
            self._boxes_seen.add(t.box)
            if not new:
                self.duplicates += 1
                return "duplicate", None
            self.inserted += 1
            self._lags_ms.append((now - float(msg["ts"])) * 1000.0)
        return "inserted", update

    def _quarantine(self, topic: str, reason: str, payload: Any, now: float) -> str:
        with self._lock:
            self.quarantined += 1
        log.warning("quarantined message on %r: %s", topic, reason)
        try:
            data = payload if isinstance(payload, bytes | bytearray) else repr(payload).encode()
            store.quarantine(self._db, str(topic), reason, data, now)
        except Exception:
            log.exception("could not store a quarantined message")
        return "quarantined"

    # ------------------------------------------------------------------ paho callbacks
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker refused the dashboard: %s", reason_code)
            return
        with self._lock:
            self.connects += 1
        log.info("connected to broker (session present: %s)", flags.session_present)
        client.subscribe([(f, 1) for f in wire.site_filters(self.site)])
        self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self.connected.clear()
        log.info("disconnected from broker: %s", reason_code)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            self.handle(message.topic, message.payload)
        except Exception:  # handle() already never raises; belt and braces for paho's thread
            log.exception("unexpected error in on_message")

    # ---------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Connect to the broker (TLS, persistent session) and start paho's network thread."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        s = self.settings
        if s.mqtt_ca is None or s.mqtt_cert is None or s.mqtt_key is None:
            raise ValueError("mqtt_ca, mqtt_cert and mqtt_key are required to start the ingest")
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id_for(self.site),
            protocol=mqtt.MQTTv5,
        )
        client.tls_set(ca_certs=str(s.mqtt_ca), certfile=str(s.mqtt_cert),
                       keyfile=str(s.mqtt_key), cert_reqs=ssl.CERT_REQUIRED,
                       tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self._client = client
        client.connect_async(s.mqtt_host, s.mqtt_port, keepalive=30, clean_start=False,
                             properties=props)
        client.loop_start()

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        """Block until subscribed to the broker or ``timeout_s`` passes; return success."""
        return self.connected.wait(timeout_s)

    def stop(self) -> None:
        """Disconnect (the broker keeps the session) and stop paho's thread."""
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        self.connected.clear()

    def close(self) -> None:
        """Stop and close the database connection."""
        self.stop()
        self._db.conn.close()

    def stats(self) -> dict[str, Any]:
        """Counters, ingest lag percentiles (ms, box clock to reception) and boxes seen."""
        with self._lock:
            lags = list(self._lags_ms)
            out: dict[str, Any] = {
                "connected": self.connected.is_set(),
                "connects": self.connects,
                "received": self.received,
                "inserted": self.inserted,
                "duplicates": self.duplicates,
                "quarantined": self.quarantined,
                "notify_errors": self.notify_errors,
                "boxes_seen": len(self._boxes_seen),
            }
        out["lag_ms_p50"] = percentile(lags, 50)
        out["lag_ms_p95"] = percentile(lags, 95)
        out["lag_ms_p99"] = percentile(lags, 99)
        out["lag_samples"] = len(lags)
        return out
