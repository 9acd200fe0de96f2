"""The box's stop flag, which its signal handlers set (see :class:`StopFlag`)."""

from __future__ import annotations

import time

WAIT_SLICE_S = 0.01
"""A :meth:`StopFlag.wait` looks at the flag this often (seconds)."""


class StopFlag:
    """``threading.Event``'s ``set``, ``clear``, ``is_set`` and ``wait``, without a lock.

    A signal handler runs in the main thread, between two of its steps: ``Event.set`` there
    waited for the Event's lock, which that thread held for a moment at each of its own waits on
    the Event (the capture's), and the box hung. ``wait`` sleeps in slices of
    :data:`WAIT_SLICE_S` instead, so a ``set`` from a handler or another thread ends it within
    one slice.
    """

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        """Ask for the stop (safe in a signal handler: an attribute written, nothing else)."""
        self._set = True

    def clear(self) -> None:
        """Withdraw the stop asked for."""
        self._set = False

    def is_set(self) -> bool:
        """Whether the stop was asked for."""
        return self._set

    def wait(self, timeout_s: float | None = None) -> bool:
        """Sleep until the stop is asked for or ``timeout_s`` has passed; return :meth:`is_set`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._set:
            left_s = WAIT_SLICE_S if deadline is None else deadline - time.monotonic()
            if left_s <= 0:
                break
            time.sleep(min(left_s, WAIT_SLICE_S))
        return self._set
