"""Signed updates: tampered bundles refused with nothing written, failed health rolled back, and a
kill at any point of an install (a real process killed with SIGKILL) leaves a working version."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.update import COMPLETE_MARK, UpdateError, Updater, build_release, verify_release

REPO = Path(__file__).resolve().parents[1]


def keypair() -> tuple[bytes, bytes]:
    key = Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return priv, pub


def release(tmp: Path, version: str, priv: bytes, filler_bytes: int = 0) -> Path:
    """A release tree whose bin/miroir prints its version, packed and signed."""
    tree = tmp / f"tree-{version}"
    (tree / "bin").mkdir(parents=True)
    script = tree / "bin" / "miroir"
    script.write_text(f"#!/bin/sh\necho miroir {version}\n")
    script.chmod(0o755)
    if filler_bytes:
        (tree / "lib.bin").write_bytes(random.Random(version).randbytes(filler_bytes))
    return build_release(tree, version, priv, tmp / f"miroir-{version}.release")


def running(root: Path) -> str:
    """Run current/bin/miroir (what the box would start) and return its output."""
    assert (root / "current" / COMPLETE_MARK).exists(), "current is not a complete release"
    out = subprocess.run([str(root / "current" / "bin" / "miroir")], capture_output=True,
                         text=True, check=True, timeout=10)
    return out.stdout.strip()


def snapshot(d: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for p in sorted(d.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(d))] = os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(d))] = p.read_bytes()
    return out


@pytest.fixture
def keys() -> tuple[bytes, bytes]:
    return keypair()


def installed(tmp_path: Path, priv: bytes, pub: bytes) -> Updater:
    up = Updater(tmp_path / "root")
    up.install(release(tmp_path, "1.0", priv), pub, restart=lambda: None, health=lambda v: True)
    return up


def test_install_and_upgrade(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    priv, pub = keys
    up = installed(tmp_path, priv, pub)
    assert running(up.root) == "miroir 1.0"
    restarts: list[str | None] = []
    checked: list[str] = []

    def health(v: str) -> bool:
        checked.append(v)
        return running(up.root) == f"miroir {v}"

    version = up.install(release(tmp_path, "2.0", priv), pub,
                         restart=lambda: restarts.append(up.current_version()), health=health)
    assert version == "2.0" and running(up.root) == "miroir 2.0"
    assert restarts == ["2.0"] and checked == ["2.0"]
    assert not (up.root / "state.json").read_text().strip("{} \n")
    assert sorted(p.name for p in up.releases.iterdir()) == ["1.0", "2.0"]


@pytest.mark.parametrize("how", ["payload", "manifest", "other-key", "truncated"])
def test_tampered_bundle_rejected_with_nothing_written(
        tmp_path: Path, keys: tuple[bytes, bytes], how: str) -> None:
    priv, pub = keys
    up = installed(tmp_path, priv, pub)
    if how == "other-key":
        bundle = release(tmp_path, "2.0", keypair()[0])
    else:
        bundle = release(tmp_path, "2.0", priv)
        data = bytearray(bundle.read_bytes())
        if how == "payload":
            data[-100] ^= 0x01
        elif how == "manifest":
            i = data.index(b'"2.0"')
            data[i + 1:i + 4] = b"6.6"
        else:
            del data[-20:]
        bundle.write_bytes(bytes(data))
    before = snapshot(up.root)
    called: list[int] = []
    with pytest.raises(UpdateError, match=r"signature|payload"):
        up.install(bundle, pub, restart=lambda: called.append(1), health=lambda v: True)
    assert snapshot(up.root) == before and not called
    assert running(up.root) == "miroir 1.0"


def test_failed_health_check_rolls_back(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    priv, pub = keys
    up = installed(tmp_path, priv, pub)
    seen: list[str] = []

    def restart() -> None:
        seen.append(running(up.root))

    with pytest.raises(UpdateError, match=r"rolled back to 1\.0"):
        up.install(release(tmp_path, "2.0", priv), pub, restart=restart, health=lambda v: False)
    assert seen == ["miroir 2.0", "miroir 1.0"]  # tried the new one, then back on the old one
    assert running(up.root) == "miroir 1.0" and up.current_version() == "1.0"
    assert not (up.releases / "2.0").exists()
    # A health check that crashes counts as failed.
    def boom(v: str) -> bool:
        raise RuntimeError("agent never published")
    (tmp_path / "b").mkdir()
    with pytest.raises(UpdateError):
        up.install(release(tmp_path / "b", "2.1", priv), pub, restart=lambda: None, health=boom)
    assert running(up.root) == "miroir 1.0"


INSTALL = """
import sys
from pathlib import Path
from edge.update import Updater
Updater(Path(sys.argv[1])).install(Path(sys.argv[2]), Path(sys.argv[3]).read_bytes(),
                                   restart=lambda: None, health=lambda v: True)
