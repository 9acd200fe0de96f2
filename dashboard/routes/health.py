"""Liveness and ingest statistics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from .deps import CurrentUser, Db, require_role

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(request: Request) -> dict[str, Any]:
    """Public liveness probe (no data about the boxes)."""
    ingest = request.app.state.ingest
    return {"ok": True, "ingest": None if ingest is None else ingest.connected.is_set()}


@router.get("/api/ingest/stats")
def ingest_stats(request: Request, db: Db, user: CurrentUser) -> dict[str, Any]:
    """Ingest counters, lag percentiles (ms), boxes seen, and live-push counters (the floor's
    and the fleet's people only)."""
    require_role(user, "admin", "it", "supervisor")
    ingest = request.app.state.ingest
    if ingest is not None:
        stats = ingest.stats()
    else:
        stats = {"connected": False, "received": 0, "inserted": 0, "duplicates": 0,
                 "quarantined": 0, "lag_ms_p50": None, "lag_ms_p95": None,
                 "boxes_seen": 0}
    live = "box NOT IN (SELECT box FROM retired_boxes)"
    stats["boxes_known"] = db.conn.execute(f"SELECT count(*) FROM boxes WHERE {live}").fetchone()[0]
    stats["boxes_online"] = db.conn.execute(
        f"SELECT count(*) FROM boxes WHERE state = 'online' AND {live}").fetchone()[0]
    stats["live"] = request.app.state.hub.stats()
    return stats
