"""The rule for the names a site gives its seats, agents and teams (inventory and dashboard)."""

from __future__ import annotations

import re

LABEL_PATTERN = re.compile(r"^(?!\.\.?$)[\w .@'-]{1,64}$")
"""Seats, agents and teams: letters (any script), digits, space and ``_ . @ ' -``, 1 to 64,
but not ``.`` or ``..`` alone.

No ``/``, ``?``, ``#``, ``%`` nor ``\\``: an agent or team id is a segment of the dashboard's
paths (its page, its exports, its erasure); ``.`` and ``..`` are segments that browsers and HTTP
clients resolve away before sending (``/agents/..`` is sent as ``/``)."""
LABEL_RULE = "1 to 64 letters, digits, spaces or _ . @ ' -, not . or .. alone"
""":data:`LABEL_PATTERN` in words, for error messages."""


def is_label(value: str) -> bool:
    """True if ``value`` follows :data:`LABEL_PATTERN`."""
    return bool(LABEL_PATTERN.fullmatch(value))
