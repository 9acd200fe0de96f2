#!/bin/bash -e
# pi-gen step: install the Miroir box agent, its units and the system configuration.
# Inputs, from the pi-gen config as `export NAME=value` lines (pi-gen's build.sh sources the config
# without exporting it: a plain assignment never reaches this script): MIROIR_SRC = the Miroir
# checkout (units from its systemd/, the update recovery script from its edge/; the stage is copied
# into pi-gen, so no path relative to this script reaches the checkout), MIROIR_WHEELHOUSE = folder
# of the box's wheels (miroir + the "box" extra, built for aarch64 by the release pipeline),
# MIROIR_VERSION, MIROIR_RELEASE_KEY = Ed25519 public key, MIROIR_MODELS = folder of the built
# model files (`miroir models build`, checksummed); optional: MIROIR_NTP = the site's NTP server(s)
# (space-separated), else the box uses Debian's pool.
: "${MIROIR_SRC:?export MIROIR_SRC=/path/to/miroir (the checkout) in the pi-gen config}"
: "${MIROIR_WHEELHOUSE:?export MIROIR_WHEELHOUSE in the pi-gen config}"
: "${MIROIR_MODELS:?export MIROIR_MODELS in the pi-gen config (miroir models build, then models/files)}"
: "${MIROIR_VERSION:?export MIROIR_VERSION in the pi-gen config}"
: "${MIROIR_RELEASE_KEY:?export MIROIR_RELEASE_KEY in the pi-gen config}"
if [ ! -f "${MIROIR_SRC}/systemd/miroir-box.service" ] || [ ! -f "${MIROIR_SRC}/edge/update.py" ]; then
	echo "MIROIR_SRC=${MIROIR_SRC} is not a Miroir checkout (no systemd/miroir-box.service, edge/update.py)" >&2
	exit 1
fi
FILES="$(dirname "$0")/files"
SYSTEMD_UNITS="${MIROIR_SRC}/systemd"

# The first release lives on the data partition's seed (copied at first boot); /opt/miroir links to it.
install -d "${ROOTFS_DIR}/usr/lib/miroir/seed/releases/${MIROIR_VERSION}"
cp -r "${MIROIR_WHEELHOUSE}" "${ROOTFS_DIR}/tmp/wheels"
on_chroot <<CHROOT
set -e
python3 -m venv /usr/lib/miroir/seed/releases/${MIROIR_VERSION}
/usr/lib/miroir/seed/releases/${MIROIR_VERSION}/bin/pip install --no-index --find-links /tmp/wheels "miroir[box]"
rm -rf /tmp/wheels
CHROOT
# The model files go with the release (models/files in its site-packages), checked in the image.
SEED=/usr/lib/miroir/seed/releases/${MIROIR_VERSION}
MODELS_DIR=$(echo "${SEED}/bin/python -c 'from models.build import models_dir; print(models_dir())'" | on_chroot)
install -d "${ROOTFS_DIR}${MODELS_DIR}"
install -m 0644 "${MIROIR_MODELS}"/*.onnx "${ROOTFS_DIR}${MODELS_DIR}/"
echo "${SEED}/bin/python -c 'from models.build import model_path; print(model_path(\"silero_vad\"), model_path(\"silero_vad_tflite\"), \"verified\")'" | on_chroot
touch "${ROOTFS_DIR}${SEED}/.complete"
install -d "${ROOTFS_DIR}/opt"
ln -sfn /data/miroir-releases "${ROOTFS_DIR}/opt/miroir"
# `miroir` on the PATH for site IT (`sudo miroir edge update ...`): the running release's.
install -d "${ROOTFS_DIR}/usr/local/bin"
ln -sfn /opt/miroir/current/bin/miroir "${ROOTFS_DIR}/usr/local/bin/miroir"
install -D -m 0644 "${MIROIR_RELEASE_KEY}" "${ROOTFS_DIR}/usr/share/miroir/release-key.pem"
install -D -m 0755 "${MIROIR_SRC}/edge/update.py" "${ROOTFS_DIR}/usr/lib/miroir/update.py"

# Units (hardened agent, first boot, update recovery, data partition layout, LED and button).
# /data itself is the fstab line's (systemd-fstab-generator's data.mount, fsck'd before mounting):
# a data.mount in /etc/systemd/system would shadow it, and the partition would never be checked.
for unit in miroir-box.service miroir-firstboot.service miroir-update-recover.service \
	miroir-data-layout.service miroir-broker-allow.service miroir-panel.service; do
	install -m 0644 "${SYSTEMD_UNITS}/${unit}" "${ROOTFS_DIR}/etc/systemd/system/${unit}"
done
install -m 0755 "${FILES}/miroir-firstboot" "${ROOTFS_DIR}/usr/lib/miroir/miroir-firstboot"
# The broker's address (first boot writes it on /data) is applied at run time, see the unit.
install -m 0755 "${FILES}/miroir-broker-allow" "${ROOTFS_DIR}/usr/lib/miroir/miroir-broker-allow"
install -m 0755 "${FILES}/miroir-panel.py" "${ROOTFS_DIR}/usr/lib/miroir/miroir-panel.py"

# Audio: a stable name for the USB headset adapter.
install -m 0644 "${FILES}/90-miroir-headset.rules" "${ROOTFS_DIR}/etc/udev/rules.d/90-miroir-headset.rules"
install -m 0644 "${FILES}/asound.conf" "${ROOTFS_DIR}/etc/asound.conf"
# Hardware watchdog driven by systemd; time synchronisation.
install -D -m 0644 "${FILES}/watchdog.conf" "${ROOTFS_DIR}/etc/systemd/system.conf.d/miroir-watchdog.conf"
install -D -m 0644 "${FILES}/timesyncd.conf" "${ROOTFS_DIR}/etc/systemd/timesyncd.conf.d/miroir.conf"
# The site's NTP server, when given (MIROIR_NTP, optional), replaces Debian's pool (FallbackNTP).
if [ -n "${MIROIR_NTP:-}" ]; then
	printf 'NTP=%s\n' "${MIROIR_NTP}" >>"${ROOTFS_DIR}/etc/systemd/timesyncd.conf.d/miroir.conf"
fi
# Read-only root, writable data partition, RAM /tmp and /var/log.
install -d "${ROOTFS_DIR}/data"
# DynamicUser's StateDirectory=miroir is /var/lib/private/miroir (on /data) behind a /var/lib/miroir
# link that systemd cannot create on a read-only root: ship the link. timesyncd's state is in RAM.
ln -sfn private/miroir "${ROOTFS_DIR}/var/lib/miroir"
install -d "${ROOTFS_DIR}/var/lib/systemd/timesync"
cat "${FILES}/fstab" >> "${ROOTFS_DIR}/etc/fstab"
sed -i 's/\(\s\/\s\+ext4\s\+\)defaults/\1defaults,ro/' "${ROOTFS_DIR}/etc/fstab"

on_chroot <<CHROOT
set -e
# The agent and the front panel share the control socket through this group (see the units).
getent group miroir-control >/dev/null || groupadd --system miroir-control
systemctl enable miroir-data-layout.service miroir-firstboot.service \
	miroir-update-recover.service miroir-broker-allow.service miroir-box.service \
	miroir-panel.service systemd-timesyncd.service
systemctl disable dphys-swapfile.service apt-daily.timer apt-daily-upgrade.timer man-db.timer || true
CHROOT
