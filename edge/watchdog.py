"""systemd notification (sd_notify) without a systemd library: READY, WATCHDOG, STATUS, STOPPING.

systemd gives a ``Type=notify`` service the socket in ``NOTIFY_SOCKET`` (a path, or ``@name`` for
the abstract namespace) and, with ``WatchdogSec=``, the period in ``WATCHDOG_USEC``. The box loop
calls :meth:`Notifier.ping` every iteration; pings are sent at most every half period, so a loop
that stalls stops sending ``WATCHDOG=1`` and systemd kills and restarts the agent. Outside systemd
(no ``NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify datagrams to the service manager, if there is one."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if addr.startswith("@"):
            self.address = "\0" + addr[1:]
        elif addr.startswith("/"):
            self.address = addr
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog_ok = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        self.watchdog_s: float | None = int(usec) / 1e6 if watchdog_ok else None
        """The watchdog period in seconds, or None when there is no watchdog."""
        self.ping_every_s = self.watchdog_s / 2 if self.watchdog_s else float("inf")
        self._last_ping = float("-inf")
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """True when a service manager listens."""
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False if none was sent or it failed."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            log.warning("sd_notify to %r failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """Tell systemd that start-up is complete (``READY=1``)."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def ping(self, now_s: float | None = None) -> bool:
        """Call every loop iteration: sends ``WATCHDOG=1`` at most every half watchdog period.

        Args:
            now_s: Monotonic time in seconds (default ``time.monotonic()``).

        Returns:
            True if a ping was sent now.
        """
        if self.watchdog_s is None:
            return False
        now_s = time.monotonic() if now_s is None else now_s
        if now_s - self._last_ping < self.ping_every_s:
            return False
        self._last_ping = now_s
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status``."""
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        """Tell systemd the service is shutting down (``STOPPING=1``)."""
        return self.notify("STOPPING=1")

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


__all__ = ["Notifier"]
