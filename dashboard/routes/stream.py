"""Server-sent events: a snapshot of every box, then one JSON message per box update."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from .. import db as store
from ..live import Hub

router = APIRouter(prefix="/api", tags=["stream"])

KEEPALIVE_S = 15.0
RETRY_MS = 2000
HISTORY = 30


def _snapshot(db_path: Any, site: str) -> dict[str, Any]:
    db = store.open_db(db_path)
    try:
        boxes = store.boxes_with_latest(db)
        for box in boxes:
            box["history"] = store.recent_talk_states(db, box["box"], HISTORY)
        return {"site": site, "now": time.time(), "boxes": boxes}
    finally:
        db.conn.close()


def sse(event: str, data: Any) -> str:
    """Format one server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"event: {event}\ndata: {text}\n\n"


@router.get("/stream")
async def stream(request: Request) -> StreamingResponse:
    """``snapshot`` event first, then ``update`` events (one per stored message)."""
    hub: Hub = request.app.state.hub
    settings = request.app.state.settings

    async def events() -> AsyncIterator[str]:
        async with hub.subscribe() as sub:
            snap = await run_in_threadpool(_snapshot, settings.db_path, settings.site)
            yield f"retry: {RETRY_MS}\n\n"
            yield sse("snapshot", snap)
            while not await request.is_disconnected():
                text = await sub.get(timeout_s=KEEPALIVE_S)
                yield ": keepalive\n\n" if text is None else sse("update", text)

    return StreamingResponse(
        events(), media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"})
