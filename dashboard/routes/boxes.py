"""Boxes and their metrics."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from miroir import wire

from .. import access
from .. import db as store
from .deps import CurrentUser, Db, Settings, require_role

router = APIRouter(prefix="/api/boxes", tags=["boxes"])

BoxId = Annotated[str, Path(pattern=wire.ID_PATTERN.pattern)]


@router.get("")
def list_boxes(db: Db, settings: Settings, user: CurrentUser) -> dict[str, Any]:
    """The boxes the user may see, with their state and latest metrics."""
    require_role(user, "admin", "supervisor", "agent")
    allowed = access.visible_boxes(db, user)
    boxes = [b for b in store.boxes_with_latest(db) if allowed is None or b["box"] in allowed]
    return {"site": settings.site, "now": time.time(), "boxes": boxes}


@router.get("/{box}/metrics")
def box_metrics(
    db: Db,
    user: CurrentUser,
    box: BoxId,
    since_seq: Annotated[int, Query(ge=0, le=wire.MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> dict[str, Any]:
    """Metrics of one box with ``seq > since_seq``, oldest first."""
    access.require_box(db, user, box)
    if not store.boxes_with_latest(db, box):
        raise HTTPException(status_code=404, detail=f"unknown box {box!r}")
    # only the rows of agents the user may see: the box may have had another agent before
    rows = store.metrics_since(db, box, since_seq, limit, access.visible_agents(db, user))
    seat = db.conn.execute("SELECT agent FROM seats WHERE box = ?", (box,)).fetchone()
    access.audit(db, user, "read_box_metrics", seat[0] if seat else None,
                 {"box": box, "since_seq": since_seq, "rows": len(rows)})
    return {"box": box, "metrics": rows,
            "next_seq": rows[-1]["seq"] if rows else since_seq}
