"""miroir.files.atomic_write: the box's state files and the provisioning scripts' outputs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from miroir.files import atomic_write


def test_atomic_write_follows_the_umask_unless_a_mode_is_given(tmp_path: Path) -> None:
    old = os.umask(0o077)  # the box's service (UMask=0077): its baselines stay private
    try:
        atomic_write(tmp_path / "baselines.json", "{}")
        atomic_write(tmp_path / "panel.json", b"{}", mode=0o644, sync=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "baselines.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "panel.json").stat().st_mode) == 0o644
    assert (tmp_path / "baselines.json").read_text() == "{}"


def test_a_crash_leftover_is_replaced_and_a_failure_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    (tmp_path / ".state.json.tmp").write_text("half written before a power cut")
    atomic_write(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    # the temporary's name is taken by a folder: the write fails, the old file stays whole
    (tmp_path / ".state.json.tmp").mkdir()
    with pytest.raises(OSError):
        atomic_write(target, "newer")
    assert target.read_text() == "new"
