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


def test_writers_in_several_threads_take_turns(tmp_path: Path) -> None:
    """Two provisioning runs on one site write the same inventory: every write lands whole."""
    import threading

    target = tmp_path / "inventory.json"
    errors: list[BaseException] = []

    def write(who: str) -> None:
        for i in range(40):
            try:
                atomic_write(target, f"{who} {i} " + "x" * 4000, mode=0o644)
            except BaseException as exc:  # any failure is the finding
                errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in ("a", "b", "c")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    who, i, filler = target.read_text().split(" ")
    assert who in "abc" and int(i) == 39 and filler == "x" * 4000
