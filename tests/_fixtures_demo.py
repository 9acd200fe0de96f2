"""Session fixture: the demo floor's calls, rendered once per test session into a tmp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.calls import DemoCall, build_calls


@pytest.fixture(scope="session")
def demo_calls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory holding the rendered demo calls (``<name>/{near,far}.wav``, ``truth.json``)."""
    return tmp_path_factory.mktemp("demo-calls")


@pytest.fixture(scope="session")
def demo_calls(demo_calls_dir: Path) -> list[DemoCall]:
    """The eight demo calls rendered with espeak-ng (built once per session)."""
    return build_calls(demo_calls_dir, progress=None)
