"""Atomic file replacement, shared by the box, the provisioning scripts and the dashboard's tools."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o644,
                 sync: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically: readers see the old file or the new one, never a
    part of it.

    Args:
        path: the file to replace (its folder must exist).
        data: the new content (``str`` is written as UTF-8).
        mode: permission bits of the new file.
        sync: flush the data to disk before the rename, so that a power cut also leaves the old
            file or the new one (worth it for state a restart reads; costly on SD cards for
            frequent writes).
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(raw)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
