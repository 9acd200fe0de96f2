"""Fan-out of box updates from paho's thread to the asyncio server-sent-event subscribers."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

DEFAULT_QUEUE_SIZE = 512


class Subscription:
    """One subscriber's bounded queue of JSON texts (oldest dropped when full)."""

    def __init__(self, maxsize: int, owner: str = "") -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=maxsize)
        self.owner = owner
        self.dropped = 0

    async def get(self, timeout_s: float | None = None) -> str | None:
        """Next message, or None after ``timeout_s`` seconds without one."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout_s)
        except TimeoutError:
            return None


class Hub:
    """Thread-safe publish, asyncio-side fan-out with per-client bounded queues."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()
        self.published = 0
        self.dropped = 0
        self.unbound = 0

    def bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Attach the event loop that owns the subscribers (None detaches)."""
        self._loop = loop

    def publish(self, message: dict[str, Any]) -> None:
        """Queue ``message`` for every subscriber; callable from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            with self._lock:
                self.unbound += 1
            return
        text = json.dumps(message, separators=(",", ":"), allow_nan=False)
        try:
            loop.call_soon_threadsafe(self._fanout, text)
        except RuntimeError:  # loop closed between the check and the call
            with self._lock:
                self.unbound += 1

    def _fanout(self, text: str) -> None:
        self.published += 1
        for sub in self._subs:
            if sub.queue.full():
                sub.queue.get_nowait()
                sub.dropped += 1
                self.dropped += 1
            sub.queue.put_nowait(text)

    def open(self, owner: str = "") -> Subscription:
        """Register a subscriber of the user ``owner`` now; :meth:`close` ends it. Call it from
        the event loop's thread (as the fan-out runs)."""
        sub = Subscription(self.queue_size, owner)
        self._subs.add(sub)
        return sub

    def close(self, sub: Subscription) -> None:
        """Unregister a subscriber (again: nothing happens)."""
        self._subs.discard(sub)

    @asynccontextmanager
    async def subscribe(self, owner: str = "") -> AsyncIterator[Subscription]:
        """Register a subscriber (of the user ``owner``) for the duration of the ``async with`` block."""
        sub = self.open(owner)
        try:
            yield sub
        finally:
            self.close(sub)

    def open_streams(self, owner: str | None = None) -> int:
        """Subscribers open now, all of them or those of the user ``owner``."""
        return sum(owner is None or sub.owner == owner for sub in self._subs)

    def stats(self) -> dict[str, int]:
        """Subscribers, messages fanned out, and messages dropped for slow clients."""
        with self._lock:
            unbound = self.unbound
        return {"subscribers": len(self._subs), "published": self.published,
                "dropped": self.dropped, "unbound": unbound}
