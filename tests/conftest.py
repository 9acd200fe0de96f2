"""Shared fixtures: each area keeps its own in tests/_fixtures_<area>.py."""

from __future__ import annotations

from collections import Counter

import pytest

SLOWEST_FILES = ("test_demo_floor.py", "test_transport.py", "test_update_broker.py",
                 "test_update_backoff.py", "test_update.py", "test_fatigue.py")
"""The test files that take longest, slowest first (2 to 5 minutes each in a fresh clone's run).
pytest-xdist hands whole files to its workers in collection order (``./run test``); by test count,
its own order, the two update files of two tests and about 170 s each went last, and the run took
13 min 23 s or 16 min 13 s as they fell on two workers or on one. Started first, the short files
even out the end."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the files: the slowest first, then by test count; a file's tests keep their order."""
    counts = Counter(item.path.name for item in items)

    def rank(item: pytest.Item) -> tuple[int, int, str]:
        name = item.path.name
        first = SLOWEST_FILES.index(name) if name in SLOWEST_FILES else len(SLOWEST_FILES)
        return first, -counts[name], name

    items.sort(key=rank)

pytest_plugins = [
    "tests._fixtures_broker",
    "tests._fixtures_capture",
    "tests._fixtures_dashboard",
    "tests._fixtures_demo",
    "tests._fixtures_fatigue",
    "tests._fixtures_signals",
    "tests._fixtures_transport",
    "tests._fixtures_update",
]
