"""Signed updates: tampered bundles refused with nothing written, failed health rolled back, and a
kill at any point of an install (a real process killed with SIGKILL) leaves a working version."""

from __future__ import annotations

import contextlib
import os
import random
import re
import select
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.health import wait_published
from edge.update import (
    COMPLETE_MARK,
    MAGIC,
    BrokerUnreachable,
    UpdateError,
    Updater,
    build_release,
    rolled_back,
    sign_release,
    verify_release,
)
from miroir.versions import version_key

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
    with pytest.raises(UpdateError, match=r"signature|payload|truncated"):
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


def test_a_rolled_back_update_is_in_the_box_status_until_an_update_holds(
        tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """A release that failed its check was rolled back and the box said nothing of it: the IT
    page showed the old version as merely old. The status now names the release rolled back, and
    when, until an update is committed."""
    from edge.health import health_facts
    from miroir import wire

    priv, pub = keys
    up = installed(tmp_path, priv, pub)
    assert health_facts("1.0", releases_root=up.root)["update_rolled_back"] == ""
    t0 = time.time()
    with pytest.raises(UpdateError, match="rolled back"):
        up.install(release(tmp_path, "2.0", priv), pub, restart=lambda: None, health=lambda v: False)
    facts = health_facts("1.0", releases_root=up.root)
    assert facts["update_rolled_back"] == "2.0" and facts["update_rolled_back_ts"] >= t0
    facts.pop("version")
    wire.validate("status", wire.status_message("s1", "b1", "online", time.time(), **facts))
    (tmp_path / "b").mkdir()
    up.install(release(tmp_path / "b", "2.1", priv), pub, restart=lambda: None,
               health=lambda v: True)
    facts = health_facts("2.1", releases_root=up.root)
    assert facts["update_rolled_back"] == "" and "update_rolled_back_ts" not in facts


INSTALL = """
import sys
from pathlib import Path
from typing import Any
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


KILLED_IN_THE_PUT_BACK_CHECK = """
import os, sys
from pathlib import Path
from edge.update import Updater
calls = []

def broker(since_ts: float) -> bool:  # the running release reaches it; killed (-9) on the second
    calls.append(since_ts)            # call: while the release put back is checked
    if len(calls) > 1:
        os.kill(os.getpid(), 9)
    return True

Updater(Path(sys.argv[1])).install(Path(sys.argv[2]), Path(sys.argv[3]).read_bytes(),
                                   restart=lambda: None, health=lambda v: False, broker=broker)
"""


def test_a_rollback_killed_while_the_release_put_back_is_checked_is_still_recorded(
        tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """A release failed its check and was rolled back; the rollback was recorded only once the
    release put back had shown it reaches the broker (up to 90 s later): an update killed then
    (kill -9, a power cut; Ctrl-C or a closed SSH session too) left the old release running and
    the IT page never learned of the rollback. It is now recorded with the rollback, and taken
    back (the record before it restored) only when the broker proves out of reach."""
    priv, pub = keys
    up = installed(tmp_path, priv, pub)
    pub_file = tmp_path / "release.pub"
    pub_file.write_bytes(pub)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MIROIR_UPDATE_CRASH_AT", None)
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_THE_PUT_BACK_CHECK, str(up.root),
                             str(release(tmp_path, "2.0", priv)), str(pub_file)],
                            env=env, timeout=60, check=False)
    assert killed.returncode == -signal.SIGKILL
    up.recover()
    assert running(up.root) == "miroir 1.0"
    assert (rolled_back(up.root) or {}).get("version") == "2.0"

    answers = iter([True, False])  # reaches the broker first, then the release put back does not
    (tmp_path / "b").mkdir()
    with pytest.raises(BrokerUnreachable):
        up.install(release(tmp_path / "b", "2.1", priv), pub, restart=lambda: None,
                   health=lambda v: False, broker=lambda ts: next(answers))
    assert running(up.root) == "miroir 1.0"
    assert (rolled_back(up.root) or {}).get("version") == "2.0"


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
    started_s = time.monotonic()  # a whole install, to kill within it (a fixed 0.05-0.6 s
    assert run_install(up.root, bundle, pub_file) == 0  # window often missed an install of 0.1 s)
    whole_s = time.monotonic() - started_s
    up._write_state({"pending": "2.0", "previous": "1.0"})
    up.rollback()
    rng = random.Random(7)
    outcomes = []
    for _ in range(6):
        rc = run_install(up.root, bundle, pub_file, kill_after_s=rng.uniform(0.1, 0.95) * whole_s)
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


def test_an_older_release_is_refused_unless_asked_for(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """A replayed old signed bundle does not take the box back (it did); asked for, it does."""
    priv, pub = keys
    up = installed(tmp_path, priv, pub)
    up.install(release(tmp_path, "1.10", priv), pub, restart=lambda: None, health=lambda v: True)
    with pytest.raises(UpdateError, match=r"not newer than the running 1\.10"):
        up.install(release(tmp_path, "1.9", priv), pub, restart=lambda: None, health=lambda v: True)
    assert running(up.root) == "miroir 1.10"
    assert up.install(tmp_path / "miroir-1.0.release", pub, restart=lambda: None,
                      health=lambda v: True, allow_downgrade=True) == "1.0"


@pytest.mark.parametrize("interruption", [KeyboardInterrupt(), UpdateError("agent did not restart")])
def test_an_install_interrupted_after_the_switch_rolls_back(
        tmp_path: Path, keys: tuple[bytes, bytes], interruption: BaseException) -> None:
    """Ctrl-C, a closed SSH session (the CLI turns SIGHUP/SIGTERM into the same) or a restart
    that hangs, during the health check: back on the old release at once (it stayed on the
    unconfirmed one until the next boot)."""
    priv, pub = keys
    up = installed(tmp_path, priv, pub)

    def health(version: str) -> bool:
        raise interruption

    with pytest.raises(type(interruption)):
        up.install(release(tmp_path, "2.0", priv), pub, restart=lambda: None, health=health)
    assert running(up.root) == "miroir 1.0" and not (up.releases / "2.0").exists()
    assert up._state() == {}


def _signed_tar(tmp: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], priv: bytes,
                version: str) -> Path:
    """A payload built member by member (what build_release cannot make), signed as a release."""
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return sign_release(buf.getvalue(), version, priv, tmp / f"bad-{version}.release")


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", link: str = ""
            ) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o755
    return info, data if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize("members, why", [
    ([_member("../../escaped.txt")], "unsafe path"),
    ([_member("/etc/escaped.txt")], "unsafe path"),
    ([_member("lib", tarfile.SYMTYPE, link="/tmp"), _member("lib/escaped.txt")], "under a symbolic link"),
    ([_member("bin/miroir"), _member("hard", tarfile.LNKTYPE, link="bin/miroir")], "only files"),
    ([_member("dev", tarfile.CHRTYPE)], "only files"),
    # the installer's own mark as a link: written through it, out of the release, as root
    ([_member("bin/miroir"), _member(".complete", tarfile.SYMTYPE, link="../../../escaped.txt")],
     "the installer's own"),
    ([_member("bin/miroir"), _member("./.complete", data=b"2.0\n")], "the installer's own"),
])
def test_an_unsafe_signed_archive_is_refused_and_leaves_nothing(
        tmp_path: Path, keys: tuple[bytes, bytes], members: list, why: str) -> None:
    """Signed, yet unsafe (a compromised build): refused with a clear error, nothing outside the
    release written, no staging left, the box on its release (the project checks the members
    itself: Python 3.11's extraction filters are missing before 3.11.4 and had bypasses)."""
    priv, pub = keys
    up = installed(tmp_path, priv, pub)
    bundle = _signed_tar(tmp_path, members, priv, "2.0")
    with pytest.raises(UpdateError, match=why):
        up.install(bundle, pub, restart=lambda: None, health=lambda v: True)
    assert sorted(p.name for p in up.releases.iterdir()) == ["1.0"]
    assert not (tmp_path / "escaped.txt").exists() and running(up.root) == "miroir 1.0"


def test_a_venv_with_its_interpreter_link_installs(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """A release holding a real venv (bin/python3 a link to the system's interpreter, an absolute
    path) installs; the link is written as it is (tarfile's data filter refused it: no update
    built the way the image builds its first release could ever go through)."""
    priv, pub = keys
    up = installed(tmp_path, priv, pub)
    tree = tmp_path / "venv-tree"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tree / "venv")], check=True)
    (tree / "bin").mkdir()
    (tree / "bin" / "miroir").write_text("#!/bin/sh\necho miroir 2.0\n")
    (tree / "bin" / "miroir").chmod(0o755)
    bundle = build_release(tree, "2.0", priv, tmp_path / "venv.release")
    assert up.install(bundle, pub, restart=lambda: None, health=lambda v: True) == "2.0"
    links = [p for p in (up.current / "venv" / "bin").iterdir() if p.is_symlink()]
    assert any(os.path.isabs(os.readlink(p)) for p in links), links  # the system's interpreter
    assert running(up.root) == "miroir 2.0"


