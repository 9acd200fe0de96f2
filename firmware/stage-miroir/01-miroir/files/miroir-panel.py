#!/usr/bin/python3
"""The box's front panel: status LED and private-mode button (gpiozero).

LED (GPIO 17): steady when the agent reaches the broker, slow blink when it does not (or is not
running), fast blink in private mode, short flashes while a supervisor asks to identify the box.
Button (GPIO 27, to ground): "private toggle" to the agent's control socket (edge/control.py).
The agent is the one source of truth (the dashboard can switch private mode too): the LED shows
the agent's panel.json, never a guess of its own.
"""

import contextlib
import json
import os
import socket
import time

from gpiozero import LED, Button

RUN = "/run/miroir"
CONTROL = RUN + "/control"
PANEL = RUN + "/panel.json"
STALE_S = 10.0
led = LED(17)
button = Button(27, bounce_time=0.05)


def send(text: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
        sock.sendto(text.encode(), CONTROL)


def state() -> str:
    try:
        if time.time() - os.stat(PANEL).st_mtime > STALE_S:
            return "offline"  # the agent stopped writing it: stopped or hung
        with open(PANEL) as fh:
            panel = json.load(fh)
    except (OSError, ValueError):
        return "offline"
    if panel.get("identifying"):
        return "identify"
    if panel.get("private"):
        return "private"
    return "ok" if panel.get("online") else "offline"


button.when_pressed = lambda: send("private toggle")
shown = None
while True:
    want = state()
    if want != shown:
        if want == "ok":
            led.on()
        elif want == "private":
            led.blink(on_time=0.1, off_time=0.1)
        elif want == "identify":
            led.blink(on_time=0.05, off_time=0.45)
        else:
            led.blink(on_time=1.0, off_time=1.0)
        shown = want
    time.sleep(1.0 if os.environ.get("MIROIR_PANEL_FAST") is None else 0.1)
