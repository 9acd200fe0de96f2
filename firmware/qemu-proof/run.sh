#!/bin/bash
# Proof that the hardened box unit runs, not only scores (issue 7): boot a minimal Debian bookworm
# (debootstrap, then qemu system emulation) holding the box exactly as the image recipe installs
# it (firmware/stage-miroir/01-miroir/00-run.sh, run here against the debootstrap root), first-boot
# a real provisioning bundle, and check that miroir-box.service reaches active, publishes to a real
# Mosquitto on this host, and cannot connect anywhere else.
#
# Usage, as root, from anywhere:  firmware/qemu-proof/run.sh
# Environment: MIROIR_QEMU_DIR (work dir, default /var/tmp/miroir-qemu-proof; the debootstrap root
# is cached there), MIROIR_QEMU_ACCEL (auto, kvm or tcg; default auto), MIROIR_PYTHON (a Python
# with the repo's provision extra, default the repo's .venv), MIROIR_DEBIAN_MIRROR,
# MIROIR_QEMU_RECIPE (the image's install step to run, default the repo's; for trying a fix).
# Not run in CI: it needs root, ~2 GB and several minutes (much longer without KVM).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
WORK=${MIROIR_QEMU_DIR:-/var/tmp/miroir-qemu-proof}
PY=${MIROIR_PYTHON:-$REPO/.venv/bin/python}
MIRROR=${MIROIR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ACCEL=${MIROIR_QEMU_ACCEL:-auto}
SITE=qemu-proof
BOX=box-qemu
# The image's Debian packages (firmware/stage-miroir/00-packages) plus what a bare debootstrap
# root lacks to boot: systemd as init, udev (the data partition is found by label), a kernel.
PACKAGES=systemd-sysv,udev,kmod,linux-image-amd64,iproute2
PACKAGES+=,$(grep -v '^\s*#' "$REPO/firmware/stage-miroir/00-packages/00-packages" | xargs | tr ' ' ',')
AMI=$REPO/../shared/data/ami-headsets
RECIPE=${MIROIR_QEMU_RECIPE:-$REPO/firmware/stage-miroir/01-miroir/00-run.sh}

say() { printf '\n== %s\n' "$*"; }
die() {
	echo "qemu-proof: $*" >&2
	exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot, loop-free ext4 images)"
[ -x "$PY" ] || die "no Python at $PY (set MIROIR_PYTHON)"
mkdir -p "$WORK"

say "1. host tools"
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
if [ "${#need[@]}" -gt 0 ]; then
	apt-get install -y "${need[@]}"
fi

say "2. Debian bookworm root (debootstrap, cached in $WORK/base)"
if [ ! -e "$WORK/base/.miroir-complete" ]; then
	rm -rf "$WORK/base.tmp" "$WORK/base"
	debootstrap --variant=minbase --include="$PACKAGES" bookworm "$WORK/base.tmp" "$MIRROR"
	touch "$WORK/base.tmp/.miroir-complete"
	mv "$WORK/base.tmp" "$WORK/base"
else
	echo "reusing $WORK/base"
fi

say "2b. accelerator"
BASE_KERNEL=$(find "$WORK/base/boot" -maxdepth 1 -name 'vmlinuz-*' | sort | tail -n 1)
if [ "$ACCEL" = auto ]; then
	# KVM only if a kernel really boots with it (nested KVM can hang right after decompression):
	# without an initrd or root it must reach its panic, and -no-reboot then ends qemu.
	ACCEL=tcg
	if [ -w /dev/kvm ] && timeout 30 qemu-system-x86_64 -accel kvm -cpu host -m 256 -no-reboot \
		-kernel "$BASE_KERNEL" -append "console=ttyS0 panic=-1" -display none -monitor none \
		-serial "file:$WORK/kvm-probe.log" >/dev/null 2>&1 &&
		grep -q 'Kernel panic' "$WORK/kvm-probe.log"; then
		ACCEL=kvm
	fi
fi
case $ACCEL in
kvm) CPU=host ;;
tcg) CPU=max ;; # numpy's wheels need x86-64-v2 (SSE4.2, POPCNT): qemu64 lacks them
*) die "MIROIR_QEMU_ACCEL must be auto, kvm or tcg" ;;
esac
echo "accelerator $ACCEL"