def test_a_failed_first_install_keeps_the_release_it_cannot_leave(
        tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """No previous release to go back to: the failed one stays (it was deleted under current,
    leaving the box with nothing to boot), and the message says so."""
    priv, pub = keys
    up = Updater(tmp_path / "root")
    with pytest.raises(UpdateError, match="no previous release"):
        up.install(release(tmp_path, "1.0", priv), pub, restart=lambda: None, health=lambda v: False)
    assert running(up.root) == "miroir 1.0"


def test_deletions_leave_no_half_release_and_one_install_at_a_time(
        tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """A release is renamed away before it is deleted (a power cut in the middle left a folder
    still marked complete, later installed as is); recovery sweeps what a cut left. While one
    install holds the root, a recovery leaves its switch alone (it rolled back an install in
    progress), at once (the agent's start runs it during an install's restart)."""
    priv, pub = keys
    up = installed(tmp_path, priv, pub)
    leftover = up.releases / ".trash-2.0-1-1"
    (leftover / "bin").mkdir(parents=True)
    (leftover / COMPLETE_MARK).write_text("2.0\n")
    assert up.recover() == "1.0" and not leftover.exists()
    with up.locked():  # an install in its health check
        up._write_state({"pending": "1.0", "previous": None})
        started_s = time.monotonic()
        assert Updater(up.root).recover() == "1.0"
        assert time.monotonic() - started_s < 5 and up._state()["pending"] == "1.0"


def _venv_with_entry_point(tree: Path, shebang_python: str, long_form: bool = False) -> None:
    """A venv at ``tree`` (the release is the venv, as the image's) with a pip-style entry point."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tree)], check=True)
    script = tree / "bin" / "miroir"
    head = (f"#!/bin/sh\n'''exec' {shebang_python} \"$0\" \"$@\"\n' '''\n" if long_form
            else f"#!{shebang_python}\n")
    script.write_text(head + "import sys\nprint('miroir', sys.prefix)\n")
    script.chmod(0o755)


def test_a_release_venv_built_elsewhere_than_its_install_path_is_refused(
        tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """A venv's entry points name the interpreter of the path it was built at (moved, the venv's
    `bin/miroir` does not start: shown first). build_release packed such a venv without a word;
    it now refuses one not built at the box's releases/<version>, in both of pip's shebang forms,
    and packs one that is."""
    priv, pub = keys
    built = tmp_path / "built"
    _venv_with_entry_point(built, f"{built}/bin/python")
    moved = tmp_path / "moved"
    built.rename(moved)
    assert (moved / "bin" / "miroir").is_file()
    with pytest.raises(FileNotFoundError):  # exec: its interpreter is gone with the old path
        subprocess.run([str(moved / "bin" / "miroir")], capture_output=True, check=False)
    with pytest.raises(UpdateError, match=re.escape(
            "installs this release at /data/miroir-releases/releases/2.0: build the venv at that "
            "path")):
        build_release(moved, "2.0", priv, tmp_path / "moved.release")
    long_form = tmp_path / "long"
    _venv_with_entry_point(long_form, f"{long_form}/{'x' * 120}/bin/python", long_form=True)
    with pytest.raises(UpdateError, match="build the venv at that path"):
        build_release(long_form, "2.0", priv, tmp_path / "long.release")
    for i, home in enumerate(("/data/miroir-releases/releases/2.0", "/opt/miroir/releases/2.0")):
        good = tmp_path / f"good{i}"
        _venv_with_entry_point(good, f"{home}/bin/python3")
        assert verify_release(build_release(good, "2.0", priv, tmp_path / f"g{i}.release"),
                              pub).version == "2.0"


def test_a_release_signed_with_another_version_than_its_miroir_is_refused(
        tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """The box's health check waits for a heartbeat carrying the signed version, and the agent
    sends miroir.__version__: a release signed 2.0 holding miroir 1.9 was packed, then always
    rolled back on the box. build_release now refuses it, saying which version to sign."""
    priv, pub = keys
    tree = tmp_path / "tree"
    pkg = tree / "lib" / "python3.11" / "site-packages" / "miroir"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""Miroir."""\n\n__version__ = "1.9"\n')
    with pytest.raises(UpdateError, match=r"signed as 2\.0 but holds miroir 1\.9.*sign it as 1\.9"):
        build_release(tree, "2.0", priv, tmp_path / "bad.release")
    assert verify_release(build_release(tree, "1.9", priv, tmp_path / "ok.release"),
                          pub).version == "1.9"


def test_the_it_guides_release_key_commands_make_a_key_pair_updates_accept(tmp_path: Path) -> None:
    """The two openssl lines of docs/it-guide.md, run as written: a release signed with the private
    half verifies with the public half (the one the image holds), and not with another key."""
    guide = (REPO / "docs" / "it-guide.md").read_text()
    lines = re.findall(r"^openssl .*?(?=\s+#|$)", guide, flags=re.M)
    assert len(lines) == 2 and "genpkey -algorithm ed25519" in lines[0], lines
    for line in lines:
        subprocess.run(line, shell=True, cwd=tmp_path, check=True, capture_output=True)
    private = (tmp_path / "release-key.private.pem").read_bytes()
    public = (tmp_path / "release-key.pem").read_bytes()
    bundle = sign_release(b"payload", "0.2.0", private, tmp_path / "miroir-0.2.0.release")
    assert verify_release(bundle, public).version == "0.2.0"
    other = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(UpdateError):
        verify_release(bundle, other)


def _agent_prestart(root: Path, tmp: Path) -> list[list[str]]:
    """The ExecStartPre= commands of miroir-box.service, run as on the box: the image's copy of
    update.py on the system Python (standard library only), on this test's releases root."""
    alone = tmp / "usr-lib-miroir" / "update.py"
    alone.parent.mkdir(exist_ok=True)
    alone.write_bytes((REPO / "edge" / "update.py").read_bytes())
    unit = (REPO / "systemd" / "miroir-box.service").read_text()
    mapped = {"/usr/bin/python3": [sys.executable, "-I", "-S"], "/usr/lib/miroir/update.py": [str(alone)],
              "/data/miroir-releases": [str(root)]}
    return [[part for word in line.split("=", 1)[1].lstrip("+-!@:").split()
             for part in mapped.get(word, [word])]
            for line in unit.splitlines() if line.startswith("ExecStartPre=")]


def test_an_install_killed_after_the_switch_is_undone_when_the_agent_next_starts(
        tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """An install SIGKILLed between the switch and its health check (a script's `timeout -s KILL`,
    the OOM killer) left the box on the unchecked release until a reboot: a release whose agent
    does not start failed all 10 starts systemd allows (the floor down), a good one ran for weeks
    until a reboot took it back. The agent's unit now rolls it back before it starts; an install
    still alive (it holds the lock) is left to finish."""
    priv, pub = keys
    up = installed(tmp_path, priv, pub)
    pub_file = tmp_path / "release.pub"
    pub_file.write_bytes(pub)
    tree = tmp_path / "tree-bad"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "miroir").write_text("#!/bin/sh\necho miroir 2.0 does not start >&2\nexit 1\n")
    (tree / "bin" / "miroir").chmod(0o755)
    bad = build_release(tree, "2.0", priv, tmp_path / "bad-2.0.release")
    assert run_install(up.root, bad, pub_file, crash_at="after-switch") == -signal.SIGKILL
    assert up.current_version() == "2.0"
    prestart = _agent_prestart(up.root, tmp_path)
    assert prestart, "miroir-box.service runs nothing before the agent"
    for cmd in prestart:  # the agent restarts (a crash, the watchdog): no reboot
        subprocess.run(cmd, check=True, timeout=30, capture_output=True)
    assert running(up.root) == "miroir 1.0" and up._state() == {}
    assert not (up.releases / "2.0").exists()

    # During a live install's health check the agent's start leaves the new release alone.
    started: list[str] = []

    def health(version: str) -> bool:
        for cmd in prestart:
            subprocess.run(cmd, check=True, timeout=30, capture_output=True)
        started.append(running(up.root))
        return True

    assert up.install(release(tmp_path, "2.1", priv), pub, restart=lambda: None,
                      health=health) == "2.1"
    assert started == ["miroir 2.1"] and running(up.root) == "miroir 2.1"


AGENT = """#!/bin/sh
# an agent whose every acknowledged message is a heartbeat, once a second; {crash}
n=0
while :; do
  printf '{{"version": "{version}", "acked_ts": %s, "pid": %s}}' "$(date +%s.%N)" $$ > "{state}/hb"
  mv "{state}/hb" "{state}/heartbeat.json"
  n=$((n+1))
  {exit}
  sleep 1
done
"""


def _agent_release(tmp: Path, version: str, state: Path, priv: bytes,
                   crash_after_s: int | None = None) -> Path:
    """A release whose bin/miroir publishes heartbeats as the box does, and may crash."""
    tree = tmp / f"tree-{version}-{crash_after_s}"
    (tree / "bin").mkdir(parents=True)
    script = tree / "bin" / "miroir"
    crash = f"crashes after {crash_after_s} s" if crash_after_s else "runs"
    stop = f'[ $n -ge {crash_after_s} ] && exit 1' if crash_after_s else ":"
    script.write_text(AGENT.format(version=version, state=state, crash=crash, exit=stop))
    script.chmod(0o755)
    return build_release(tree, version, priv, tmp / f"miroir-{version}-{crash_after_s}.release")


def _publishing_1_0(tmp_path: Path, priv: bytes, pub: bytes) -> tuple[Updater, Path]:
    """A box on release 1.0 whose agent publishes (:func:`_agent_release`), its key in
    ``release.pub``: the updater and the agent's state folder."""
    state = tmp_path / "state"
    state.mkdir()
    (tmp_path / "release.pub").write_bytes(pub)
    up = Updater(tmp_path / "root")
    up.install(_agent_release(tmp_path, "1.0", state, priv), pub, restart=lambda: None,
               health=lambda v: True)
    return up, state


@contextlib.contextmanager
def _supervised(tmp: Path, root: Path, state: Path) -> Iterator[Path]:
    """A fake ``systemctl`` (yielded: its folder) whose restart runs current/bin/miroir in a loop
    as systemd does with Restart=on-failure; the running release started, and stopped at the end.
    """
    fake = tmp / "bin"
    fake.mkdir()
    (fake / "systemctl").write_text(
        f"#!/bin/sh\n[ -f {tmp}/sup.pid ] && kill -- -$(cat {tmp}/sup.pid)\n"
        f"setsid sh -c 'echo $$ > {tmp}/sup.pid; while :; do {root}/current/bin/miroir; "
        f"echo . >> {tmp}/restarts; sleep 0.3; done' >/dev/null 2>&1 &\nsleep 0.3\n")
    (fake / "systemctl").chmod(0o755)
    started_ts = time.time()
    subprocess.run([str(fake / "systemctl")], check=True, timeout=30)
    try:
        version = Updater(root).current_version()
        assert version and wait_published(state, started_ts, 30, version), "the agent is silent"
        yield fake
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int((tmp / "sup.pid").read_text()), signal.SIGKILL)


