"""The box image recipe (pi-gen stage), checked as far as an amd64 Debian machine allows:
shell scripts pass shellcheck, the Debian package list resolves with apt, the panel script
compiles, and the stage installs every unit it enables."""

from __future__ import annotations

import py_compile
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE = REPO / "firmware" / "stage-miroir"
FILES = STAGE / "01-miroir" / "files"
PROOF = REPO / "firmware" / "qemu-proof"
SCRIPTS = [STAGE / "prerun.sh", STAGE / "01-miroir" / "00-run.sh", FILES / "miroir-firstboot",
           FILES / "miroir-broker-allow", PROOF / "run.sh", PROOF / "proof.sh"]


def packages(path: Path) -> list[str]:
    return [ln.split("#")[0].strip() for ln in path.read_text().splitlines()
            if ln.split("#")[0].strip()]


def test_scripts_pass_shellcheck() -> None:
    for script in SCRIPTS:
        assert script.stat().st_mode & 0o111, f"{script} is not executable"
    result = subprocess.run(["shellcheck", "-x", *map(str, SCRIPTS)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_list_resolves_with_apt() -> None:
    pkgs = packages(STAGE / "00-packages" / "00-packages")
    assert "python3-gpiozero" in pkgs and "systemd-timesyncd" in pkgs
    result = subprocess.run(["apt-get", "install", "-s", "-q", "--no-install-recommends", *pkgs],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "E:" not in result.stderr


def test_panel_script_compiles(tmp_path: Path) -> None:
    py_compile.compile(str(FILES / "miroir-panel.py"), cfile=str(tmp_path / "p.pyc"), doraise=True)


def test_stage_installs_the_units_it_enables() -> None:
    run = (STAGE / "01-miroir" / "00-run.sh").read_text()
    installed = set(re.findall(r"([\w.-]+\.(?:service|mount))", run.split("systemctl enable")[0]))
    enabled = set(re.findall(r"([\w.-]+\.(?:service|mount))", run.split("systemctl enable")[1]
                             .split("CHROOT")[0]))
    ours = {u for u in enabled if u.startswith(("miroir-", "data."))}
    assert ours <= installed, ours - installed
    for unit in ours:
        assert (REPO / "systemd" / unit).is_file(), unit


def test_read_only_root_and_data_partition() -> None:
    fstab = (FILES / "fstab").read_text()
    assert "LABEL=MIROIR-DATA  /data" in fstab and "tmpfs              /tmp" in fstab
    assert "defaults,ro" in (STAGE / "01-miroir" / "00-run.sh").read_text()
    assert "RuntimeWatchdogSec=" in (FILES / "watchdog.conf").read_text()
    assert 'ATTR{id}="miroirheadset"' in (FILES / "90-miroir-headset.rules").read_text()
