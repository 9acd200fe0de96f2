"""Fixtures for a real site broker: provisioned site files, a running Mosquitto, MQTT peers."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from provisioning.broker import Mosquitto, SiteFiles, make_site, new_site_dir, tls_client
from provisioning.pki import CertPair

if TYPE_CHECKING:
    from edge.publisher import Publisher
    from provisioning.site import Site

SITE_ID = "site-1"
BOXES = ("box-a", "box-b")
WAIT_S = 10.0  # generous liveness wait, never a timing assertion


class Peer:
    """A connected-on-demand paho client whose acknowledgements and messages can be awaited."""

    def __init__(self, identity: CertPair | None, ca: Path, client_id: str, port: int) -> None:
        self.client = tls_client(identity, ca, client_id)
        self.port = port
        self.messages: list[tuple[str, bytes]] = []
        self.connack: Any = None
        self.disconnected = False
        self._acks: dict[int, Any] = {}
        self._cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _notify(self, update: Callable[[], None]) -> None:
        with self._cond:
            update()
            self._cond.notify_all()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._notify(lambda: setattr(self, "connack", rc))

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._notify(lambda: setattr(self, "disconnected", True))

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        self._notify(lambda: self._acks.__setitem__(mid, rc))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        self._notify(lambda: self._acks.__setitem__(mid, rcs))

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self._notify(lambda: self.messages.append((msg.topic, msg.payload)))

    def wait_for(self, predicate: Callable[[], Any], what: str) -> Any:
        """Wait (up to WAIT_S) until ``predicate()`` is truthy and return its value."""
        with self._cond:
            value = self._cond.wait_for(predicate, WAIT_S)
        if not value:
            raise AssertionError(f"timed out after {WAIT_S} s waiting for {what}")
        return value

    def connect(self, host: str = "localhost") -> Any:
        """Connect, start the network loop, wait for the CONNACK and return its reason code."""
        self.client.connect(host, self.port)
        self.client.loop_start()
        self.wait_for(lambda: self.connack is not None or self.disconnected, "CONNACK")
        return self.connack

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any:
        """Publish at QoS 1 and return the PUBACK reason code."""
        mid = self.client.publish(topic, payload, qos=qos, retain=retain).mid
        return self.wait_for(lambda: self._acks.get(mid), f"PUBACK of {topic}")

    def subscribe(self, topic_filter: str, qos: int = 1) -> Any:
        """Subscribe and return the SUBACK's first reason code."""
        result, mid = self.client.subscribe(topic_filter, qos=qos)
        assert mid is not None, f"subscribe failed locally: {result}"
        return self.wait_for(lambda: self._acks.get(mid), f"SUBACK of {topic_filter}")[0]

    def expect(self, topic: str) -> bytes:
        """Wait for a message on ``topic`` and return its payload."""
        found = self.wait_for(
            lambda: [p for t, p in self.messages if t == topic], f"a message on {topic}"
        )
        return bytes(found[0])

    def topics(self) -> list[str]:
        """Topics received so far."""
        with self._cond:
            return [t for t, _ in self.messages]

    def close(self) -> None:
        """Disconnect and stop the network loop."""
        self.client.disconnect()
        self.client.loop_stop()


def refused(identity: CertPair | None, ca: Path, port: int, client_id: str = "intruder") -> str:
    """Try to connect and say how the broker refused; raise AssertionError if it accepted."""
    peer = Peer(identity, ca, client_id, port)
    try:
        peer.client.connect("localhost", port)
    except (ssl.SSLError, OSError) as exc:
        return f"TLS handshake refused: {exc}"
    try:
        peer.client.loop_start()
        peer.wait_for(lambda: peer.connack is not None or peer.disconnected, "CONNACK or close")
        if peer.connack is not None and not peer.connack.is_failure:
            raise AssertionError(f"broker accepted {client_id}: {peer.connack}")
        return f"connection refused: {peer.connack}"
    finally:
        peer.close()


@pytest.fixture
def site() -> Iterator[SiteFiles]:
    """A freshly provisioned site (CA, broker, box-a, box-b, dashboard) in its own /tmp dir."""
    path = new_site_dir()
    try:
        yield make_site(path, SITE_ID, BOXES)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def broker(site: SiteFiles) -> Iterator[Mosquitto]:
    """The site's Mosquitto, started, stopped after the test."""
    with site.broker() as running:
        yield running


@pytest.fixture
def peer(site: SiteFiles, broker: Mosquitto) -> Iterator[Callable[..., Peer]]:
    """Factory ``peer(identity, client_id)`` of connected peers, all closed after the test."""
    peers: list[Peer] = []

    def make(identity: CertPair, client_id: str) -> Peer:
        p = Peer(identity, site.ca_cert, client_id, broker.port)
        peers.append(p)
        rc = p.connect()
        assert rc is not None and not rc.is_failure, f"{client_id} was refused: {rc}"
        return p

    yield make
    for p in peers:
        p.close()


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` until true, up to WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_S} s waiting for {what}")
        time.sleep(0.02)


def box_publisher(site: Site, box: str, where: Path) -> Publisher:
    """The box's own publisher from its first-boot bundle (retained status, Last Will), started
    and connected."""
    from edge import settings as edge_settings
    from edge.publisher import Publisher
    from provisioning.bundle import install_bundle

    install_bundle(site.bundle_path(box), where)
    creds = where / "credentials"
    cfg = edge_settings.load(where / "box.toml", ca_file=str(creds / "ca.pem"),
                             cert_file=str(creds / "box.pem"), key_file=str(creds / "box.key"),
                             state_dir=str(where), keepalive_s=5)
    pub = Publisher(cfg, version="0.1.0")
    pub.start()
    wait_until(pub.connected.is_set, f"{box} connected")
    return pub


def ends_with_wait_lock_held(proc: subprocess.Popen[Any], end: Callable[[], object],
                             timeout_s: float) -> bool:
    """Run ``end`` while ``proc``'s Popen wait lock is held, so that waiting for ``proc`` blocks
    (as on a process that outlives SIGKILL, or an interrupt left the lock taken); True if ``end``
    returned within ``timeout_s``. ``proc`` is killed and reaped after, whatever happened."""
    assert proc._waitpid_lock.acquire(False)  # type: ignore[attr-defined]
    ender = threading.Thread(target=end, daemon=True)
    try:
        ender.start()
        ender.join(timeout=timeout_s)
        return not ender.is_alive()
    finally:
        proc._waitpid_lock.release()  # type: ignore[attr-defined]
        proc.kill()
        proc.wait()
        ender.join(timeout=5)