def _cli_update(root: Path, bundle: Path | None, pub: Path, state: Path, fake_bin: Path,
                *options: str) -> subprocess.CompletedProcess[str]:
    """The real `miroir edge update`, with `systemctl` from ``fake_bin`` (no systemd here)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "miroir", "edge", "update", *([str(bundle)] if bundle else []),
         "--root", str(root),
         "--key", str(pub), "--state-dir", str(state), *options],
        env=env, capture_output=True, text=True, timeout=60)


def test_a_release_that_crashes_after_its_first_message_is_rolled_back(
        tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """`miroir edge update` kept a release whose agent published, then crashed 5 s later and
    again after each restart (3 crashes in the next 15 s): it now watches the agent run
    --soak-s without a restart (same process, alive) before keeping the release."""
    priv, pub = keys
    up, state = _publishing_1_0(tmp_path, priv, pub)
    with _supervised(tmp_path, up.root, state) as fake:
        def update(bundle: Path) -> subprocess.CompletedProcess[str]:
            return _cli_update(up.root, bundle, tmp_path / "release.pub", state, fake,
                               "--health-timeout-s", "10", "--soak-s", "4")

        done = update(_agent_release(tmp_path, "2.0", state, priv, crash_after_s=2))
        assert done.returncode == 4 and "rolled back to 1.0" in done.stderr, done.stderr
        assert up.current_version() == "1.0" and "restarted" in done.stderr
        done = update(_agent_release(tmp_path, "2.1", state, priv))
        assert done.returncode == 0 and up.current_version() == "2.1", done.stderr


def test_an_update_says_what_it_waits_for_while_it_checks_the_release(
        tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """`miroir edge update` said nothing between its start and its end: with the default check
    (up to 90 s for the new release to publish, then 2 minutes watching it run) an SSH session
    sat silent for over 2 minutes, as a hung command does. It now says what it waits for: the
    release started, its first message (after how long) and the time it watches it run, then
    how long it has run every HEALTH_PROGRESS_S."""
    priv, pub = keys
    up, state = _publishing_1_0(tmp_path, priv, pub)
    with _supervised(tmp_path, up.root, state) as fake:
        done = _cli_update(up.root, _agent_release(tmp_path, "2.1", state, priv),
                           tmp_path / "release.pub", state, fake, "--health-timeout-s", "10",
                           "--soak-s", "2")
    assert done.returncode == 0 and up.current_version() == "2.1", done.stderr
    said = [line.split(": ", 1)[1] for line in done.stderr.splitlines()
            if " INFO edge.health: " in line]
    assert said[:1] == ["release 2.1 started: waiting up to 10 s for a message of its "
                        "acknowledged by the broker"], done.stderr
    assert len(said) == 2 and said[1].startswith("release 2.1 published after "), done.stderr
    assert said[1].endswith(" s: watching it run 2 s without a restart"), done.stderr


def test_update_exit_codes_tell_a_refusal_from_a_rollback(
        tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """Site IT scripts the update: a tampered bundle, a replayed older one (nothing changed) and a
    release rolled back after its switch all exited 2, as a mistyped option does. Now: 3 refused,
    nothing changed; 4 switched to, then rolled back; 5 not checked, the box not reaching the
    broker (its running release silent too: nothing changed)."""
    priv, pub = keys
    up, state = _publishing_1_0(tmp_path, priv, pub)
    (tmp_path / "old").mkdir()
    older = release(tmp_path / "old", "0.9", priv)
    good = release(tmp_path, "2.0", priv)  # (its bin/miroir publishes nothing)
    tampered = tmp_path / "tampered.release"
    tampered.write_bytes(good.read_bytes()[:-10] + b"0123456789")
    with _supervised(tmp_path, up.root, state) as fake:
        codes = {name: _cli_update(up.root, bundle, tmp_path / "release.pub", state, fake,
                                   "--health-timeout-s", "5", "--soak-s", "0").returncode
                 for name, bundle in [("tampered", tampered), ("older", older),
                                      ("no heartbeat", good)]}
    silent = _cli_update(up.root, good, tmp_path / "release.pub", state, fake,
                         "--health-timeout-s", "1", "--soak-s", "0")  # (no agent runs)
    codes["running release silent"] = silent.returncode
    assert codes == {"tampered": 3, "older": 3, "no heartbeat": 4, "running release silent": 5}
    assert up.current_version() == "1.0"


@pytest.mark.parametrize("older, newer", [
    ("0.2.0rc1", "0.2.0"), ("1.0rc1", "1.0"), ("0.2.0-rc.1", "0.2.0"), ("0.2.0.dev3", "0.2.0"),
    ("0.2.0a1", "0.2.0b1"), ("0.2.0rc2", "0.2.0rc10"), ("1.0rc1", "1.0.0"), ("1.9", "1.10"),
    ("1.0", "1.0.post1"), ("1.0.post1", "1.0.1"),
])
def test_versions_order_a_release_candidate_before_its_release(older: str, newer: str) -> None:
    assert version_key(older) < version_key(newer)


def test_a_box_on_a_release_candidate_takes_the_release(
        tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """A pilot box on 0.2.0rc1 refused 0.2.0 as "not newer" (the rc sorted after its release)."""
    priv, pub = keys
    up = Updater(tmp_path / "root")
    up.install(release(tmp_path, "0.2.0rc1", priv), pub, restart=lambda: None, health=lambda v: True)
    assert up.install(release(tmp_path, "0.2.0", priv), pub, restart=lambda: None,
                      health=lambda v: True) == "0.2.0"
    assert running(up.root) == "miroir 0.2.0"


@pytest.mark.parametrize("keep", ["length", "manifest", "signature", "payload"])
def test_a_bundle_cut_short_says_so(tmp_path: Path, keys: tuple[bytes, bytes], keep: str) -> None:
    """A copy cut in its manifest or signature (an interrupted scp) was reported as "bad
    signature (not signed by the release key...)", sending IT after the key."""
    import struct

    priv, pub = keys
    data = release(tmp_path, "2.0", priv).read_bytes()
    (length,) = struct.unpack(">I", data[len(MAGIC):len(MAGIC) + 4])
    cut = {"length": len(MAGIC) + 2, "manifest": len(MAGIC) + 4 + length // 2,
           "signature": len(MAGIC) + 4 + length + 20, "payload": len(data) - 100}[keep]
    short = tmp_path / "short.release"
    short.write_bytes(data[:cut])
    with pytest.raises(UpdateError, match=rf"truncated \({cut} of its( {len(data)})? bytes\)") as err:
        verify_release(short, pub)
    assert "signature" not in str(err.value)


