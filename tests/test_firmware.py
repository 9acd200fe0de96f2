"""The box image recipe (pi-gen stage), checked as far as an amd64 Debian machine allows:
shell scripts pass shellcheck, the Debian package list resolves with apt, the panel script
compiles, the stage installs every unit it enables, and the stage runs the way pi-gen runs it,
configured the way the IT guide says."""

from __future__ import annotations

import os
import py_compile
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "it-guide.md"
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


# pi-gen's build.sh (RPi-Distro/pi-gen, branch arm64), the parts that decide what a stage sees:
# `source config` with no `set -a` (pi-gen then exports its own settings by name, nothing else),
# helpers exported with `export -f`, each stage given by STAGE_LIST (realpath from the pi-gen
# folder), its prerun.sh, then each sub-stage from inside its folder: for NN in 00..99,
# NN-packages-nr and NN-packages (apt-get install in the chroot), NN-run.sh (run as ./NN-run.sh),
# NN-run-chroot.sh (in the chroot). No other file is read. Here the chroot is a stub that logs.
PIGEN_BUILD = r"""#!/bin/bash -e
BASE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -f config ]; then
	# shellcheck disable=SC1091
	source config
fi
export IMG_NAME STAGE_LIST BASE_DIR
export WORK_DIR="${BASE_DIR}/work"
on_chroot() {
	local script
	script=$(cat)
	printf '%s\n' "$script" >>"${WORK_DIR}/chroot.log"
	case $script in *models_dir*) echo /usr/lib/python3/dist-packages/models/files ;; esac
}
copy_previous() { echo "copy_previous: the test made the root" >&2; }
export -f on_chroot copy_previous
for STAGE_DIR in $STAGE_LIST; do
	case $STAGE_DIR in stage0 | stage1 | stage2) continue ;; esac # pi-gen's own: not here
	STAGE_DIR=$(realpath "${STAGE_DIR}")
	export STAGE_DIR
	export ROOTFS_DIR="${WORK_DIR}/$(basename "${STAGE_DIR}")/rootfs"
	pushd "${STAGE_DIR}" >/dev/null
	if [ -x prerun.sh ]; then ./prerun.sh; fi
	for SUB_STAGE_DIR in "${STAGE_DIR}"/*; do
		[ -d "${SUB_STAGE_DIR}" ] || continue
		pushd "${SUB_STAGE_DIR}" >/dev/null
		for i in {00..99}; do
			for list in "${i}-packages-nr" "${i}-packages"; do
				if [ -f "$list" ]; then sed 's/#.*//' "$list" | xargs -r -n1 >>"${WORK_DIR}/packages.log"; fi
			done
			if [ -x "${i}-run.sh" ]; then ./"${i}-run.sh"; fi
			if [ -f "${i}-run-chroot.sh" ]; then on_chroot <"${i}-run-chroot.sh"; fi
		done
		popd >/dev/null
	done
	popd >/dev/null
done
echo "pi-gen: stages done"
"""


