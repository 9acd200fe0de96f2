"""Atomic file replacement, shared by the box and the provisioning scripts.

(``edge/update.py`` keeps its own: the image runs that one file on the system Python, alone.)
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
from pathlib import Path
from typing import Any

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON document in ``path``. One nested deeper than Python's parser recurses (a corrupt
    file) raises ``ValueError`` as any bad JSON does, never ``RecursionError``."""
    text = Path(path).read_text()
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("not valid JSON (nested too deep)") from None


def read_regular(path: str | os.PathLike[str]) -> bytes:
    """The bytes of ``path``, a regular file. A FIFO, a device or a socket raises ``OSError``
    ("a FIFO, not a regular file"), never opened for a read that would wait for a writer or
    never end; a folder raises ``IsADirectoryError``, a missing file ``FileNotFoundError``."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO's open waits, else
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "something else")
            raise OSError(errno.EINVAL, f"{kind}, not a regular file", str(path))
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read()
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes | str, mode: int | None = None,
                 sync: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically: readers see the old file or the new one, never a
    part of it.

    The data goes to ``.NAME.tmp`` in the same folder first (a temporary left by a crash is
    replaced by the next write), then is renamed over ``path``. The folder is locked meanwhile
    (``flock``), so writers in other threads or processes take turns.

    Args:
        path: the file to replace (its folder must exist).
        data: the new content (``str`` is written as UTF-8).
        mode: permission bits of the new file; ``None`` follows the process's umask, as a plain
            ``open`` would (the box's service runs with ``UMask=0077``).
        sync: flush the data to disk before the rename, so that a power cut also leaves the old
            file or the new one (worth it for state a restart reads; costly on SD cards for
            frequent writes).
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp")
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)  # released when the descriptor closes
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     0o666 if mode is None else mode)
        try:
            with os.fdopen(fd, "wb") as fh:
                if mode is not None:
                    os.fchmod(fh.fileno(), mode)  # the umask would have cleared some of its bits
                fh.write(raw)
                if sync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    finally:
        os.close(folder)