def test_the_kept_previous_release_can_be_gone_back_to(
        tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """A release that went bad after it was kept (it passed its check, then failed in a busy
    hour): the previous release stays on disk for that, yet only its old bundle and
    --allow-downgrade took the box back to it. `edge update --previous` does, health-checked,
    and keeps both releases whatever happens (a failed go-back deleted nothing)."""
    priv, pub = keys
    state = tmp_path / "state"
    state.mkdir()
    up = installed(tmp_path, priv, pub)
    up.install(_agent_release(tmp_path, "2.0", state, priv), pub, restart=lambda: None,
               health=lambda v: True)
    (tmp_path / "release.pub").write_bytes(pub)
    # 2.0 publishes, 1.0 does not (its bin/miroir only prints): back on 2.0, exit 4, nothing
    # deleted
    with _supervised(tmp_path, up.root, state) as fake:
        failed = _cli_update(up.root, None, tmp_path / "release.pub", state, fake,
                             "--previous", "--health-timeout-s", "5", "--soak-s", "0")
    assert failed.returncode == 4 and "rolled back to 2.0" in failed.stderr, failed.stderr
    assert up.current_version() == "2.0"
    assert sorted(p.name for p in up.releases.iterdir()) == ["1.0", "2.0"]
    seen: list[str] = []
    assert up.go_back(restart=lambda: seen.append(running(up.root)), health=lambda v: True) == "1.0"
    assert seen == ["miroir 1.0"] and running(up.root) == "miroir 1.0"
    assert sorted(p.name for p in up.releases.iterdir()) == ["1.0", "2.0"]
    assert up.go_back(restart=lambda: None, health=lambda v: True) == "2.0"  # and forth again
    assert up.current_version() == "2.0"
    (tmp_path / "lone").mkdir()
    lone = Updater(tmp_path / "lone" / "root")
    lone.install(release(tmp_path / "lone", "1.0", priv), pub, restart=lambda: None,
                 health=lambda v: True)
    refused = _cli_update(lone.root, None, tmp_path / "release.pub", tmp_path, fake, "--previous")
    assert refused.returncode == 3 and "no previous release" in refused.stderr, refused.stderr


def test_a_rebuilt_release_under_the_same_version_is_never_taken_for_the_first(
        tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """A release rebuilt and signed again under the same version (a fix) was taken for the one
    already on the box: running it, "running release 2.1" and nothing changed; kept (after
    --previous), the old build was switched to. Now the kept one is replaced by the signed build,
    and a different build of the running version is refused, saying so."""
    priv, pub = keys
    ok: dict[str, Any] = {"restart": lambda: None, "health": lambda v: True}
    up = installed(tmp_path, priv, pub)
    up.install(release(tmp_path, "2.1", priv), pub, **ok)
    (tmp_path / "fixed").mkdir()
    fixed = release(tmp_path / "fixed", "2.1", priv, filler_bytes=1000)
    with pytest.raises(UpdateError, match="already running from another build"):
        up.install(fixed, pub, **ok)
    assert up.install(tmp_path / "miroir-2.1.release", pub, **ok) == "2.1"  # the same: a no-op
    assert up.go_back(**ok) == "1.0"
    assert up.install(fixed, pub, **ok) == "2.1" and (up.current / "lib.bin").is_file()


@pytest.mark.parametrize("content", [b"", b'{"pending": "2.0", "prev', b"\x00" * 64, b"[]"])
def test_an_unreadable_state_file_stops_neither_the_agent_nor_updates(
        tmp_path: Path, keys: tuple[bytes, bytes], content: bytes) -> None:
    """A damaged state.json (an SD card's zeroed block) made every recovery and every install
    end in a JSONDecodeError traceback (exit 1); run before the agent, that would keep it from
    starting. The recovery keeps the release current points to (always a complete one), the unit
    ignores a failed recovery, and the next install goes through."""
    priv, pub = keys
    up = installed(tmp_path, priv, pub)
    (up.root / "state.json").write_bytes(content)
    unit = (REPO / "systemd" / "miroir-box.service").read_text()
    prefixes = [line.split("=", 1)[1][:3] for line in unit.splitlines()
                if line.startswith("ExecStartPre=")]
    assert prefixes and all("-" in p for p in prefixes), "a failed recovery would stop the agent"
    for cmd in _agent_prestart(up.root, tmp_path):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
    assert running(up.root) == "miroir 1.0"
    assert up.install(release(tmp_path, "2.0", priv), pub, restart=lambda: None,
                      health=lambda v: True) == "2.0"


def test_a_switch_that_cannot_be_recorded_changes_nothing_and_leaves_nothing(
        tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """The disk filling up (another writer) between the unpack and the recorded switch ended
    the update with "release bundle ...: No space left on device" (the bundle blamed, exit 3)
    and left the 120 MB unpacked release on the full disk, swept by nothing. Here the state's
    write fails on a real file system (a folder where its temporary file goes)."""
    priv, pub = keys
    up = installed(tmp_path, priv, pub)
    (up.root / ".state.json.tmp").mkdir()
    with pytest.raises(UpdateError, match=r"cannot switch to release 2\.0.*nothing changed"):
        up.install(release(tmp_path, "2.0", priv), pub, restart=lambda: None,
                   health=lambda v: True)
    assert sorted(p.name for p in up.releases.iterdir()) == ["1.0"]
    assert running(up.root) == "miroir 1.0"
    (up.root / ".state.json.tmp").rmdir()
    assert up.install(tmp_path / "miroir-2.0.release", pub, restart=lambda: None,
                      health=lambda v: True) == "2.0"


def test_an_update_run_without_root_names_the_file_and_sudo(
        tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """`miroir edge update` run without sudo (the releases' lock is root's) said "release bundle
    miroir-2.0.release: Permission denied" (a readable bundle blamed; "release bundle None" for
    --previous) and --recover ended in a traceback: each names the file refused and sudo now,
    exit 3 with nothing changed. (Run as root here, the command runs without its capabilities.)"""
    priv, pub = keys
    up = installed(tmp_path, priv, pub)
    (tmp_path / "release.pub").write_bytes(pub)
    bundle = release(tmp_path, "2.0", priv)
    (up.root / ".lock").chmod(0o444)
    unprivileged = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"] \
        if os.geteuid() == 0 else []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for options in ([str(bundle)], ["--previous"], ["--recover"]):
        done = subprocess.run(
            [*unprivileged, sys.executable, "-m", "miroir", "edge", "update", *options,
             "--root", str(up.root), "--key", str(tmp_path / "release.pub"),
             "--state-dir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 3, (options, done.stderr)
        assert done.stderr.strip() == (f"miroir: error: {up.root / '.lock'}: Permission denied: "
                                       "updates need root, run it with sudo"), done.stderr
    assert running(up.root) == "miroir 1.0" and sorted(p.name for p in up.releases.iterdir()) \
        == ["1.0"]


def test_a_second_update_while_one_runs_says_it_waits(
        tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """A second `miroir edge update` started while one is in its check (a script run twice, two
    people) waited for the first's lock, minutes with a 2-minute soak, without a word: it now
    says that another update is in progress and that it waits, then installs."""
    priv, pub = keys
    up, state = _publishing_1_0(tmp_path, priv, pub)
    bundle = _agent_release(tmp_path, "2.0", state, priv)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with _supervised(tmp_path, up.root, state) as fake:
        env["PATH"] = f"{fake}:{os.environ['PATH']}"
        second = subprocess.Popen(
            [sys.executable, "-m", "miroir", "edge", "update", str(bundle), "--root",
             str(up.root), "--key", str(tmp_path / "release.pub"), "--state-dir", str(state),
             "--health-timeout-s", "10", "--soak-s", "0"],
            env=env, stderr=subprocess.PIPE, text=True)
        try:
            with up.locked():  # the first update, in its health check
                assert second.stderr is not None
                said = second.stderr.readline() if select.select(
                    [second.stderr], [], [], 30)[0] else "(nothing in 30 s)"  # (a liveness bound)
                assert "another update is in progress on this box" in said, said
                assert second.poll() is None and up.current_version() == "1.0"
            rest = second.communicate(timeout=60)[1]
        finally:
            second.kill()
            second.wait()
    assert second.returncode == 0 and up.current_version() == "2.0", rest


def test_an_update_with_a_mistyped_root_changes_nothing(
        tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """`miroir edge update --root` with a typo (a folder holding no running release) made a second
    releases folder, installed the bundle there as a first release, restarted the real agent (which
    still ran the real one), failed its check and left the stray folder: it now refuses at once,
    exit 3, naming the folder, and creates nothing; nor does --previous or --recover."""
    priv, pub = keys
    up = installed(tmp_path, priv, pub)
    (tmp_path / "release.pub").write_bytes(pub)
    bundle = release(tmp_path, "2.0", priv)
    typo = tmp_path / "roto"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{tmp_path / 'no-bin'}:{os.environ['PATH']}"}
    for options in ([str(bundle)], ["--previous"], ["--recover"]):
        done = subprocess.run(
            [sys.executable, "-m", "miroir", "edge", "update", *options, "--root", str(typo),
             "--key", str(tmp_path / "release.pub"), "--state-dir", str(tmp_path)],
            env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 3, (options, done.stderr)
        assert f"{typo} holds no running release" in done.stderr and "check --root" in done.stderr
        assert not typo.exists()
    assert running(up.root) == "miroir 1.0"


def test_unpacking_a_large_release_keeps_memory_flat(
        tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """Unpacking read the whole payload into memory (up to MAX_PAYLOAD_BYTES, 512 MB) while the
    agent runs beside it on a Pi: a 48 MB release raised the install's peak memory by 50 MB.
    The verified payload is now copied a megabyte at a time and unpacked from that copy: the peak
    grows by a few megabytes, and the copy is gone afterwards."""
    priv, pub = keys
    (tmp_path / "release.pub").write_bytes(pub)
    small = release(tmp_path / "s", "1.0", priv)
    large = release(tmp_path / "l", "2.0", priv, filler_bytes=48_000_000)
    probe = ("import re, sys; from pathlib import Path; from edge.update import Updater; "
             "up = Updater(Path(sys.argv[1])); "
             "up.install(Path(sys.argv[2]), Path(sys.argv[3]).read_bytes(), restart=lambda: None, "
             "health=lambda v: True); "  # VmHWM: this process's own peak (ru_maxrss keeps pytest's)
             "print(re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text())[1])")

    def peak_kb(root: Path, bundle: Path) -> int:
        done = subprocess.run([sys.executable, "-c", probe, str(root), str(bundle),
                               str(tmp_path / "release.pub")], env={**os.environ, "PYTHONPATH": str(REPO)},
                              capture_output=True, text=True, timeout=120, check=True)
        return int(done.stdout.strip())

    base = peak_kb(tmp_path / "root-s", small)
    grown = peak_kb(tmp_path / "root-l", large) - base
    assert grown < 16_000, f"installing a 48 MB release grew the peak memory by {grown} kB"
    assert (tmp_path / "root-l" / "releases" / "2.0" / "lib.bin").stat().st_size == 48_000_000
    assert not list((tmp_path / "root-l" / "releases").glob(".staging-*"))
