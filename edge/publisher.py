"""MQTT publishing for the box: paho-mqtt 2.x, MQTT v5, TLS with the box's own certificate.

The network I/O runs either in paho's own thread (:meth:`Publisher.start`, one box per process)
or in a :class:`SharedLoop` that drives many publishers from one thread with ``epoll`` (load
generators and gateways: paho's own loop uses ``select``, which fails past 1024 descriptors).
Either way paho's callbacks only record facts (connected, acknowledged message ids, commands
received) in thread-safe containers; the box's main loop reads them and touches the outbox, so
the outbox's SQLite connection has one user.

Reconnection backs off exponentially from :data:`RECONNECT_MIN_S` to :data:`RECONNECT_MAX_S`.
The session is clean (``clean_start`` on, expiry 0). paho sends its unacknowledged messages again
after a reconnection, under the same message ids: they stay in flight (not sent a third time from
the outbox) until acknowledged, or :data:`INFLIGHT_EXPIRE_S` after the connection, when the outbox
sends them again. A message the broker refuses :data:`REFUSED_MAX` times is given up and counted
(``dropped``), not sent again forever.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import selectors
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from miroir import wire
from miroir.files import read_regular
from miroir.journal import REFUSALS_EVERY_S, Refusals

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 1
"""First reconnection delay, in seconds."""
RECONNECT_MAX_S = 30
"""Longest reconnection delay, in seconds (the delay doubles up to this). Well under the 90 s an
update waits for the running agent to show it reaches the broker: at 120 s, an agent back-off
after an outage of a minute or more outlasted that check and the update was refused. The boxes of
a floor that lost the broker together (paho adds no jitter) then try together once every 30 s at
most: a refused connection each while it is down, one TLS handshake each once it is back, as after
any restart of the broker."""
MAX_INFLIGHT = 100
"""QoS 1 messages sent and not yet acknowledged, at most."""
INFLIGHT_EXPIRE_S = 30.0
"""A message unacknowledged this long after it was sent (or the connection came back) is sent
again from the outbox."""
REFUSED_MAX = 5
"""A message the broker refuses this many times (not authorised, too large) is given up."""


class PublisherError(RuntimeError):
    """The box's TLS files cannot be used (missing, unreadable, or not a matching set)."""


def _paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("paho-mqtt is not installed: `pip install 'miroir[box]'`") from exc
    return mqtt


def check_tls_files(settings: Any) -> dict[str, Path]:
    """Check that the TLS files of ``settings`` load together, as :class:`Publisher` will; return
    them by setting (those set). Raises :class:`PublisherError` naming the setting and the file
    that is missing or unreadable, or all of them when they do not load together."""
    files = {name: Path(path) for name in ("ca_file", "cert_file", "key_file")
             if (path := getattr(settings, name)) is not None}
    for name, path in files.items():
        try:
            read_regular(path)  # a FIFO would hold the open, and the box's loop, for good
        except OSError as exc:
            raise PublisherError(f"{name} {path}: {exc.strerror or exc}") from None
    if "ca_file" not in files:
        return files
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=str(files["ca_file"]))
        if "cert_file" in files:
            key = files.get("key_file")
            context.load_cert_chain(str(files["cert_file"]), str(key) if key else None)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        named = ", ".join(f"{name} {path}" for name, path in files.items())
        raise PublisherError(f"the box's TLS files do not load together ({named}): {exc}") \
            from None
    return files


