"""Boxes and their metrics."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from miroir import wire

from .. import db as store
from .deps import Db, Settings

router = APIRouter(prefix="/api/boxes", tags=["boxes"])

BoxId = Annotated[str, Path(pattern=wire.ID_PATTERN.pattern)]


@router.get("")
def list_boxes(db: Db, settings: Settings) -> dict[str, Any]:
    """Every box of the site with its state and latest metrics."""
    return {"site": settings.site, "now": time.time(), "boxes": store.boxes_with_latest(db)}


@router.get("/{box}/metrics")
def box_metrics(
    db: Db,
    box: BoxId,
    since_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> dict[str, Any]:
    """Metrics of one box with ``seq > since_seq``, oldest first."""
    if not store.boxes_with_latest(db, box):
        raise HTTPException(status_code=404, detail=f"unknown box {box!r}")
    rows = store.metrics_since(db, box, since_seq, limit)
    return {"box": box, "metrics": rows,
            "next_seq": rows[-1]["seq"] if rows else since_seq}
