"""Prometheus exposition of the dashboard: ingest counters and lag, fleet gauges, alerts.

Served at ``/metrics`` to a scraper holding the bearer token of ``metrics_token_file`` (compared
in constant time); without a configured token every scrape is refused. Per-box series carry a
``box`` label whose values are the site's box ids (the broker's ACL admits only provisioned
boxes); past :data:`MAX_BOX_SERIES` boxes the per-box series are left out, so cardinality stays
bounded whatever happens.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import db as store
from . import fleet
from .certs import site_certs
from .settings import DashboardSettings

MAX_BOX_SERIES = 5000
"""Most boxes exposed one by one (a site's floor is far smaller)."""
MIN_TOKEN_CHARS = 16
PER_BOX = (
    ("outbox_depth", "miroir_box_outbox_depth", "Messages waiting in the box's outbox."),
    ("dropped", "miroir_box_dropped", "Messages the box lost for good (outbox full, refused by the "
     "broker 5 times, or a full disk); never reset, across restarts."),
    ("overruns", "miroir_box_overruns", "Audio capture overruns of the box since it started."),
    ("fields_dropped", "miroir_box_fields_dropped",
     "Numbers the box left out of its messages (outside their range on the wire: a bug)."),
    ("cert_days_now", "miroir_box_cert_days_left", "Days before the box's certificate expires."),
    ("cpu_temp_c", "miroir_box_cpu_temp_celsius", "CPU temperature of the box."),
    ("msgs_per_min", "miroir_box_messages_per_minute",
     "Messages the ingest received from the box per minute (its last full minute)."),
)
INGEST_COUNTERS = (
    ("received", "miroir_ingest_received", "MQTT messages received by the ingest."),
    ("inserted", "miroir_ingest_inserted", "Stream messages stored (new box, seq)."),
    ("duplicates", "miroir_ingest_duplicates", "Stream messages already stored (resends)."),
    ("quarantined", "miroir_ingest_quarantined", "Messages refused by the wire contract."),
    ("store_retries", "miroir_ingest_store_retries",
     "Batches retried because the database was busy or failing (held unacknowledged)."),
    ("resend_requests", "miroir_ingest_resend_requests", "Resend commands sent for seq gaps."),
    ("lost", "miroir_ingest_seq_lost", "Sequence numbers the boxes no longer held (lost)."),
    ("retired_refused", "miroir_ingest_retired_refused",
     "Messages from retired boxes, refused (miroir dashboard retire)."),
    ("stale_acks", "miroir_ingest_stale_acks",
     "Messages stored after their broker connection ended, not acknowledged (sent again)."),
)


def read_token(path: Path | None, what: str = "metrics") -> bytes | None:
    """A bearer token (``what``: metrics or CTI) from its file (None when unset); refuse a short
    or empty one."""
    if path is None:
        return None
    token = Path(path).read_text(encoding="utf-8").strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"{what} token in {path} is shorter than {MIN_TOKEN_CHARS} characters")
    return token.encode()


def authorized(expected: bytes | None, header: str | None) -> bool:
    """True if ``header`` is ``Bearer <expected>`` (constant-time compare; None refuses all)."""
    if expected is None or not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), expected)


