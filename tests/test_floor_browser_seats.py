"""What a floor seat says about its box, in Debian's chromium, fed through the real site broker:
the fatigue meter, freshness, a lost headset, the "in call" counter and private mode."""

from __future__ import annotations

import time
from typing import Any

import pytest

from dashboard import db as store
from dashboard import i18n, schema
from dashboard.app import DashboardServer
from miroir import wire
from tests._fixtures_broker import wait_until
from tests._fixtures_dashboard import browser_login

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

LIVE_WAIT_MS = 2000  # a seat changes within 2 s of the box's publish
STALE_S = 10  # floor.js: an online box silent this long is shown as stale


class Box:
    """One box publishing its status, metrics and events to the site broker."""

    def __init__(self, site: Any, peer: Any, box: str, clock_offset_s: float = 0.0) -> None:
        self.site, self.box, self.offset = site.site, box, clock_offset_s
        self.pub = peer(site.box(box), box)
        self.seq = 0

    def now(self) -> float:
        """The box's own clock (``clock_offset_s`` off the real time)."""
        return time.time() + self.offset

    def status(self, state: str = "online", **extra: Any) -> None:
        msg = wire.status_message(self.site, self.box, state, self.now(), **extra)
        self.pub.publish(wire.topic(self.site, self.box, "status"), wire.encode("status", msg),
                         retain=True)

    def metrics(self, talk_state: str, **extra: Any) -> None:
        self.seq += 1
        body = {"v": wire.SCHEMA_VERSION, "site": self.site, "box": self.box, "ts": self.now(),
                "seq": self.seq, "t_start": float(self.seq), "window_s": 1.0,
                "near_speech_ratio": 0.7 if talk_state in ("agent", "overlap") else 0.05,
                "far_speech_ratio": 0.6 if talk_state in ("prospect", "overlap") else 0.02,
                "near_talking": talk_state in ("agent", "overlap"),
                "far_talking": talk_state in ("prospect", "overlap"), "talk_state": talk_state,
                **extra}
        self.pub.publish(wire.topic(self.site, self.box, "metrics"), wire.encode("metrics", body))

    def event(self, name: str, channel: str = "near", **extra: Any) -> None:
        self.seq += 1
        body = {"v": wire.SCHEMA_VERSION, "site": self.site, "box": self.box, "ts": self.now(),
                "seq": self.seq, "name": name, "channel": channel, "t_audio_s": float(self.seq),
                **extra}
        self.pub.publish(wire.topic(self.site, self.box, "event"), wire.encode("event", body))


def _seat(page: Any, box: str, state: str | None = None) -> Any:
    """The seat of ``box``, once it shows ``state`` when given."""
    seat = page.locator(f".seat[data-box='{box}']")
    if state:
        seat.and_(page.locator(f"[data-state='{state}']")).wait_for(timeout=LIVE_WAIT_MS)
    return seat


def _in_call(page: Any) -> str:
    return str(page.locator("#count-talking").inner_text())


def test_fatigue_meter_shows_the_fatigue_index_on_its_0_to_1_scale(
        logged_in_page: Any, site: Any, peer: Any) -> None:
    """The box sends fatigue_phonation_min (minutes) before fatigue_index (0..100): the meter
    shows the index / 100, and nothing while the box has no index yet."""
    page = logged_in_page
    box = Box(site, peer, "box-a")
    box.status()
    # the fields in the box's own order (edge.fatigue): the phonation minutes come first
    box.metrics("agent", fatigue_phonation_min=42.5, break_suggested=False)
    seat = _seat(page, "box-a", "agent")
    assert seat.locator(".fatigue").is_hidden()  # minutes of phonation are not a fatigue level
    box.metrics("prospect", fatigue_phonation_min=42.5, fatigue_index=20.0,
                break_suggested=False)
    _seat(page, "box-a", "prospect")
    assert seat.locator(".fatigue").is_visible()
    assert seat.locator(".fatigue meter").evaluate("m => m.value") == pytest.approx(0.2)
    # a fresh page shows the same from the stream's snapshot
    page.reload()
    page.wait_for_selector("body[data-stream-ready='1']")
    assert seat.locator(".fatigue meter").evaluate("m => m.value") == pytest.approx(0.2)
