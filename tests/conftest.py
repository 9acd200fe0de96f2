"""Shared fixtures: each area keeps its own in tests/_fixtures_<area>.py."""

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