class DashboardCollector:
    """A prometheus-client collector reading the ingest's counters and the boxes table."""

    def __init__(self, settings: DashboardSettings, ingest: Callable[[], Any],
                 cti_counts: Any = None) -> None:
        self.settings = settings
        self._ingest = ingest
        self._cti_counts = cti_counts

    def collect(self) -> Iterator[Any]:
        """Yield the metric families of one scrape."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        ingest = self._ingest()
        stats: dict[str, Any] = ingest.stats() if ingest is not None else {}
        for key, name, doc in INGEST_COUNTERS:
            yield CounterMetricFamily(name, doc, value=float(stats.get(key, 0) or 0))
        lag = GaugeMetricFamily("miroir_ingest_lag_seconds",
                                "Ingest lag (box clock to reception), recent messages.",
                                labels=["quantile"])
        for q, key in (("0.5", "lag_ms_p50"), ("0.99", "lag_ms_p99")):
            if stats.get(key) is not None:
                lag.add_metric([q], float(stats[key]) / 1000.0)
        yield lag
        if self._cti_counts is not None:
            relayed, refused = self._cti_counts.snapshot()
            sent = CounterMetricFamily("miroir_cti_call_states_relayed", "Call states a CTI "
                                       "server posted that were sent to the box.", labels=["state"])
            for state, n in relayed.items():
                sent.add_metric([state], float(n))
            yield sent
            kept = CounterMetricFamily("miroir_cti_call_states_refused", "Call states a CTI "
                                       "server posted that were not sent (unauthorized, no_seat, "
                                       "too_many, broker).", labels=["reason"])
            for reason, n in refused.items():
                kept.add_metric([reason], float(n))
            yield kept
        yield GaugeMetricFamily("miroir_ingest_connected", "1 if the ingest is connected to "
                                "the broker.", value=1.0 if stats.get("connected") else 0.0)
        ends = GaugeMetricFamily("miroir_cert_days_left", "Days before the site's certificate "
                                 "expires (ca, dashboard, broker as last served, https).", labels=["cert"])
        for cert in site_certs(self.settings, getattr(ingest, "broker_cert_not_after_ts", None)):
            ends.add_metric([cert.name], round(cert.days_left, 2))
        yield ends
        now = time.time()
        db = store.open_db(self.settings.db_path)
        try:
            view = fleet.fleet(db, now, self.settings.restart_grace_s)
            active, total = fleet.alert_counts(db)
        finally:
            db.conn.close()
        seen = [b for b in view["boxes"] if b["last_seen_ts"] is not None]
        offline = sum(1 for b in seen if b["offline"])
        restarting = sum(1 for b in seen if b["restarting"])
        yield GaugeMetricFamily("miroir_boxes_known", "Boxes seen or provisioned.",
                                value=float(len(view["boxes"])))
        yield GaugeMetricFamily("miroir_boxes_online", "Boxes online now.",
                                value=float(len(seen) - offline - restarting))
        yield GaugeMetricFamily("miroir_boxes_offline", "Boxes seen once and offline now "
                                "(not those restarting).", value=float(offline))
        yield GaugeMetricFamily("miroir_boxes_restarting", "Boxes that said they restart (an "
                                "update, a reload), within the grace period.",
                                value=float(restarting))
        yield GaugeMetricFamily("miroir_alerts_active", "Open fleet alerts (boxes offline).",
                                value=float(active))
        yield CounterMetricFamily("miroir_alerts_raised", "Fleet alerts raised (kept history).",
                                  value=float(total))
        problems = GaugeMetricFamily("miroir_boxes_with_problem", "Boxes showing each problem.",
                                     labels=["problem"])
        for code in fleet.SEVERITY:
            problems.add_metric([code], float(view["counts"].get(code, 0)))
        yield problems
        boxes = view["boxes"]
        truncated = len(boxes) > MAX_BOX_SERIES
        yield GaugeMetricFamily("miroir_box_series_truncated", "1 if per-box series were left "
                                "out (too many boxes).", value=1.0 if truncated else 0.0)
        if truncated:
            return
        up = GaugeMetricFamily("miroir_box_up", "1 if the box is online.", labels=["box"])
        for b in boxes:
            up.add_metric([b["box"]], 0.0 if b["offline"] or b["restarting"] else 1.0)
        yield up
        for key, name, doc in PER_BOX:
            family = GaugeMetricFamily(name, doc, labels=["box"])
            for b in boxes:
                if b.get(key) is not None:
                    family.add_metric([b["box"]], float(b[key]))
            yield family


def exposition(settings: DashboardSettings, ingest: Callable[[], Any],
               cti_counts: Any = None) -> tuple[bytes, str]:
    """One scrape in the Prometheus text format (with the CTI call states' counts,
    :class:`dashboard.routes.cti.CallStateCounts`, when given); returns (body, content type)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(DashboardCollector(settings, ingest, cti_counts))
    return generate_latest(registry), CONTENT_TYPE_LATEST
