"""The box's stop flag, which its signal handlers set (see :class:`StopFlag`)."""

from __future__ import annotations

import contextlib
import math
import os
import select
import threading
import time


class StopFlag:
    """``threading.Event``'s ``set``, ``clear``, ``is_set`` and ``wait``, without a lock.

    A signal handler runs in the main thread, between two of its steps: ``Event.set`` there
    waited for the Event's lock, which that thread held for a moment at each of its own waits on
    the Event (the capture's), and the box hung. ``set`` writes the flag and a byte to a pipe
    instead, and ``wait`` blocks in ``poll`` on that pipe: it sleeps until then (no polling,
    which cost a box waiting for a lost device a hundred wake-ups a second), and a ``set`` from a
    handler or another thread ends it at once.
    """

    def __init__(self) -> None:
        self._set = False
        self._read_fd = -1
        self._write_fd = -1
        """The wake-up pipe, made by the first :meth:`wait` (the many boxes of a bench process,
        which never wait, hold none)."""
        self._making = threading.Lock()  # (taken by wait only, never by set)

    def __del__(self) -> None:
        for fd in (getattr(self, "_read_fd", -1), getattr(self, "_write_fd", -1)):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def set(self) -> None:
        """Ask for the stop (safe in a signal handler: an attribute and a pipe written, no lock)."""
        self._set = True
        fd = self._write_fd
        if fd >= 0:
            with contextlib.suppress(BlockingIOError):  # a full pipe: a wake-up is already there
                os.write(fd, b"\0")

    def clear(self) -> None:
        """Withdraw the stop asked for."""
        self._set = False
        self._drain()

    def is_set(self) -> bool:
        """Whether the stop was asked for."""
        return self._set

    def wait(self, timeout_s: float | None = None) -> bool:
        """Sleep until the stop is asked for or ``timeout_s`` has passed; return :meth:`is_set`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        poller = select.poll()  # (no descriptor limit, unlike select.select)
        poller.register(self._pipe(), select.POLLIN)
        while not self._set:  # (a set from here on finds the pipe and writes to it)
            left_ms = None
            if deadline is not None:
                left_ms = math.ceil((deadline - time.monotonic()) * 1000)
                if left_ms <= 0:
                    break
            if poller.poll(left_ms) and not self._set:  # a wake-up left from before a clear
                self._drain()
        return self._set

    def _pipe(self) -> int:
        """The wake-up pipe's read end, made on the first call."""
        with self._making:
            if self._read_fd < 0:
                read_fd, write_fd = os.pipe()
                os.set_blocking(read_fd, False)
                os.set_blocking(write_fd, False)
                self._read_fd, self._write_fd = read_fd, write_fd
        return self._read_fd

    def _drain(self) -> None:
        """Empty the pipe of its wake-ups."""
        if self._read_fd < 0:
            return
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read_fd, 512):
                pass
