"""Server-sent events: a snapshot of the boxes the user may see, then their updates."""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from .. import access, auth, fleet, schema
from .. import db as store
from ..live import Hub, Subscription

router = APIRouter(prefix="/api", tags=["stream"])

KEEPALIVE_S = 15.0
"""A live stream with nothing to send sends a comment this often, so that a proxy or browser does
not close it as idle and a gone client is noticed."""
RETRY_MS = 2000
"""How long a browser waits before it reconnects a lost live stream (the SSE ``retry`` field; its
whole seconds in ``Retry-After`` of a refused one)."""
HISTORY = 30
SCOPE_REFRESH_S = 5.0
"""How often an open stream checks its session (logout, a disabled user) and the user's scope,
messages or not."""
MIN_WAIT_S = 0.05
"""Shortest wait of an open stream for its next message (a check or keepalive due at once)."""
MAX_STREAMS_PER_USER = 8
"""Live streams one user may hold open (a supervisor's tabs); more are refused with 429."""
MAX_STREAMS = 256
"""Live streams the dashboard holds open in all; more are refused with 503."""
STREAM_HEADERS = {"cache-control": "no-store", "x-accel-buffering": "no"}
"""Headers of a live stream (and of a HEAD of it): never cached, never buffered by a proxy."""


def _scope(db_path: Any, username: str, token: str | None, idle_s: float,
           agent: str | None = None) -> set[str] | None:
    """The boxes ``username`` may see, or with ``agent`` the box that agent sits at; raises 401
    once the session of ``token`` is over, 404 once ``agent`` is out of the user's scope (another
    team, erased)."""
    db = store.open_db(db_path)
    try:
        if auth.lookup_session(db, token, idle_s, touch=False) is None:  # not the user's act
            raise HTTPException(status_code=401, detail="not authenticated")
        user = access.load_user(db, username)
        if agent is None:
            return access.visible_boxes(db, user)
        access.require_agent(db, user, agent)
        return access.agent_boxes(db, agent)
    finally:
        db.conn.close()


def _agents(db_path: Any, username: str, agent: str | None = None) -> list[str] | None:
    """The agents whose rows ``username`` may see (None means all), or just ``agent``."""
    if agent is not None:
        return [agent]
    db = store.open_db(db_path)
    try:
        return access.visible_agents(db, access.load_user(db, username))
    finally:
        db.conn.close()


def _open_agent(db_path: Any, username: str, agent: str, audit: bool = True) -> None:
    """404 unless ``username`` may see ``agent``; else, with ``audit``, the one audit entry of
    the live view."""
    db = store.open_db(db_path)
    try:
        user = access.load_user(db, username)
        access.require_agent(db, user, agent)
        if audit:
            access.audit(db, user, "live_view", agent)
    finally:
        db.conn.close()


def _seated(db_path: Any, agent: str, text: str) -> bool:
    """Whether the hub message ``text`` is ``agent``'s: a box status, or a row measured while
    they sat at its box (a seat that changed hands since carries the next agent's rows)."""
    message = json.loads(text)
    if message.get("kind") == "status":
        return True
    db = store.open_db(db_path)
    try:
        return access.seated_at(db, agent, str(message.get("box")), float(message.get("ts", 0)))
    finally:
        db.conn.close()


def _windows(db_path: Any, agents: list[str]) -> dict[str, list[tuple[float, float]]]:
    """Per box, the spans of time (from, to; infinite while open) one of ``agents`` sat there:
    the rows of the floor's stream measured outside them are another agent's (a box's backlog
    sent after its seat changed hands)."""
    if not agents:
        return {}
    db = store.open_db(db_path)
    try:
        rows = db.conn.execute(
            f"SELECT box, from_ts, to_ts FROM seat_history WHERE agent IN "
            f"({','.join('?' for _ in agents)})", agents).fetchall()
    finally:
        db.conn.close()
    out: dict[str, list[tuple[float, float]]] = {}
    for box, from_ts, to_ts in rows:
        out.setdefault(str(box), []).append((float(from_ts),
                                             math.inf if to_ts is None else float(to_ts)))
    return out


def _measured_in(windows: dict[str, list[tuple[float, float]]], text: str) -> bool:
    """Whether the hub message ``text`` is a box status, or a row measured within ``windows``."""
    message = json.loads(text)
    if message.get("kind") == "status":
        return True
    ts = float(message.get("ts", 0))
    return any(start <= ts < end for start, end in windows.get(str(message.get("box")), ()))


def _retired(db_path: Any) -> set[str]:
    """The boxes retired from the site (``miroir dashboard retire``)."""
    db = store.open_db(db_path)
    try:
        return schema.retired_boxes(db)
    finally:
        db.conn.close()


def _snapshot(db_path: Any, site: str, allowed: set[str] | None,
              agents: list[str] | None,
              restart_grace_s: float = fleet.RESTART_GRACE_S) -> dict[str, Any]:
    """The boxes of ``allowed`` but the retired ones, each with its latest metrics and talk-state
    history from the rows of ``agents`` only (a seat's previous agent may be out of the reader's
    scope) and, when its last status is the stop of a planned restart, until when it is shown
    restarting (``restarting_until_ts``, by the IT page's rule and grace:
    :func:`dashboard.fleet.restarting_until`), and the silence after which a box is offline (the
    IT page's, :data:`dashboard.fleet.SILENT_AFTER_S`)."""
    db = store.open_db(db_path)
    try:
        retired = schema.retired_boxes(db)
        boxes = [b for b in store.boxes_with_latest(db)
                 if (allowed is None or b["box"] in allowed) and b["box"] not in retired]
        access.hide_foreign_latest(db, agents, boxes)
        for box in boxes:
            box["history"] = access.talk_history(db, agents, box["box"], HISTORY)
            box["restarting_until_ts"] = fleet.restarting_until(box, restart_grace_s)
        return {"site": site, "now": time.time(), "silent_after_s": fleet.SILENT_AFTER_S,
                "boxes": boxes}
    finally:
        db.conn.close()