class Publisher:
    """Connects to the site broker, keeps the retained status, publishes QoS 1 messages.

    Subscribes to the box's own ``cmd`` topic on every connection; commands received are kept
    for the box's loop (:meth:`take_commands`), with the topic they came on and whether the
    broker handed over a retained copy.

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
        self.connects = 0
        self.activity: Any = None
        """Optional ``callable(publisher)`` run (in the network thread) after every event."""
        self._connect_called = False
        self._acked: collections.deque[int] = collections.deque()
        self._commands: collections.deque[tuple[str, bytes, bool]] = collections.deque(maxlen=1000)
        self.cmd_dropped = 0
        """Commands dropped, the oldest first, while 1000 were waiting for the box's loop."""
        self.drops = Refusals("command", "dropped", logger=log)
        """The journal's account of them (a few one by one, then their number): the box's loop
        writes the number when due (:meth:`Refusals.flush`), and :meth:`stop` at the end."""
        self.closed_unanswered = 0
        """Connections the broker closed before its CONNACK since the last one it accepted (with
        TLS 1.3 a revoked, expired or foreign certificate shows so, as a bare EOF)."""
        self._answered = False
        self._closes_said_at = 0.0
        self._lock = threading.RLock()
        self._inflight: dict[int, tuple[int, float]] = {}  # paho mid -> (outbox seq, sent at)
        self._early: dict[int, tuple[bool, float]] = {}
        """mid -> (ok, when): acks of no message in flight: one that beat send(), a status's, or
        one that came after its message expired. Only one newer than the publish counts."""
        self._refusals: collections.Counter[int] = collections.Counter()
        self._given_up: collections.deque[int] = collections.deque()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"box-{settings.site}-{settings.box}",
                                  protocol=mqtt.MQTTv5)
        if settings.ca_file is not None:
            self._tls(settings)
        self.client.max_inflight_messages_set(MAX_INFLIGHT)
        self.client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
        self.status_topic = wire.topic(settings.site, settings.box, "status")
        self.cmd_topic = wire.topic(settings.site, settings.box, wire.CMD_KIND)
        will = wire.encode("status", wire.status_message(settings.site, settings.box, "offline",
                                                         time.time(), version=version))
        self.client.will_set(self.status_topic, will, qos=1, retain=True)
        self._connect_props = Properties(PacketTypes.CONNECT)
        self._connect_props.SessionExpiryInterval = 0
        self._online_props = Properties(PacketTypes.PUBLISH)
        self._online_props.MessageExpiryInterval = wire.STATUS_EXPIRY_S
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    def _tls(self, settings: Any) -> None:
        """Load the site CA, the box's certificate and key; raise :class:`PublisherError` naming
        the file that is missing or unreadable, or all three when they do not load together."""
        files = check_tls_files(settings)
        try:
            self.client.tls_set(ca_certs=str(settings.ca_file),
                                certfile=str(settings.cert_file) if settings.cert_file else None,
                                keyfile=str(settings.key_file) if settings.key_file else None,
                                cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            named = ", ".join(f"{name} {path}" for name, path in files.items())
            raise PublisherError(f"the box's TLS files do not load together ({named}): {exc}") \
                from None

    def start(self) -> None:
        """Connect in the background (retrying with backoff) and start paho's network thread."""
        self.client.connect_async(self.settings.broker_host, self.settings.broker_port,
                                  keepalive=self.settings.keepalive_s,
                                  clean_start=True, properties=self._connect_props)
        self.client.loop_start()

    def connect_now(self) -> None:
        """Connect synchronously (TCP and TLS); for :class:`SharedLoop`. Raises OSError."""
        if not self._connect_called:
            self._connect_called = True
            self.client.connect(self.settings.broker_host, self.settings.broker_port,
                                keepalive=self.settings.keepalive_s, clean_start=True,
                                properties=self._connect_props)
        else:
            self.client.reconnect()

    def stop(self, status_extra: dict[str, Any] | None = None, *, threaded: bool = True) -> None:
        """Publish ``offline`` status, disconnect and stop the network thread."""
        if self.connected.is_set() and threaded:
            # the link may be gone under the flag: the Last Will says offline then
            with contextlib.suppress(RuntimeError, ValueError):
                self.publish_status("offline", **(status_extra or {})).wait_for_publish(2.0)
        self.client.disconnect()
        if threaded:
            self.client.loop_stop()
        self.drops.flush(force=True)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._answered = True
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        closed, self.closed_unanswered = self.closed_unanswered, 0
        log.info("connected to %s:%s%s", self.settings.broker_host, self.settings.broker_port,
                 f" (after {closed} connection(s) it closed before answering)" if closed else "")
        with self._lock:
            # paho sends what it holds unacknowledged again, under the same ids: they stay in
            # flight, from now (what it does not hold expires and the outbox sends it again)
            now = time.monotonic()
            self._inflight = {mid: (seq, now) for mid, (seq, _) in self._inflight.items()}
            self._early.clear()
            self.connects += 1
        client.subscribe(self.cmd_topic, qos=1)
        self.connected.set()
        self._poke()

    def _poke(self) -> None:
        if self.activity is not None:
            self.activity(self)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       props: Any) -> None:
        was_connected, self._answered = self._answered, False
        self.connected.clear()
        if was_connected or self.settings.ca_file is None:
            log.info("disconnected from the broker: %s", reason)
        else:
            self._closed_unanswered()
        self._poke()

    def _closed_unanswered(self) -> None:
        """Say once why the broker closes the connection before answering, then count."""
        self.closed_unanswered += 1
        where = f"{self.settings.broker_host}:{self.settings.broker_port}"
        if self.closed_unanswered == 1:
            self._closes_said_at = time.monotonic()
            log.warning("the broker at %s closed the connection after the TLS handshake without "
                        "answering (no CONNACK): it refuses this box's certificate (revoked, "
                        "expired, or not signed by the site's CA: cert_days_left in the box's "
                        "health) or takes no more connections; site IT: `sudo miroir provision "
                        "expiry --all` lists the active boxes' certificates (box %s not among "
                        "them was revoked: enrol it again under a new id), `sudo miroir provision "
                        "rotate %s` renews an active one (IT guide, section 5); the box retries, "
                        "further closes are counted", where, self.settings.box, self.settings.box)
        elif time.monotonic() - self._closes_said_at >= REFUSALS_EVERY_S:
            self._closes_said_at = time.monotonic()
            log.warning("the broker at %s closed %d connections before answering so far "
                        "(certificate refused? see above)", where, self.closed_unanswered)
        else:
            log.debug("the broker at %s closed the connection before answering (%d)", where,
                      self.closed_unanswered)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        # paho holds its own message lock here: take ours briefly, never call paho under it.
        with self._lock:
            entry = self._inflight.pop(mid, None)
            if entry is None:
                if len(self._early) > 4 * MAX_INFLIGHT:  # status acks pile up: keep the newest
                    for old in sorted(self._early, key=lambda m: self._early[m][1])[:MAX_INFLIGHT]:
                        del self._early[old]
                self._early[mid] = (not reason.is_failure, time.monotonic())
                return
            seq = entry[0]
            if not reason.is_failure:
                # under the lock: a seq is always either in flight or acked, never in between
                # (Box.pump would send it again)
                self._acked.append(seq)
                self._refusals.pop(seq, None)
            else:
                self._refused(seq)
        if reason.is_failure:
            log.error("broker refused message seq %d: %s", seq, reason)
        self._poke()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if len(self._commands) == self._commands.maxlen:  # the box's loop is stuck
            self.cmd_dropped += 1
            self.drops.refused(f"{len(self._commands)} are waiting for the box's loop")
        # retained: a copy the broker kept and hands over at each subscription, not news
        self._commands.append((str(message.topic), bytes(message.payload), bool(message.retain)))
        self._poke()

    def publish_status(self, state: str, **extra: Any) -> Any:
        """Publish the retained status (``online``/``offline``) with allow-listed extras; an
        ``online`` one expires after :data:`miroir.wire.STATUS_EXPIRY_S` (never shown fresh
        once stale)."""
        msg = wire.status_message(self.settings.site, self.settings.box, state, time.time(),
                                  version=self.version, **extra)
        return self.client.publish(self.status_topic, wire.encode("status", msg), qos=1,
                                   retain=True,
                                   properties=self._online_props if state == "online" else None)

    def send(self, seq: int, kind: str, payload: bytes) -> bool:
        """Publish one stored message at QoS 1; False if not connected or the window is full."""
        if not self.connected.is_set():
            return False
        with self._lock:
            if len(self._inflight) >= MAX_INFLIGHT:
                return False
        sent_at = time.monotonic()
        # Not under our lock: paho calls _on_publish holding its own lock (lock order).
        info = self.client.publish(wire.topic(self.settings.site, self.settings.box, kind),
                                   payload, qos=1)
        if info.rc != 0:
            return False
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is not None and early[1] < sent_at:
                early = None  # an ack for an older message under the same id (ids wrap at 65535)
            if early is None:
                self._inflight[info.mid] = (seq, sent_at)
            elif early[0]:
                self._acked.append(seq)
            else:
                self._refused(seq)
        return True

    def _refused(self, seq: int) -> None:
        """Count a refusal of ``seq`` (under the lock); give it up at :data:`REFUSED_MAX`."""
        self._refusals[seq] += 1
        if self._refusals[seq] >= REFUSED_MAX:
            del self._refusals[seq]
            self._given_up.append(seq)

    def in_flight(self) -> set[int]:
        """Sequence numbers sent and not yet acknowledged (those older than
        :data:`INFLIGHT_EXPIRE_S` while connected are forgotten: the outbox sends them again).

        Nothing expires while disconnected: paho holds them and sends them again at the
        reconnection, whose time :meth:`_on_connect` gives them.
        """
        with self._lock:
            if not self.connected.is_set():
                return {seq for seq, _ in self._inflight.values()}
            cutoff = time.monotonic() - INFLIGHT_EXPIRE_S
            for mid in [m for m, (_, t) in self._inflight.items() if t < cutoff]:
                del self._inflight[mid]
            return {seq for seq, _ in self._inflight.values()}

    def take_given_up(self) -> list[int]:
        """Sequence numbers the broker refused :data:`REFUSED_MAX` times since the last call."""
        out = []
        while self._given_up:
            out.append(self._given_up.popleft())
        return out

    def take_acked(self) -> list[int]:
        """Sequence numbers acknowledged since the last call."""
        out = []
        while self._acked:
            out.append(self._acked.popleft())
        return out

    def take_commands(self) -> list[tuple[str, bytes, bool]]:
        """Commands received since the last call, as (topic, payload, retained)."""
        out = []
        while self._commands:
            out.append(self._commands.popleft())
        return out


