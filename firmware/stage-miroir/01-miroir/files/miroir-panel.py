#!/usr/bin/python3
"""The box's front panel: status LED and private-mode button (gpiozero).

LED (GPIO 17): steady when the agent publishes (heartbeat under 30 s old), slow blink when it does
not reach the broker, fast blink in private mode. Button (GPIO 27, to ground): toggles private mode
by sending "private on" / "private off" to the agent's control socket.
"""

import contextlib
import json
import os
import socket
import time

from gpiozero import LED, Button

HEARTBEAT = "/var/lib/miroir/heartbeat.json"
CONTROL = "/run/miroir/control"
led = LED(17)
button = Button(27, bounce_time=0.05)
private = False


def send(text: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
        sock.sendto(text.encode(), CONTROL)


def toggle() -> None:
    global private
    private = not private
    send("private on" if private else "private off")


def fresh() -> bool:
    try:
        with open(HEARTBEAT) as fh:
            return time.time() - float(json.load(fh)["acked_ts"]) < 30
    except (OSError, ValueError, KeyError):
        return False


button.when_pressed = toggle
state = None
while True:
    want = "private" if private else ("ok" if fresh() else "offline")
    if want != state:
        if want == "ok":
            led.on()
        elif want == "private":
            led.blink(on_time=0.1, off_time=0.1)
        else:
            led.blink(on_time=1.0, off_time=1.0)
        state = want
    time.sleep(1.0 if os.environ.get("MIROIR_PANEL_FAST") is None else 0.1)
