#!/usr/bin/python3
"""Qemu proof: press the front panel's button, as miroir-panel.py does ("private toggle" to the
agent's control socket); print "sent" or the error's name (for the proof's report)."""

import socket

with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
    try:
        sock.sendto(b"private toggle", "/run/miroir/control")
        print("MIROIR-PROOF-PRESS sent")
    except OSError as exc:
        print(f"MIROIR-PROOF-PRESS {type(exc).__name__}")