say "3. host side: model, wheelhouse, release key, site and the box's bundle"
MODEL=$("$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); from models.build import model_path
print(model_path("silero_vad"))' "$REPO" 2>/dev/null) || {
	(cd "$REPO" && "$PY" -m miroir models build)
	MODEL=$("$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); from models.build import model_path
print(model_path("silero_vad"))' "$REPO")
}
echo "model $MODEL (SHA-256 verified against models/manifest.json)"
rm -rf "$WORK/src" "$WORK/wheelhouse" "$WORK/site" "$WORK/keys"
mkdir -p "$WORK/src" "$WORK/keys"
# The working tree without what git ignores (.venv, build/, models/files, caches).
tar -C "$REPO" --exclude-vcs --exclude=./.venv --exclude=./.cache --exclude=./var --exclude=./build \
	--exclude='*.egg-info' --exclude=__pycache__ --exclude='.*_cache' --exclude=./models/files \
	-cf - . | tar -C "$WORK/src" -xf -
"$PY" -m pip wheel --quiet --wheel-dir "$WORK/wheelhouse" "$WORK/src[box]"
WHEEL=$(find "$WORK/wheelhouse" -maxdepth 1 -name 'miroir-*.whl' -printf '%f\n' | head -n 1)
VERSION=$(echo "$WHEEL" | cut -d- -f2)
echo "wheelhouse: $(find "$WORK/wheelhouse" -name '*.whl' | wc -l) wheels, miroir $VERSION"
openssl genpkey -algorithm ed25519 -out "$WORK/keys/release.key" 2>/dev/null
openssl pkey -in "$WORK/keys/release.key" -pubout -out "$WORK/keys/release.pem"
PORT=$("$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); from provisioning.broker import free_port
print(free_port())' "$REPO")
(cd "$REPO" && "$PY" -m miroir provision site-init --site-dir "$WORK/site" --site "$SITE" \
	--broker-host 10.0.2.2 --port "$PORT" --bind 127.0.0.1 >/dev/null)
(cd "$REPO" && "$PY" -m miroir provision enroll "$BOX" --seat Q-01 --site-dir "$WORK/site" >/dev/null)
BUNDLE=$WORK/site/bundles/$BOX.json
[ -f "$BUNDLE" ] || die "enroll wrote no bundle at $BUNDLE"
echo "site $SITE, broker 10.0.2.2:$PORT (host 127.0.0.1:$PORT), bundle $BUNDLE"

say "4. the box's root: the image recipe's install step, then the proof's additions"
ROOT=$WORK/rootfs
mounted=()
cleanup() {
	local i
	for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
		umount -l "${mounted[i]}" 2>/dev/null || true
	done
	mounted=()
}
trap cleanup EXIT
rm -rf "$ROOT"
cp -a "$WORK/base" "$ROOT"
# pi-gen's root and boot lines; the recipe turns the root's "defaults" into "defaults,ro" (read-only
# root). The boot partition (FAT on a Pi, ext4 here) holds the first-boot bundle.
printf '%s\n' "/dev/vda / ext4 defaults 0 1" "LABEL=MIROIR-BOOT /boot/firmware ext4 defaults 0 2" \
	>"$ROOT/etc/fstab"
install -d "$ROOT/boot/firmware"
for fs in proc sys dev dev/pts; do
	case $fs in
	proc) mount -t proc proc "$ROOT/proc" ;;
	sys) mount -t sysfs sys "$ROOT/sys" ;;
	*) mount --bind "/$fs" "$ROOT/$fs" ;;
	esac
	mounted+=("$ROOT/$fs")
done
# pi-gen's on_chroot: run a script (stdin) in the image's root, with a clean environment.
on_chroot() { chroot "$ROOTFS_DIR" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root /bin/bash -e "$@"; }
export -f on_chroot
ROOTFS_DIR=$ROOT MIROIR_SRC=$REPO MIROIR_WHEELHOUSE=$WORK/wheelhouse MIROIR_VERSION=$VERSION MIROIR_MODELS=$(dirname "$MODEL") \
	MIROIR_RELEASE_KEY=$WORK/keys/release.pem \
	bash -e "$RECIPE"
grep -q 'defaults,ro' "$ROOT/etc/fstab" || die "the recipe did not make the root read-only"

# Proof-only additions (never in the image):
# - two recorded headsets to replay (the guest has no sound card) and the replay drop-in;
install -D -m 0644 "$AMI/source0.wav" "$ROOT/usr/share/miroir-qemu-proof/near.wav"
install -D -m 0644 "$AMI/source1.wav" "$ROOT/usr/share/miroir-qemu-proof/far.wav"
install -D -m 0644 "$HERE/replay.conf" "$ROOT/etc/systemd/system/miroir-box.service.d/zz-qemu-proof-replay.conf"
# - the probe unit: the installed box unit's [Service] section (sandbox, credentials, IPAddressDeny)
#   with its own ExecStart (proof.sh opens it to the broker with the image's miroir-broker-allow);
install -D -m 0755 "$HERE/egress_probe.py" "$ROOT/usr/lib/miroir-qemu-proof/egress_probe.py"
install -D -m 0755 "$HERE/proof.sh" "$ROOT/usr/lib/miroir-qemu-proof/proof.sh"
PROBE=$ROOT/etc/systemd/system/miroir-egress-probe.service
{
	echo "# Generated by firmware/qemu-proof/run.sh from miroir-box.service: same [Service] sandbox."
	echo "[Unit]"
	echo "Description=Miroir qemu proof: connection probe inside the box agent's sandbox"
	echo "[Service]"
	echo "Type=oneshot"
	echo "ExecStart=/usr/bin/python3 /usr/lib/miroir-qemu-proof/egress_probe.py probe --label sandbox --settings /data/miroir/box.toml tcp:10.0.2.15:9999 tcp:127.0.0.1:9998 tcp:[::1]:9997 udp:10.0.2.15:9996"
	# Every [Service] line except how the agent is started and its state directory (which a
	# second DynamicUser unit would take over).
	sed -n '/^\[Service\]/,/^\[/p' "$ROOT/etc/systemd/system/miroir-box.service" | grep -v '^\[' |
		grep -Ev '^(Type|NotifyAccess|ExecStart|WatchdogSec|Restart|RestartSec|TimeoutStartSec|StateDirectory|StateDirectoryMode|RuntimeDirectory|RuntimeDirectoryMode)='
} >"$PROBE"
grep -q '^IPAddressDeny=any$' "$PROBE" || die "probe unit lacks the box's IPAddressDeny"
install -m 0644 "$HERE/miroir-proof.service" "$ROOT/etc/systemd/system/miroir-proof.service"
# - two button presses: a throw-away user in the miroir-control group (as miroir-panel.service
#   runs) and one outside it, which the control socket's mode must refuse;
install -D -m 0755 "$HERE/press.py" "$ROOT/usr/lib/miroir-qemu-proof/press.py"
for who in member stranger; do
	{
		echo "[Unit]"
		echo "Description=Miroir qemu proof: the panel's button pressed by a $who of miroir-control"
		echo "[Service]"
		echo "Type=oneshot"
		echo "DynamicUser=yes"
		[ "$who" = member ] && echo "SupplementaryGroups=miroir-control"
		echo "ExecStart=/usr/bin/python3 /usr/lib/miroir-qemu-proof/press.py"
	} >"$ROOT/etc/systemd/system/miroir-press-$who.service"
