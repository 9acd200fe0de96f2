"""Boxes and their metrics."""

from __future__ import annotations

import time
from typing import Annotated, Any

import sqlite_utils
from fastapi import APIRouter, HTTPException, Path, Query

from miroir import wire

from .. import access, schema
from .. import db as store
from .deps import CurrentUser, Db, PlainWhole, Settings, require_role

router = APIRouter(prefix="/api/boxes", tags=["boxes"])

BoxId = Annotated[str, Path(pattern=wire.ID_PATTERN.pattern)]


@router.get("")
def list_boxes(db: Db, settings: Settings, user: CurrentUser) -> dict[str, Any]:
    """The boxes the user may see (not the retired ones), with their state and latest metrics."""
    require_role(user, "admin", "supervisor", "agent")
    allowed = access.visible_boxes(db, user)
    retired = schema.retired_boxes(db)
    boxes = [b for b in store.boxes_with_latest(db)
             if (allowed is None or b["box"] in allowed) and b["box"] not in retired]
    access.hide_foreign_latest(db, access.visible_agents(db, user), boxes)
    return {"site": settings.site, "now": time.time(), "boxes": boxes}


@router.get("/{box}/metrics")
def box_metrics(
    db: Db,
    user: CurrentUser,
    box: BoxId,
    since_seq: Annotated[int, PlainWhole, Query(ge=0, le=wire.MAX_SEQ)] = 0,
    limit: Annotated[int, PlainWhole, Query(ge=1, le=5000)] = 1000,
) -> dict[str, Any]:
    """Metrics of one box with ``seq > since_seq``, oldest first."""
    access.require_box(db, user, box)
    if not store.boxes_with_latest(db, box):
        raise HTTPException(status_code=404, detail=f"unknown box {box!r}")
    # only the rows of agents the user may see: the box may have had another agent before
    agents = access.visible_agents(db, user)
    rows = store.metrics_since(db, box, since_seq, limit, agents)
    # audited on the agents whose rows were read (who sat at the box then), not on whoever
    # sits there now: one entry per agent with their row count, one without an agent if none
    per_agent = _rows_per_agent(db, box, rows, agents)
    for agent, n in per_agent.items():
        access.audit(db, user, "read_box_metrics", agent,
                     {"box": box, "since_seq": since_seq, "rows": n})
    if not per_agent:
        access.audit(db, user, "read_box_metrics", None,
                     {"box": box, "since_seq": since_seq, "rows": len(rows)})
    return {"box": box, "metrics": rows,
            "next_seq": rows[-1]["seq"] if rows else since_seq}


def _rows_per_agent(db: sqlite_utils.Database, box: str, rows: list[dict[str, Any]],
                    agents: list[str] | None) -> dict[str, int]:
    """How many of ``rows`` (consecutive reads of ``box``, oldest first) each agent produced: the
    agent whose seat window (``seat_history``) holds the row's time, as ``metrics_since`` decides
    which rows a reader may see. Rows from no one's window are counted under no agent."""
    if not rows:
        return {}
    sql = ("SELECT h.agent, count(*) FROM metrics m JOIN seat_history h ON h.box = m.box "
           "AND m.ts >= h.from_ts AND (h.to_ts IS NULL OR m.ts < h.to_ts) "
           "WHERE m.box = ? AND m.seq BETWEEN ? AND ?")
    args: list[Any] = [box, rows[0]["seq"], rows[-1]["seq"]]
    if agents is not None:
        sql += f" AND h.agent IN ({','.join('?' for _ in agents)})"
        args += agents
    cur = db.conn.execute(sql + " GROUP BY h.agent ORDER BY h.agent", args)
    return {str(agent): int(n) for agent, n in cur.fetchall()}
