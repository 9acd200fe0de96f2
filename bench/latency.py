"""End-to-end latency as a supervisor sees it: speech onset in a box's audio to the seat on an open
page, and a box's publish to the page.

Everything is real: Mosquitto with the site's TLS and ACL, the dashboard (ingest, SQLite, SSE), the
floor page in Debian's chromium, and ``boxes`` box agents (each its own MQTT client, certificate
and VAD model) whose audio alternates silence and a real EmoDB utterance, paced like a sound card
(a block is delivered when its last sample has been captured). The onset's wall time is known
from the pacing; the page records, with the same clock, when each seat turns to "agent speaking"
and when each server-sent update arrives. The first cycle of each box is a warm-up (TLS
connection, subscription) and is not counted.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from bench.common import SHARED
from edge.frames import RATE_HZ  # the clip's rate too

SITE = "bench"
log = logging.getLogger(__name__)

SILENCE_S = 1.6
"""Silence before each utterance of a cycle (with the 2.0 s clip, 3.6 s a cycle), so that each
onset follows a silence, as a new turn does."""
PROGRESS_S = 10.0
"""While the boxes speak (in real time: 26 cycles of 3.6 s by default), how often a log line
says how far they have got."""
CLIP = SHARED / "emodb" / "wav" / "03a01Nc.wav"
BLOCK = 1024

PAGE_HOOKS = """
window.__lat = {states: [], updates: []};
const NativeES = window.EventSource;
window.EventSource = function (url, opts) {
  const es = new NativeES(url, opts);
  es.addEventListener("update", (e) => {
    const now = performance.timeOrigin + performance.now();
    try { const u = JSON.parse(e.data); window.__lat.updates.push([u.box, u.ts, now]); } catch (x) {}
  });
  return es;
};
window.EventSource.CLOSED = NativeES.CLOSED;
new MutationObserver((records) => {
  const now = performance.timeOrigin + performance.now();
  for (const r of records) {
    const el = r.target;
    if (r.attributeName === "data-state" && el.dataset && el.dataset.box) {
      window.__lat.states.push([el.dataset.box, el.dataset.state, now]);
    }
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ["data-state"]});
"""


def _clip() -> tuple[np.ndarray, int]:
    """The utterance and its true onset (first sample 40 dB under the clip's peak), in samples."""
    from edge.source import read_wav

    x = read_wav(CLIP, notice=False).samples
    env = np.abs(x)
    onset = int(np.argmax(env > env.max() * 10 ** (-40 / 20)))
    return x, onset


class PacedCalls:
    """Blocks of (silence, utterance) cycles on the near channel, paced like a sound card."""

    def __init__(self, cycles: int) -> None:
        clip, onset = _clip()
        silence = np.zeros(int(SILENCE_S * RATE_HZ), dtype=np.float32)
        rng = np.random.default_rng(0)
        noise = (rng.standard_normal(len(silence) + len(clip)) * 3e-4).astype(np.float32)
        cycle = np.concatenate([silence, clip]) + noise
        self.near = np.tile(cycle, cycles)
        self.onsets = [i * len(cycle) + len(silence) + onset for i in range(cycles)]
        self.onset_wall_s: list[float] = []

    def blocks(self) -> Iterator[np.ndarray]:
        """Yield (2, BLOCK) blocks when their last sample would have been captured."""
        t0 = time.time() + 0.5
        self.onset_wall_s = [t0 + k / RATE_HZ for k in self.onsets]
        far = np.zeros(BLOCK, dtype=np.float32)
        for start in range(0, len(self.near) - BLOCK + 1, BLOCK):
            due = t0 + (start + BLOCK) / RATE_HZ
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            yield np.stack([self.near[start:start + BLOCK], far])


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def box_agent(settings: Any) -> Any:
    """One box agent with a VAD model of its own, as every box has: a LiteRT interpreter serves
    one thread only (shared by the bench's box threads, blocks failed and boxes read each other's
    audio)."""
    from edge.box import Box
    from edge.pipeline import load_vad_model

    return Box(settings, load_vad_model(), version="bench")


def run(samples: int = 200, boxes: int = 8) -> dict[str, Any]:
    """Run the whole chain; return p50/p95 of both latencies in milliseconds."""
    from playwright.sync_api import sync_playwright

    from dashboard.app import DashboardServer
    from dashboard.settings import DashboardSettings
    from edge.settings import EdgeSettings
    from provisioning.broker import free_port, make_site, new_site_dir

    root = new_site_dir("miroir-bench-latency-")
    ids = [f"seat-{i + 1:02d}" for i in range(boxes)]
    site = make_site(root / "site", SITE, ids, port=free_port())
    broker = site.broker()
    broker.start()
    password = "latency bench password"
    (root / "pw").write_text(password)
    settings = DashboardSettings(
        site=SITE, db_path=root / "dash.sqlite", mqtt_host="localhost", mqtt_port=site.port,
        mqtt_ca=site.ca_cert, mqtt_cert=site.dashboard.cert, mqtt_key=site.dashboard.key,
        http_port=0, admin_password_file=root / "pw", totp_required=False)
    server = DashboardServer(settings)
    url = server.start()
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # stdout: the figures alone
    cycles = -(-samples // boxes) + 1  # the first cycle is a warm-up (TLS connection, subscribe)
    sources = {b: PacedCalls(cycles) for b in ids}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page()
            page.add_init_script(PAGE_HOOKS)
            page.goto(url + "/login")
            page.fill("#username", "admin")
            page.fill("#password", password)
            page.click("button[type=submit]")
            page.wait_for_selector("body[data-stream-ready='1']", timeout=15_000)

            def run_box(b: str) -> None:  # a box owns its outbox: made in the thread that runs it
                cert = site.box(b)
                cfg = EdgeSettings(site=SITE, box=b, broker_port=site.port, ca_file=site.ca_cert,
                                   cert_file=cert.cert, key_file=cert.key,
                                   state_dir=root / "boxes" / b)
                box_agent(cfg).run(sources[b].blocks())

            threads = [threading.Thread(target=run_box, args=(b,), daemon=True) for b in ids]
            audio_s = len(sources[ids[0]].near) / RATE_HZ
            log.info("bench latency: %d box(es) speaking, %d utterances each (the first a "
                     "warm-up), in real time: about %.0f s", boxes, cycles, audio_s)
            started = time.monotonic()
            for th in threads:
                th.start()
            for th in threads:
                while th.is_alive():
                    th.join(PROGRESS_S)
                    if th.is_alive():
                        log.info("bench latency: %.0f of about %.0f s of speech played",
                                 time.monotonic() - started, audio_s)
            time.sleep(1.0)
            lat = page.evaluate("window.__lat")
            browser.close()
    finally:
        server.stop()
        broker.stop()
    onset_ms: list[float] = []
    missed = 0
    for b in ids:
        turns = sorted(t / 1000 for box, state, t in lat["states"] if box == b and state == "agent")
        walls = sources[b].onset_wall_s
        for i, onset in enumerate(walls):
            if i == 0:
                continue  # warm-up
            nxt = walls[i + 1] if i + 1 < len(walls) else onset + 10
            seen = [t for t in turns if onset - 0.2 <= t < nxt]
            if seen:
                onset_ms.append(1000 * (seen[0] - onset))
            else:
                missed += 1
    steady_s = min(src.onset_wall_s[1] for src in sources.values()) - SILENCE_S
    publish_ms = [now - 1000 * ts for _, ts, now in lat["updates"] if ts >= steady_s]
    shutil.rmtree(root, ignore_errors=True)
    return {
        "boxes": boxes,
        "onsets": len(onset_ms) + missed,
        "onsets_missed": missed,
        "latency_ms_p50": _pct(onset_ms, 50),
        "latency_ms_p95": _pct(onset_ms, 95),
        "publish_to_page_samples": len(publish_ms),
        "publish_to_page_ms_p50": _pct(publish_ms, 50),
        "publish_to_page_ms_p95": _pct(publish_ms, 95),
        "budget": {"latency_ms_p95": 1000, "publish_to_page_ms_p95": 250},
    }


if __name__ == "__main__":  # the options of `miroir bench latency` (--help lists them)
    from miroir.cli import main

    raise SystemExit(main(["bench", "latency", *sys.argv[1:]]))