done
# - the guest's network (10.0.2.15/24, no gateway, no DNS), a host name.
install -D -m 0644 "$HERE/10-qemu-proof.network" "$ROOT/etc/systemd/network/10-qemu-proof.network"
: >"$ROOT/etc/resolv.conf"
echo "$BOX" >"$ROOT/etc/hostname"
# pi-gen writes /etc/hosts, debootstrap does not (the unit bind-mounts its pinned file over it).
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$BOX" >"$ROOT/etc/hosts"
rm -f "$ROOT/etc/machine-id"
chroot "$ROOT" systemd-machine-id-setup >/dev/null
chroot "$ROOT" systemctl enable miroir-proof.service systemd-networkd.service
# No GPIO in qemu: the front panel (LED, button) cannot run; it is not what is proven here.
chroot "$ROOT" systemctl disable miroir-panel.service
chroot "$ROOT" systemctl mask systemd-firstboot.service
cleanup

say "5. disk images"
KERNEL=$(find "$ROOT/boot" -maxdepth 1 -name 'vmlinuz-*' | sort | tail -n 1)
INITRD=$(find "$ROOT/boot" -maxdepth 1 -name 'initrd.img-*' | sort | tail -n 1)
if [ -z "$KERNEL" ] || [ -z "$INITRD" ]; then
	die "no kernel or initrd in $ROOT/boot"
fi
cp "$KERNEL" "$WORK/vmlinuz"
cp "$INITRD" "$WORK/initrd.img"
SIZE_MB=$(($(du -sm "$ROOT" | cut -f1) + 400))
rm -rf "$WORK/root.img" "$WORK/data.img" "$WORK/boot.img" "$WORK/bootfs"
mkfs.ext4 -q -F -L miroir-root -d "$ROOT" "$WORK/root.img" "${SIZE_MB}M"
# The boot partition with the box's bundle, as site IT copies it (docs/it-guide.md).
install -D -m 0600 "$BUNDLE" "$WORK/bootfs/miroir-bundle.json"
install -m 0644 "$BUNDLE.sha256" "$WORK/bootfs/miroir-bundle.json.sha256"
mkfs.ext4 -q -F -L MIROIR-BOOT -d "$WORK/bootfs" "$WORK/boot.img" 16M
# The data partition as IT creates it: empty, labelled MIROIR-DATA (docs/it-guide.md).
mkfs.ext4 -q -F -L MIROIR-DATA "$WORK/data.img" 256M
echo "root.img ${SIZE_MB} MB, data.img 256 MB, boot.img 16 MB, kernel $(basename "$KERNEL")"

say "6. boot and check"
cd "$REPO"
"$PY" "$HERE/host.py" --site-dir "$WORK/site" --box "$BOX" --console "$WORK/console.log" \
	--result "$WORK/result.json" --accel "$ACCEL" -- \
	qemu-system-x86_64 -accel "$ACCEL" -cpu "$CPU" -m 1024 -smp 1 -no-reboot \
	-kernel "$WORK/vmlinuz" -initrd "$WORK/initrd.img" \
	-append "root=/dev/vda ro console=ttyS0 net.ifnames=0 panic=10 systemd.show_status=1" \
	-drive "file=$WORK/root.img,format=raw,if=virtio" \
	-drive "file=$WORK/data.img,format=raw,if=virtio" \
	-drive "file=$WORK/boot.img,format=raw,if=virtio" \
	-netdev user,id=n0 -device virtio-net,netdev=n0 \
	-display none -monitor none -serial "file:$WORK/console.log"