"""


def run_install(root: Path, bundle: Path, pub: Path, crash_at: str | None = None,
                kill_after_s: float | None = None) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MIROIR_UPDATE_CRASH_AT", None)
    if crash_at:
        env["MIROIR_UPDATE_CRASH_AT"] = crash_at
    proc = subprocess.Popen([sys.executable, "-c", INSTALL, str(root), str(bundle), str(pub)],
                            env=env)
    if kill_after_s is not None:
        time.sleep(kill_after_s)
        proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=60)


@pytest.mark.parametrize("point", ["unpack", "before-switch", "after-switch"])
def test_kill_in_the_middle_leaves_a_working_version(
        tmp_path: Path, keys: tuple[bytes, bytes], point: str) -> None:
    priv, pub = keys
    up = installed(tmp_path, priv, pub)
    pub_file = tmp_path / "release.pub"
    pub_file.write_bytes(pub)
    bundle = release(tmp_path, "2.0", priv)
    assert run_install(up.root, bundle, pub_file, crash_at=point) == -signal.SIGKILL
    # Right after the kill (power back on, before recovery) the box can already run something.
    assert running(up.root) in ("miroir 1.0", "miroir 2.0")
    # what miroir-update-recover.service does at boot: the image's copy of this one file, on the
    # system Python, with no site-packages (the standard library only: no venv, no miroir package)
    alone = tmp_path / "usr-lib-miroir" / "update.py"
    alone.parent.mkdir()
    alone.write_bytes((REPO / "edge" / "update.py").read_bytes())
    done = subprocess.run([sys.executable, "-I", "-S", str(alone), "recover", "--root", str(up.root)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert running(up.root) == "miroir 1.0"
    assert not list(up.releases.glob(".staging-*"))
    # And the next attempt goes through.
    assert run_install(up.root, bundle, pub_file) == 0
    assert running(up.root) == "miroir 2.0"


def test_kills_at_random_moments(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    priv, pub = keys
    up = installed(tmp_path, priv, pub)
    pub_file = tmp_path / "release.pub"
    pub_file.write_bytes(pub)
    bundle = release(tmp_path, "2.0", priv, filler_bytes=4_000_000)
    rng = random.Random(7)
    outcomes = []
    for _ in range(6):
        rc = run_install(up.root, bundle, pub_file, kill_after_s=rng.uniform(0.05, 0.6))
        assert running(up.root) in ("miroir 1.0", "miroir 2.0")
        up.recover()
        outcomes.append((rc, running(up.root)))
        assert running(up.root) in ("miroir 1.0", "miroir 2.0")
        if running(up.root) == "miroir 2.0":  # it finished before the kill: go back for another try
            up._write_state({"pending": "2.0", "previous": "1.0"})
            up.rollback()
    print(f"\nkill outcomes (rc, version after recovery): {outcomes}")
    assert any(rc == -signal.SIGKILL for rc, _ in outcomes)


def test_verify_reads_only(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    priv, pub = keys
    bundle = release(tmp_path, "3.0", priv)
    before = snapshot(tmp_path)
    m = verify_release(bundle, pub)
    assert m.version == "3.0" and m.payload_bytes > 0
    assert snapshot(tmp_path) == before
