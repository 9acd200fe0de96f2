"""The units in systemd/: `systemd-analyze verify` clean, and `security --offline` exposure bounds.

`verify` runs against a scratch root holding the system's own units, ours, and a stub for every
executable a unit names (verify checks that ExecStart= points to an executable inside the root).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[1] / "systemd"
UNITS = sorted(p.name for p in SYSTEMD.iterdir() if p.suffix in (".service", ".mount", ".timer"))
EXPOSURE_MAX = {"miroir-box.service": 2.0, "miroir-dashboard.service": 3.0}
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def exec_paths(text: str) -> set[str]:
    """Absolute executables named by Exec*= lines."""
    paths = set()
    for m in re.finditer(r"^Exec\w+=\s*([-@:+!]*)(/\S+)", text, re.M):
        paths.add(m.group(2))
    return paths


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch root: system units, our units and drop-ins, stub executables."""
    r = tmp_path_factory.mktemp("root")
    shutil.copytree(SYSTEM_UNITS, r / "usr/lib/systemd/system", symlinks=True)
    shutil.copytree(SYSTEMD, r / "etc/systemd/system",
                    ignore=shutil.ignore_patterns("README.md"))
    texts = [p.read_text() for p in (r / "etc/systemd/system").rglob("*") if p.is_file()]
    texts.append((SYSTEM_UNITS / "mosquitto.service").read_text())
    for path in set().union(*(exec_paths(t) for t in texts)):
        stub = r / path.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    return r


def test_there_are_units() -> None:
    assert {"miroir-box.service", "miroir-dashboard.service", "miroir-data-layout.service"} <= set(UNITS)
    assert (SYSTEMD / "mosquitto.service.d" / "miroir.conf").is_file()


@pytest.mark.parametrize("unit", [*UNITS, "mosquitto.service"])
def test_verify(root: Path, unit: str) -> None:
    result = subprocess.run([ANALYZE, "verify", f"--root={root}", unit],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    if unit == "mosquitto.service":  # our drop-in is what runs
        shown = subprocess.run([ANALYZE, "cat-config", f"--root={root}",
                                "systemd/system/mosquitto.service"],
                               capture_output=True, text=True, timeout=60)
        assert "/var/lib/miroir-site/mosquitto.conf" in shown.stdout, shown.stderr


def test_verify_catches_a_broken_unit(root: Path) -> None:
    bad = root / "etc/systemd/system/miroir-broken.service"
    bad.write_text("[Service]\nExecStart=/nowhere/miroir\nWatchdogSec=banana\n")
    try:
        result = subprocess.run([ANALYZE, "verify", f"--root={root}", bad.name],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 or result.stderr.strip()
    finally:
        bad.unlink()


@pytest.mark.parametrize("unit", sorted(EXPOSURE_MAX))
def test_security_exposure(unit: str) -> None:
    result = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager",
                             str(SYSTEMD / unit)], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert m, result.stdout[-2000:] + result.stderr
    exposure = float(m.group(1))
    print(f"\n{unit}: exposure {exposure}")
    assert exposure <= EXPOSURE_MAX[unit]


def test_box_unit_has_the_promised_settings() -> None:
    text = (SYSTEMD / "miroir-box.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "DynamicUser=yes",
                 "StateDirectory=miroir", "DeviceAllow=char-alsa rw", "ProtectSystem=strict",
                 "PrivateTmp=yes", "NoNewPrivileges=yes", "RestrictAddressFamilies=",
                 "IPAddressDeny=any", "LoadCredential=box.key:", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in text, line
    allowed = [line for line in text.splitlines() if line.startswith("IPAddressAllow=")]
    # loopback only (paho's wake-up socket pair); the broker's address is per box, in a drop-in
    assert allowed == ["IPAddressAllow=127.0.0.1"], allowed


def test_the_panel_works_in_a_writable_directory_of_its_sandbox() -> None:
    """gpiozero's lgpio backend makes a pipe in its working directory (LG_WD): under
    ProtectSystem=strict the default, /, is read-only and the panel failed at start (gpiozero
    issues 1106 and 1130). Its directory is the service's private /tmp, and every GPIO chip is
    allowed (a Pi 5's header is not always gpiochip0)."""
    lines = (SYSTEMD / "miroir-panel.service").read_text().splitlines()
    assert "ProtectSystem=strict" in lines and "PrivateTmp=yes" in lines
    assert "WorkingDirectory=/tmp" in lines and "Environment=LG_WD=/tmp" in lines
    assert "DeviceAllow=char-gpiochip rw" in lines
