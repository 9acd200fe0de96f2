"""The order of release versions, shared by the box's updates and the dashboard's fleet page.

This module imports only the standard library."""

from __future__ import annotations

import re

PRE_RELEASE = ("dev", "a", "alpha", "b", "beta", "c", "pre", "preview", "rc")
"""Words that mark a version before its release (``0.2.0rc1`` before ``0.2.0``), in order."""


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key of a release version: numbers compare as numbers (``0.10`` after ``0.9``), a
    pre-release word before the end of the version (``0.2.0rc1``, ``0.2.0.dev3`` before
    ``0.2.0``), other words after it (``1.0.post1`` after ``1.0``, before ``1.0.1``)."""
    parts: list[tuple[int, int | str]] = []
    for token in re.findall(r"\d+|[^\W\d_]+", version):
        if token.isdigit():
            parts.append((3, int(token)))
        elif token.lower() in PRE_RELEASE:
            parts.append((0, PRE_RELEASE.index(token.lower())))
        else:
            parts.append((2, token))
    return (*parts, (1, 0))