def sse(event: str, data: Any) -> str:
    """Format one server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"event: {event}\ndata: {text}\n\n"


class _HeldStream(StreamingResponse):
    """A stream that gives its hub place back however it ends, even if it never started (a
    client gone before the first byte)."""

    def __init__(self, content: AsyncIterator[str], hub: Hub, sub: Subscription) -> None:
        super().__init__(content, media_type="text/event-stream", headers=STREAM_HEADERS)
        self._hub, self._sub = hub, sub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._hub.close(self._sub)


def _box_of(text: str) -> str | None:
    # Hub messages are compact JSON objects; the box id is a plain [a-z0-9-] string.
    i = text.find('"box":"')
    if i < 0:
        return None
    j = text.find('"', i + 7)
    return text[i + 7:j] if j > 0 else None


@router.get("/stream")
async def stream(request: Request,
                 agent: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
                 ) -> Response:
    """``snapshot`` event first, then ``update`` events for the boxes in the user's scope, and a
    ``retired`` event (``{"box": ...}``) for a box retired meanwhile (``miroir dashboard retire``).
    Of a box's rows, only those measured while one of the user's agents sat there (all for an
    admin), as in the snapshot: a backlog a box sends after its seat changed hands is the
    previous agent's.

    With ``agent``: that agent's box only, and of its rows those measured while the agent sat
    there (the agent page's live charts); 404 out of the user's scope, and one audit entry for
    the whole live view, however many updates follow. A HEAD gets the headers only: no stream
    held, nothing sent, so no audit entry (404 out of scope all the same)."""
    hub: Hub = request.app.state.hub
    settings = request.app.state.settings
    username = request.state.user
    if request.scope.get(auth.HEAD_AS_GET):  # answered as a GET, its body never sent
        if agent is not None:
            await run_in_threadpool(_open_agent, settings.db_path, username, agent, False)
        return Response(media_type="text/event-stream", headers=STREAM_HEADERS)
    token = request.cookies.get(auth.session_cookie_name(settings.secure_cookies))
    # each open stream holds a queue, a task and a database reader: counted and taken in one
    # step, with no await in between, so requests that arrive together cannot all get in
    retry = {"retry-after": str(RETRY_MS // 1000)}
    if hub.open_streams(username) >= MAX_STREAMS_PER_USER:
        raise HTTPException(status_code=429, headers=retry,
                            detail=f"at most {MAX_STREAMS_PER_USER} live streams per user")
    if hub.open_streams() >= MAX_STREAMS:
        raise HTTPException(status_code=503, headers=retry, detail="too many live streams open")
    sub = hub.open(username)
    if agent is not None:
        try:
            await run_in_threadpool(_open_agent, settings.db_path, username, agent)
        except HTTPException:
            hub.close(sub)
            raise

    async def events() -> AsyncIterator[str]:
        try:
            allowed = await run_in_threadpool(_scope, settings.db_path, username, token,
                                              settings.session_idle_s, agent)
        except HTTPException:
            return
        scoped_at = time.monotonic()
        retired = await run_in_threadpool(_retired, settings.db_path)
        agents = await run_in_threadpool(_agents, settings.db_path, username, agent)
        # the floor (no agent): only rows measured while an agent of the user's sat at the box
        windows = None if agent is not None or agents is None else \
            await run_in_threadpool(_windows, settings.db_path, agents)
        snap = await run_in_threadpool(_snapshot, settings.db_path, settings.site, allowed, agents,
                                       settings.restart_grace_s)
        yield f"retry: {RETRY_MS}\n\n"
        yield sse("snapshot", snap)
        sent_at = time.monotonic()
        while not await request.is_disconnected():
            # wait for the next message, no longer than the next check or keepalive is due: on a
            # quiet floor the session was checked at the 15 s keepalives only
            since = time.monotonic()
            text = await sub.get(timeout_s=max(MIN_WAIT_S, min(
                KEEPALIVE_S - (since - sent_at), SCOPE_REFRESH_S - (since - scoped_at))))
            if time.monotonic() - scoped_at >= SCOPE_REFRESH_S:
                shown = allowed
                try:  # a logout, a disabled user or an expired session ends the stream
                    allowed = await run_in_threadpool(_scope, settings.db_path, username, token,
                                                      settings.session_idle_s, agent)
                except HTTPException:
                    return
                if agent is None:  # the user's agents may have changed too
                    agents = await run_in_threadpool(_agents, settings.db_path, username)
                    windows = None if agents is None else \
                        await run_in_threadpool(_windows, settings.db_path, agents)
                scoped_at = time.monotonic()
                now_retired = await run_in_threadpool(_retired, settings.db_path)
                for box in sorted(now_retired - retired):  # the page takes its seat away
                    if shown is None or box in shown:
                        yield sse("retired", {"box": box})
                retired = now_retired
            if text is None:
                if time.monotonic() - sent_at >= KEEPALIVE_S:
                    yield ": keepalive\n\n"
                    sent_at = time.monotonic()
            elif (allowed is None or _box_of(text) in allowed) and (
                    (agent is None and (windows is None or _measured_in(windows, text)))
                    or (agent is not None
                        and await run_in_threadpool(_seated, settings.db_path, agent, text))):
                yield sse("update", text)
                sent_at = time.monotonic()

    return _HeldStream(events(), hub, sub)