class SharedLoop:
    """One ``epoll`` network loop, in the caller's thread, for many :class:`Publisher` objects.

    Each publisher connects when added and reconnects after a loss with its own exponential
    backoff (:data:`RECONNECT_MIN_S` to :data:`RECONNECT_MAX_S`).
    """

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._pubs: list[Publisher] = []
        self._retry_at: dict[int, float] = {}  # id(pub) -> monotonic time of the next attempt
        self._delay_s: dict[int, float] = {}
        self._last_misc = 0.0
        self._closing = False
        self.connect_failures = 0

    def add(self, pub: Publisher) -> None:
        """Take over ``pub``'s network I/O; it connects on the next :meth:`run_once`."""
        c = pub.client
        c.on_socket_open = self._open
        c.on_socket_close = self._close
        c.on_socket_register_write = self._want_write
        c.on_socket_unregister_write = self._no_write
        user_disconnect = c.on_disconnect

        def on_disconnect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            user_disconnect(client, userdata, flags, reason, props)
            if not self._closing:
                self._schedule(pub)

        c.on_disconnect = on_disconnect
        c.user_data_set(pub)
        self._pubs.append(pub)
        self._retry_at[id(pub)] = 0.0
        self._delay_s[id(pub)] = RECONNECT_MIN_S

    def _schedule(self, pub: Publisher) -> None:
        key = id(pub)
        if key in self._retry_at:
            return
        delay = self._delay_s.get(key, RECONNECT_MIN_S)
        self._retry_at[key] = time.monotonic() + delay
        self._delay_s[key] = min(RECONNECT_MAX_S, delay * 2)

    def _open(self, client: Any, pub: Publisher, sock: Any) -> None:
        self._sel.register(sock, selectors.EVENT_READ, pub)

    def _close(self, client: Any, pub: Publisher, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(sock)

    def _want_write(self, client: Any, pub: Publisher, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, pub)

    def _no_write(self, client: Any, pub: Publisher, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.modify(sock, selectors.EVENT_READ, pub)

    def _connect_due(self, now: float) -> None:
        due = [p for p in self._pubs if self._retry_at.get(id(p), float("inf")) <= now]
        for pub in due:
            del self._retry_at[id(pub)]
            try:
                pub.connect_now()
                self._delay_s[id(pub)] = RECONNECT_MIN_S
            except (OSError, ssl.SSLError) as exc:
                self.connect_failures += 1
                log.debug("box %s: connect failed: %s", pub.settings.box, exc)
                self._schedule(pub)

    def close(self, timeout_s: float = 5.0) -> None:
        """Disconnect every publisher cleanly (no reconnection) and close the selector."""
        self._closing = True
        self._retry_at.clear()
        for pub in self._pubs:
            pub.client.disconnect()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(p.client.socket() for p in self._pubs):
            self.run_once(0.01)
        self._sel.close()

    def run_once(self, timeout_s: float = 0.05) -> None:
        """Wait up to ``timeout_s`` for socket events and serve them, reconnecting as due."""
        now = time.monotonic()
        if self._retry_at:
            self._connect_due(now)
        for key, mask in self._sel.select(timeout_s):
            pub = key.data
            c = pub.client
            if mask & selectors.EVENT_READ:
                c.loop_read()
                sock = c.socket()
                while sock is not None and isinstance(sock, ssl.SSLSocket) and sock.pending():
                    c.loop_read()
                    sock = c.socket()
            if mask & selectors.EVENT_WRITE and c.socket() is not None:
                c.loop_write()
        now = time.monotonic()
        if now - self._last_misc >= 0.5:
            self._last_misc = now
            for pub in self._pubs:
                if pub.client.socket() is not None:
                    pub.client.loop_misc()
