#!/bin/sh
# Guest side of the qemu proof (miroir-proof.service, root, outside any sandbox): wait for the
# hardened agent to be active, probe the network from outside and from inside the agent's sandbox,
# let the agent publish for a while, report everything on the serial console, power off.
# Every line for the host starts with MIROIR-PROOF (firmware/qemu-proof/host.py parses them).
set -u
set -f # no globbing: "[::1]:9997" is an address, not a pattern
DIR=/usr/lib/miroir-qemu-proof
SETTINGS=/data/miroir/box.toml
ACTIVE_TIMEOUT_S=${MIROIR_PROOF_ACTIVE_TIMEOUT_S:-600}
HOLD_S=${MIROIR_PROOF_HOLD_S:-30}
# Listeners inside the guest: its own user-net address, IPv4 and IPv6 loopback.
LISTEN="10.0.2.15:9999 127.0.0.1:9998 [::1]:9997"
TARGETS="tcp:10.0.2.15:9999 tcp:127.0.0.1:9998 tcp:[::1]:9997 udp:10.0.2.15:9996"

say() { echo "MIROIR-PROOF $*"; }
show() { systemctl show --value -p "$2" "$1"; }
finish() {
	for unit in systemd-timesyncd.service miroir-firstboot.service miroir-update-recover.service miroir-box.service; do
		say "unit $unit state=$(show "$unit" ActiveState)/$(show "$unit" SubState) result=$(show "$unit" Result) load=$(show "$unit" LoadState)"
		journalctl -b -u "$unit" -o short-monotonic --no-pager | tail -n 40 | sed 's/^/MIROIR-PROOF journal /'
	done
	say "done"
	systemctl poweroff
	exit 0
}

say "start uptime_s=$(cut -d' ' -f1 /proc/uptime)"
say "firstboot $(journalctl -b -u miroir-firstboot.service -o cat --no-pager | grep 'miroir-firstboot:' | tail -n 1)"
# shellcheck disable=SC2086  # word splitting of the address list is wanted
python3 "$DIR/egress_probe.py" listen $LISTEN &

waited=0
until systemctl is-active --quiet miroir-box.service; do
	# "failed" is final: with Restart=on-failure a restart shows as activating/auto-restart.
	if [ "$waited" -ge "$ACTIVE_TIMEOUT_S" ] || [ "$(show miroir-box.service ActiveState)" = failed ]; then
		say "box-active no state=$(show miroir-box.service ActiveState)/$(show miroir-box.service SubState) result=$(show miroir-box.service Result)"
		finish
	fi
	if [ $((waited % 30)) -eq 0 ]; then
		pid=$(show miroir-box.service MainPID)
		# utime+stime of the agent (clock ticks) and where it sleeps: slow or stuck?
		cpu=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null)
		say "waiting box=$(show miroir-box.service ActiveState)/$(show miroir-box.service SubState)" \
			"uptime_s=$(cut -d' ' -f1 /proc/uptime) pid=$pid cpu_ticks=${cpu:-?}" \
			"wchan=$(cat "/proc/$pid/wchan" 2>/dev/null) threads=$(awk '/^Threads/ {print $2}' "/proc/$pid/status" 2>/dev/null)"
	fi
	sleep 1
	waited=$((waited + 1))
done
# Monotonic timestamps are microseconds since the kernel started.
say "box-active yes uptime_s=$(cut -d' ' -f1 /proc/uptime)" \
	"exec_start_us=$(show miroir-box.service ExecMainStartTimestampMonotonic)" \
	"active_us=$(show miroir-box.service ActiveEnterTimestampMonotonic)" \
	"restarts=$(show miroir-box.service NRestarts)"
# The probe unit is opened to the broker the way the image opens the agent's
# (miroir-broker-allow.service), then both sandboxes are reported.
/usr/lib/miroir/miroir-broker-allow miroir-egress-probe.service | sed 's/^/MIROIR-PROOF allow /'
for unit in miroir-box.service miroir-egress-probe.service; do
	say "sandbox unit=$unit allow=$(show "$unit" IPAddressAllow | tr ' ' ',') deny=$(show "$unit" IPAddressDeny | tr ' ' ',')"
done
say "dropins $(show miroir-box.service DropInPaths) start-timeout=$(show miroir-box.service TimeoutStartUSec)"
say "main-user $(stat -c "%U uid=%u" "/proc/$(show miroir-box.service MainPID)")"

# Control: the same targets from outside the sandbox must all be reachable (the listeners run).
# shellcheck disable=SC2086  # word splitting of the target list is wanted
python3 "$DIR/egress_probe.py" probe --label control --settings "$SETTINGS" $TARGETS
# The same targets from the box unit's own sandbox (a copy of its [Service] section).
systemctl start miroir-egress-probe.service
say "egress-unit result=$(show miroir-egress-probe.service Result)"
journalctl -b -u miroir-egress-probe.service -o cat --no-pager | grep '^MIROIR-PROOF probe '

# The front panel's button: "private toggle" on the agent's control socket, sent by a throw-away
# user in the miroir-control group (as miroir-panel.service runs), and by one outside it (refused).
panel() { python3 -c 'import json; print(json.dumps(json.load(open("/run/miroir/panel.json"))).replace(" ", ""))' 2>&1 | tail -n 1; }
press() {
	systemctl start "miroir-press-$1.service"
	journalctl -b -u "miroir-press-$1.service" -o cat --no-pager | sed -n 's/^MIROIR-PROOF-PRESS //p' | tail -n 1
}
before=$(panel)
stranger=$(press stranger)
sleep 3
unchanged=$(panel)
pressed=$(press member)
sleep 3
private=$(panel)
press member >/dev/null
sleep 3
say "panel before=$before stranger=$stranger after_stranger=$unchanged member=$pressed after_member=$private after_second=$(panel)"

sleep "$HOLD_S"
say "box-after-hold state=$(show miroir-box.service ActiveState)/$(show miroir-box.service SubState)" \
	"restarts=$(show miroir-box.service NRestarts) uptime_s=$(cut -d' ' -f1 /proc/uptime)"
finish
