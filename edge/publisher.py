"""MQTT publishing for the box: paho-mqtt 2.x, MQTT v5, TLS with the box's own certificate.

paho's network thread does the I/O. Its callbacks only record facts (connected, acknowledged
message ids) in thread-safe containers; the box's main loop reads them and touches the outbox,
so the outbox's SQLite connection has one user.
"""

from __future__ import annotations

import collections
import logging
import ssl
import threading
import time
from typing import Any

from miroir import wire

log = logging.getLogger(__name__)


def _paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("paho-mqtt is not installed: `pip install 'miroir[box]'`") from exc
    return mqtt


class Publisher:
    """Connects to the site broker, keeps the retained status, publishes QoS 1 messages.

    Args:
        settings: the box's :class:`edge.settings.EdgeSettings`.
        version: software version put in the status.
    """

    def __init__(self, settings: Any, version: str = "") -> None:
        mqtt = _paho()
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.settings = settings
        self.version = version
        self.connected = threading.Event()
        self._acked: collections.deque[int] = collections.deque()
        self._lock = threading.RLock()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox seq
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"box-{settings.site}-{settings.box}",
                                  protocol=mqtt.MQTTv5)
        if settings.ca_file is not None:
            self.client.tls_set(ca_certs=str(settings.ca_file),
                                certfile=str(settings.cert_file) if settings.cert_file else None,
                                keyfile=str(settings.key_file) if settings.key_file else None,
                                cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(min_delay=1, max_delay=120)
        self.status_topic = wire.topic(settings.site, settings.box, "status")
        will = wire.encode("status", wire.status_message(settings.site, settings.box, "offline",
                                                         time.time(), version=version))
        self.client.will_set(self.status_topic, will, qos=1, retain=True)
        self._connect_props = Properties(PacketTypes.CONNECT)
        self._connect_props.SessionExpiryInterval = 0
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    def start(self) -> None:
        """Connect in the background (retrying with backoff) and start paho's network thread."""
        self.client.connect_async(self.settings.broker_host, self.settings.broker_port,
                                  keepalive=self.settings.keepalive_s,
                                  clean_start=True, properties=self._connect_props)
        self.client.loop_start()

    def stop(self, status_extra: dict[str, Any] | None = None) -> None:
        """Publish ``offline`` status, disconnect and stop the network thread."""
        if self.connected.is_set():
            self.publish_status("offline", **(status_extra or {})).wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        log.info("connected to %s:%s", self.settings.broker_host, self.settings.broker_port)
        with self._lock:
            self._inflight.clear()  # clean start: everything unacked is resent by the loop
        self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       props: Any) -> None:
        self.connected.clear()
        log.warning("disconnected from the broker: %s", reason)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            seq = self._inflight.pop(mid, None)
        if seq is None:
            return
        if reason.is_failure:
            log.error("broker refused message seq %d: %s", seq, reason)
            return
        self._acked.append(seq)

    def publish_status(self, state: str, **extra: Any) -> Any:
        """Publish the retained status (``online``/``offline``) with allow-listed extras."""
        msg = wire.status_message(self.settings.site, self.settings.box, state, time.time(),
                                  version=self.version, **extra)
        return self.client.publish(self.status_topic, wire.encode("status", msg), qos=1,
                                   retain=True)

    def send(self, seq: int, kind: str, payload: bytes) -> bool:
        """Publish one stored message at QoS 1; False if not connected or the window is full."""
        if not self.connected.is_set():
            return False
        with self._lock:
            if len(self._inflight) >= 100:
                return False
            info = self.client.publish(wire.topic(self.settings.site, self.settings.box, kind),
                                       payload, qos=1)
            if info.rc != 0:
                return False
            self._inflight[info.mid] = seq
        return True

    def in_flight(self) -> set[int]:
        """Sequence numbers sent and not yet acknowledged."""
        with self._lock:
            return set(self._inflight.values())

    def take_acked(self) -> list[int]:
        """Sequence numbers acknowledged since the last call."""
        out = []
        while self._acked:
            out.append(self._acked.popleft())
        return out