def guide_build_block() -> str:
    """The shell block of the IT guide's section 3 (Build and flash the box image)."""
    section = GUIDE.read_text().split("## 3. ", 1)[1].split("\n## ", 1)[0]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def pigen_build(tmp: Path, edit_config=lambda text: text) -> tuple[subprocess.CompletedProcess[str],
                                                                   Path]:
    """Do what the IT guide's section 3 says in a pi-gen folder (copy the stage, write its config,
    run build.sh) with pi-gen's mechanics above; returns the run and the stage's root."""
    block = guide_build_block()
    copy = re.search(r"^cp -r (\S+)/firmware/stage-miroir (\S+)$", block, re.M)
    assert copy, "the guide no longer copies the stage into pi-gen"
    config = re.search(r"^cat > config <<'CFG'\n(.*?)^CFG$", block, re.M | re.S)
    assert config, "the guide no longer writes pi-gen's config"
    inputs = tmp / "inputs"
    (inputs / "wheelhouse").mkdir(parents=True)
    (inputs / "wheelhouse" / "miroir-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    (inputs / "models").mkdir()
    (inputs / "models" / "silero_vad.onnx").write_bytes(b"onnx")
    (inputs / "release-key.pem").write_text("key\n")
    values = {"SRC": str(REPO), "WHEELHOUSE": str(inputs / "wheelhouse"),
              "MODELS": str(inputs / "models"), "RELEASE_KEY": str(inputs / "release-key.pem")}
    text = re.sub(r"^((?:export\s+)?MIROIR_(\w+)=)(\S+)",
                  lambda m: m.group(1) + values.get(m.group(2), m.group(3)), config.group(1),
                  flags=re.M)
    pigen = tmp / "pi-gen"
    pigen.mkdir()
    (pigen / "config").write_text(edit_config(text))
    (pigen / "build.sh").write_text(PIGEN_BUILD)
    (pigen / "build.sh").chmod(0o755)
    shutil.copytree(REPO / "firmware" / "stage-miroir", pigen / copy.group(2), symlinks=True)
    root = pigen / "work" / "stage-miroir" / "rootfs"
    for folder in ("etc/systemd/system", "etc/udev/rules.d", "var/lib", "tmp", "usr/lib"):
        (root / folder).mkdir(parents=True)
    (root / "etc/fstab").write_text("PARTUUID=abcd-02  /  ext4  defaults,noatime  0  1\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp)}  # sudo's clean env
    run = subprocess.run(["./build.sh"], cwd=pigen, env=env, capture_output=True, text=True,
                         timeout=120)
    return run, root


def test_the_stage_runs_as_pi_gen_runs_it_configured_as_the_guide_says(tmp_path: Path) -> None:
    """The guide's config reaches the stage's script through pi-gen's `source config` (plain
    assignments did not: "set MIROIR_WHEELHOUSE in the pi-gen config"), the copied stage finds the
    checkout's units and update script (paths relative to the script led outside the checkout),
    and every package the stage lists is one pi-gen installs (`00-packages-rpi` was never read)."""
    run, root = pigen_build(tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    for unit in ("miroir-box.service", "miroir-firstboot.service", "miroir-update-recover.service"):
        assert (root / "etc/systemd/system" / unit).read_text() == (REPO / "systemd" / unit).read_text()
    assert (root / "usr/lib/miroir/update.py").read_text() == (REPO / "edge/update.py").read_text()
    assert (root / "usr/share/miroir/release-key.pem").is_file()
    assert "defaults,ro" in (root / "etc/fstab").read_text()
    installed = set((tmp_path / "pi-gen/work/packages.log").read_text().split())
    listed = {p for f in (STAGE / "00-packages").iterdir() for p in packages(f)}
    assert "libraspberrypi-bin" in listed and listed <= installed, listed - installed


def test_a_config_without_exports_stops_the_build_saying_so(tmp_path: Path) -> None:
    """Written as plain assignments, the settings never reach the stage's script: the build stops
    at once and the message says to export them (rather than building a half image)."""
    run, root = pigen_build(tmp_path, lambda text: text.replace("export ", ""))
    assert run.returncode != 0
    assert "export MIROIR_SRC" in run.stderr, run.stderr
    assert not (root / "etc/systemd/system/miroir-box.service").exists()


def test_no_unit_of_the_image_shadows_a_mount_of_its_fstab(tmp_path: Path) -> None:
    """/data comes from the fstab line, through systemd-fstab-generator, whose unit makes the
    partition fsck'd before it is mounted. A data.mount installed in /etc/systemd/system shadowed
    that unit (generator output ranks below /etc): the partition, written every 5 s on boxes that
    lose power, was never checked."""
    run, root = pigen_build(tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    fstab = root / "etc/fstab"
    where = [ln.split()[1] for ln in fstab.read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert "/data" in where
    for path in where:
        unit = subprocess.run(["systemd-escape", "--path", "--suffix=mount", path],
                              capture_output=True, text=True, check=True).stdout.strip()
        assert not (root / "etc/systemd/system" / unit).exists(), f"{unit} shadows fstab's {path}"
        assert not (REPO / "systemd" / unit).exists(), unit
    out = tmp_path / "gen"
    out.mkdir()
    env = {**os.environ, "SYSTEMD_FSTAB": str(fstab), "SYSTEMD_PROC_CMDLINE": "",
           "SYSTEMD_LOG_LEVEL": "err"}
    gen = subprocess.run(["/usr/lib/systemd/system-generators/systemd-fstab-generator",
                          str(out), str(out), str(out)], env=env, capture_output=True, text=True,
                         timeout=60)
    assert gen.returncode == 0, gen.stderr
    data = (out / "data.mount").read_text()
    assert "Requires=systemd-fsck@dev-disk-by\\x2dlabel-MIROIR\\x2dDATA.service" in data, data
    assert "Options=defaults,noatime,nodev,nosuid,commit=5" in data, data


def test_the_site_ntp_server_is_the_first_choice_only_when_the_guide_sets_it(
        tmp_path: Path) -> None:
    """timesyncd.conf said the site server was the first choice but set no NTP= at all. Built as
    the guide shows, the box uses Debian's pool (FallbackNTP, no NTP=); with the guide's optional
    MIROIR_NTP line enabled, its server is the image's NTP=."""
    import configparser

    def time_section(root: Path) -> configparser.SectionProxy:
        conf = configparser.ConfigParser(interpolation=None)
        conf.read(root / "etc/systemd/timesyncd.conf.d/miroir.conf")
        return conf["Time"]

    run, root = pigen_build(tmp_path / "default")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "NTP" not in time_section(root) and "pool.ntp.org" in time_section(root)["FallbackNTP"]
    example = re.search(r"^# export MIROIR_NTP=(\S+)", guide_build_block(), re.M)
    assert example, "the guide no longer shows MIROIR_NTP"
    run, root = pigen_build(tmp_path / "site",
                            lambda text: text.replace("# export MIROIR_NTP=", "export MIROIR_NTP="))
    assert run.returncode == 0, run.stderr[-2000:]
    assert time_section(root)["NTP"] == example.group(1)
