"""Journal lines of a flood (commands refused or dropped, late statuses, call states applied): a few
one by one, then their number. The box and the dashboard both use it; standard library only."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

REFUSALS_LOGGED = 5
"""Refused (or dropped) commands of one source (the ``cmd`` topic, the control socket, the
publisher's queue) written to the journal one by one per :data:`REFUSALS_EVERY_S`; past them a
sender gone wrong is counted (``cmd_refused``), and the total written when it ends."""
REFUSALS_EVERY_S = 60.0
"""Length of a counting period, seconds: a source's first :data:`REFUSALS_LOGGED` refusals of each
are written one by one, the rest counted."""


class Refusals:
    """The journal's account of the commands refused (or dropped: ``verb``) from one source
    (``what``): the first :data:`REFUSALS_LOGGED` of each :data:`REFUSALS_EVERY_S` one by one,
    then their number (a flood would drown the agent's own lines, past journald's rate limit, and
    fill the card). Thread-safe: paho's thread counts the commands its queue drops.

    ``plural``: ``what`` for more than one (default: ``what`` + "s", and "(s)" in the count's
    line); ``counter``: the counter that has them all (empty: the journal's count only);
    ``level``: the lines' logging level."""

    def __init__(self, what: str, verb: str = "refused",
                 logger: logging.Logger | None = None, *, plural: str = "",
                 counter: str = "cmd_refused", level: int = logging.WARNING) -> None:
        self.what = what
        self.verb = verb
        self.plural = plural
        self.counter = counter
        self.level = level
        self.log = log if logger is None else logger
        self.since = -REFUSALS_EVERY_S
        """When (monotonic seconds) the commands now counted began."""
        self.count = 0
        """Commands refused since then (the first :data:`REFUSALS_LOGGED` written)."""
        self._lock = threading.Lock()

    def refused(self, why: str) -> None:
        """Write one refused command, or only count it past the first of the period."""
        with self._lock:
            if time.monotonic() - self.since >= REFUSALS_EVERY_S:
                self._flush(False)
                self.since = time.monotonic()
            self.count += 1
            if self.count <= REFUSALS_LOGGED:
                self.log.log(self.level, "%s %s: %s", self.what, self.verb, why)
            if self.count == REFUSALS_LOGGED:
                where = f" in {self.counter}" if self.counter else ""
                self.log.log(self.level, "further %s %s are counted%s; their number is "
                             "written within %.0f s", self.verb, self.plural or f"{self.what}s",
                             where, REFUSALS_EVERY_S)

    def flush(self, force: bool = False) -> None:
        """Write how many were refused since the count began, once :data:`REFUSALS_EVERY_S` have
        passed (or now, if ``force``), when some went unwritten."""
        with self._lock:
            self._flush(force)

    def _flush(self, force: bool) -> None:
        elapsed_s = time.monotonic() - self.since
        if not self.count or (not force and elapsed_s < REFUSALS_EVERY_S):
            return
        if self.count > REFUSALS_LOGGED:
            self.log.log(self.level, "%d %s %s in %.0f s (%d not written one by one)",
                         self.count, self.plural or f"{self.what}(s)", self.verb, elapsed_s,
                         self.count - REFUSALS_LOGGED)
        self.count = 0
