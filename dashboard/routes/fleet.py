"""Fleet health for site IT (page and JSON) and the Prometheus scrape endpoint."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from .. import certs, fleet, prom
from .deps import CurrentUser, Db, PlainWhole, Settings, render, require_role

router = APIRouter(tags=["fleet"])

IT_ROLES = ("admin", "it")
PAGE_REFRESH_S = 15
"""The IT page reloads itself this often while its automatic refresh is ticked."""


def fleet_payload(db: Any, restart_grace_s: float) -> dict[str, Any]:
    """Boxes by problem, open alerts and the recent alert history."""
    view = fleet.fleet(db, restart_grace_s=restart_grace_s)
    active, total = fleet.alert_counts(db)
    return {**view, "alerts": fleet.active_alerts(db), "history": fleet.alert_history(db, 50),
            "alerts_active": active, "alerts_total": total}


@router.get("/api/fleet")
def api_fleet(db: Db, user: CurrentUser, settings: Settings) -> dict[str, Any]:
    """Every box with its problems, worst first, and the offline alerts (admins and IT)."""
    require_role(user, *IT_ROLES)
    return fleet_payload(db, settings.restart_grace_s)


@router.get("/api/alerts")
def api_alerts(db: Db, user: CurrentUser,
               limit: Annotated[int, PlainWhole, Query(ge=1, le=5000)] = 200) -> dict[str, Any]:
    """The alert history, newest first, and the number still open (admins and IT)."""
    require_role(user, *IT_ROLES)
    active, _ = fleet.alert_counts(db)
    return {"active": active, "alerts": fleet.alert_history(db, limit)}


def ingest_figures(ingest: Any) -> dict[str, Any]:
    """The ingest's latency (p95, ms; None before any message) and messages stored, for the IT
    page's header (the floor shows them to admins only)."""
    if ingest is None:
        return {"lag_ms_p95": None, "inserted": 0}
    stats = ingest.stats()
    return {"lag_ms_p95": stats.get("lag_ms_p95"), "inserted": stats.get("inserted", 0)}


@router.get("/it", include_in_schema=False)
def it_page(request: Request, db: Db, user: CurrentUser) -> Response:
    """The IT page: the site's certificates, boxes by problem (offline since, certificate,
    outbox, audio, clock...)."""
    require_role(user, *IT_ROLES)
    ingest = request.app.state.ingest
    settings = request.app.state.settings
    site_certs = certs.site_certs(settings, getattr(ingest, "broker_cert_not_after_ts", None))
    return render(request, "it.html", {**fleet_payload(db, settings.restart_grace_s),
                                       "refresh_s": PAGE_REFRESH_S,
                                       "site_certs": site_certs,
                                       "ingest": ingest_figures(ingest),
                                       "thresholds": {"cert_days": fleet.CERT_WARN_DAYS}})


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition; needs ``Authorization: Bearer <metrics token>``."""
    expected: bytes | None = request.app.state.metrics_token
    if not prom.authorized(expected, request.headers.get("authorization")):
        return Response("unauthorized\n", status_code=401, media_type="text/plain",
                        headers={"www-authenticate": 'Bearer realm="miroir-metrics"'})
    app = request.app
    body, ctype = await run_in_threadpool(prom.exposition, app.state.settings,
                                          lambda: app.state.ingest, app.state.cti_counts)
    return Response(body, media_type=ctype, headers={"cache-control": "no-store"})
