"""Who may see what: role scoping of agents, boxes and teams, and the append-only audit log.

Admins see everything; supervisors see the agents of their teams; an agent sees only their own
data; an auditor sees aggregates and the audit log, never one agent's data. Anything out of
scope answers 404, exactly like an id that does not exist, so ids cannot be probed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils
from fastapi import HTTPException

from . import db as store


@dataclass(frozen=True)
class User:
    """The logged-in user and the scope of its role."""

    username: str
    role: str
    agent: str | None = None
    teams: frozenset[str] = field(default_factory=frozenset)
    lang: str = "fr"
    head: bool = False
    """The request is a HEAD answered as its GET (``auth.HEAD_AS_GET``): its body is never
    sent, so nothing of an agent's data is read and :func:`audit` writes no entry."""

    @property
    def supervises(self) -> bool:
        """Admins and supervisors coach agents (flags, goals)."""
        return self.role in ("admin", "supervisor")


def load_user(db: sqlite_utils.Database, username: str) -> User:
    """The user row and its teams (raises 401 if the user vanished)."""
    row = db.conn.execute("SELECT role, agent, lang FROM users WHERE username = ?",
                          (username,)).fetchone()
    if row is None:
        raise HTTPException(status_code=401, detail="not authenticated")
    teams = frozenset(r[0] for r in db.conn.execute(
        "SELECT team FROM user_teams WHERE username = ?", (username,)).fetchall())
    return User(username, str(row[0]), row[1], teams, row[2] or "fr")


def not_found(what: str) -> HTTPException:
    """The single answer for "does not exist" and "not yours"."""
    return HTTPException(status_code=404, detail=f"{what} not found")


def visible_agents(db: sqlite_utils.Database, user: User) -> list[str] | None:
    """Agent ids the user may see one by one (None means all)."""
    if user.role == "admin":
        return None
    if user.role == "supervisor":
        if not user.teams:
            return []
        marks = ",".join("?" for _ in user.teams)
        return [r[0] for r in db.conn.execute(
            f"SELECT agent FROM agents WHERE team IN ({marks}) ORDER BY agent",
            sorted(user.teams)).fetchall()]
    if user.role == "agent" and user.agent:
        return [user.agent]
    return []


def can_see_agent(db: sqlite_utils.Database, user: User, agent: str) -> bool:
    """True if ``agent`` exists and is in the user's scope."""
    row = db.conn.execute("SELECT team FROM agents WHERE agent = ?", (agent,)).fetchone()
    if row is None:
        return False
    if user.role == "admin":
        return True
    if user.role == "supervisor":
        return row[0] in user.teams
    return user.role == "agent" and user.agent == agent


def require_agent(db: sqlite_utils.Database, user: User, agent: str) -> dict[str, Any]:
    """The agent's row if in scope, else 404."""
    if not can_see_agent(db, user, agent):
        raise not_found("agent")
    cur = db.conn.execute("SELECT * FROM agents WHERE agent = ?", (agent,))
    names = [c[0] for c in cur.description]
    return dict(zip(names, cur.fetchone(), strict=True))


def private_mode(db: sqlite_utils.Database, agent: str, row: dict[str, Any]) -> bool:
    """Whether ``agent`` (their ``agents`` ``row``) is in private mode: what the box at their
    seat last said (its button, its control socket and the dashboard's switch all end there),
    the dashboard's switch (``row["private"]``) standing in for a box that never said."""
    said = db.conn.execute("SELECT b.private FROM seats s JOIN boxes b ON b.box = s.box "
                           "WHERE s.agent = ?", (agent,)).fetchone()
    return bool(row["private"] if said is None or said[0] is None else said[0])


def require_team(db: sqlite_utils.Database, user: User, team: str) -> dict[str, Any]:
    """The team's row if the user may see it (admin, its supervisors, auditors), else 404."""
    cur = db.conn.execute("SELECT * FROM teams WHERE team = ?", (team,))
    row = cur.fetchone()
    if row is None:
        raise not_found("team")
    if user.role == "supervisor" and team not in user.teams:
        raise not_found("team")
    if user.role == "agent":
        raise not_found("team")
    names = [c[0] for c in cur.description]
    return dict(zip(names, row, strict=True))


def visible_teams(db: sqlite_utils.Database, user: User) -> list[dict[str, Any]]:
    """Teams the user may open."""
    rows = list(db.query("SELECT * FROM teams ORDER BY team"))
    if user.role in ("admin", "auditor"):
        return rows
    if user.role == "supervisor":
        return [r for r in rows if r["team"] in user.teams]
    return []


def visible_boxes(db: sqlite_utils.Database, user: User) -> set[str] | None:
    """Boxes whose live data the user may see (None means all; auditors get none)."""
    if user.role == "admin":
        return None
    agents = visible_agents(db, user) or []
    if not agents:
        return set()
    marks = ",".join("?" for _ in agents)
    return {r[0] for r in db.conn.execute(
        f"SELECT box FROM seats WHERE agent IN ({marks})", agents).fetchall()}


def agent_boxes(db: sqlite_utils.Database, agent: str) -> set[str]:
    """The box ``agent`` sits at now (none if unseated)."""
    return {r[0] for r in db.conn.execute("SELECT box FROM seats WHERE agent = ?",
                                          (agent,)).fetchall()}


def seated_at(db: sqlite_utils.Database, agent: str, box: str, ts: float) -> bool:
    """True if ``agent`` sat at ``box`` at ``ts`` (the seat history's rule for their rows)."""
    return db.conn.execute(
        "SELECT 1 FROM seat_history WHERE box = ? AND agent = ? AND from_ts <= ? "
        "AND (to_ts IS NULL OR ? < to_ts)", (box, agent, ts, ts)).fetchone() is not None


def _seated_sql(agents: list[str]) -> str:
    """Condition on a metrics row ``m``: recorded while one of ``agents`` sat at its box."""
    return ("EXISTS (SELECT 1 FROM seat_history h WHERE h.box = m.box AND m.ts >= h.from_ts "
            "AND (h.to_ts IS NULL OR m.ts < h.to_ts) "
            f"AND h.agent IN ({','.join('?' for _ in agents)}))")


def hide_foreign_latest(db: sqlite_utils.Database, agents: list[str] | None,
                        boxes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Blank each box's latest ``metrics`` row unless one of ``agents`` (the reader's
    :func:`visible_agents`; None means all) sat at the box when it was recorded: after a seat
    changes hands, the previous agent's rows are not the new agent's supervisor's to see (the
    rule of ``GET /api/boxes/{box}/metrics``)."""
    if agents is None:
        return boxes
    for b in boxes:
        m = b.get("metrics")
        if m is None:
            continue
        if not agents or db.conn.execute(
                f"SELECT 1 FROM metrics m WHERE m.box = ? AND m.seq = ? AND {_seated_sql(agents)}",
                (b["box"], m["seq"], *agents)).fetchone() is None:
            b["metrics"] = None
    return boxes


def talk_history(db: sqlite_utils.Database, agents: list[str] | None, box: str,
                 limit: int) -> list[str]:
    """The last ``limit`` talk states of ``box`` (``hold`` while on hold), oldest first, from the
    rows of ``agents`` only (None means all), as :func:`hide_foreign_latest`."""
    if agents is None:
        return store.recent_talk_states(db, box, limit)
    if not agents:
        return []
    rows = db.conn.execute(
        f"SELECT {store.HELD_TALK_STATE_SQL} FROM metrics m WHERE m.box = ? AND "
        f"{_seated_sql(agents)} "
        "ORDER BY m.seq DESC LIMIT ?", (box, *agents, limit)).fetchall()
    return [r[0] for r in reversed(rows)]


def require_box(db: sqlite_utils.Database, user: User, box: str) -> None:
    """404 unless the user may see ``box``."""
    allowed = visible_boxes(db, user)
    if allowed is not None and box not in allowed:
        raise not_found("box")


# ------------------------------------------------------------------------------ audit
def audit(db: sqlite_utils.Database, user: User, action: str, agent: str | None = None,
          detail: dict[str, Any] | None = None, now: float | None = None) -> None:
    """Append one entry to the audit log (reads of an agent's data by anyone but the agent)."""
    if user.head:
        return  # a HEAD: the headers only, nothing of the agent's data was sent
    if agent is not None and user.role == "agent" and user.agent == agent:
        return  # an agent looking at their own data is not a supervision act
    with db.conn:
        db.conn.execute(
            "INSERT INTO audit_log (ts, actor, actor_role, agent, action, detail) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (time.time() if now is None else now, user.username, user.role, agent, action,
             json.dumps(detail or {}, separators=(",", ":"), sort_keys=True)))


def audit_entries(db: sqlite_utils.Database, agent: str | None = None,
                  limit: int = 200, before: int | None = None) -> list[dict[str, Any]]:
    """Newest audit entries first, all or about one agent; with ``before``, only the entries
    older than the entry of that id (the next page)."""
    where: list[str] = []
    args: list[Any] = []
    if agent is not None:
        where.append("agent = ?")
        args.append(agent)
    if before is not None:
        where.append("id < ?")
        args.append(before)
    sql = "SELECT * FROM audit_log" + (" WHERE " + " AND ".join(where) if where else "")
    return list(db.query(sql + " ORDER BY id DESC LIMIT ?", [*args, limit]))


def audit_log_page(db: sqlite_utils.Database, agent: str | None, limit: int,
                   before: int | None = None) -> dict[str, Any]:
    """One page of the audit log, all of it or the entries about ``agent`` (newest first, by
    id, older than the entry ``before``), with how many there are in all (``total``), whether
    older ones follow (``more``) and the ``before`` that reads them (``next_before``), and the
    ``before`` of the page before this one (``newer_before``, None for the first page)."""
    entries = audit_entries(db, agent, limit + 1, before)
    more = len(entries) > limit
    entries = entries[:limit]
    where, args = ("", []) if agent is None else ("agent = ? AND ", [agent])
    total = db.conn.execute(f"SELECT count(*) FROM audit_log WHERE {where}1",
                            args).fetchone()[0]
    newer = before is not None and db.conn.execute(
        f"SELECT id FROM audit_log WHERE {where}id > ? ORDER BY id LIMIT 1 OFFSET ?",
        (*args, before, limit - 1)).fetchone()
    return {"entries": entries, "total": int(total), "more": more, "before": before,
            "next_before": entries[-1]["id"] if more else None,
            "newer_before": newer[0] if newer else None}


def audit_page(db: sqlite_utils.Database, agent: str, limit: int,
               before: int | None = None) -> dict[str, Any]:
    """One page of the entries about ``agent`` (:func:`audit_log_page`) with
    :func:`audit_summary`: a flood of cheap reads pages an entry out of the list, never out of
    the summary."""
    return {**audit_log_page(db, agent, limit, before), "summary": audit_summary(db, agent)}


VISIT_S = 10.0
"""A page's own reads (its charts' metrics, its live stream) within this many seconds of its
opening by the same person are one visit of the agent's audit list."""
VISIT_PARTS = ("read_metrics", "live_view")


GROUP_READS = ("read_team_means", "read_variant_results")
"""Reads of a figure made of one or two agents' data: the same figure read again by the same
person within :data:`VISIT_S` (a page and its reload) is one line of the agent's audit list."""


def group_visits(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``entries`` (newest first), each ``view_agent`` with the reads its page made by itself
    (:data:`VISIT_PARTS`, within :data:`VISIT_S`) folded into its ``parts``: one line a visit;
    a :data:`GROUP_READS` entry repeating one within :data:`VISIT_S` is folded into it."""
    out: list[dict[str, Any]] = []
    visits: dict[str, dict[str, Any]] = {}
    reads: dict[tuple[str, str, str], dict[str, Any]] = {}
    for e in reversed(entries):  # oldest first: a page's reads follow its opening
        visit = visits.get(e["actor"])
        if (e["action"] in VISIT_PARTS and visit is not None
                and e["ts"] - visit["ts"] <= VISIT_S and e["action"] not in visit["parts"]):
            visit["parts"].append(e["action"])
            continue
        key = (e["actor"], e["action"], e["detail"])
        first = reads.get(key)
        if e["action"] in GROUP_READS and first is not None and e["ts"] - first["ts"] <= VISIT_S:
            continue
        out.append({**e, "parts": []})
        if e["action"] == "view_agent":
            visits[e["actor"]] = out[-1]
        elif e["action"] in GROUP_READS:
            reads[key] = out[-1]
    for e in out:
        e["parts"].sort(key=VISIT_PARTS.index)
    return out[::-1]


def audit_summary(db: sqlite_utils.Database, agent: str) -> list[dict[str, Any]]:
    """Every (actor, action) pair about ``agent`` in the audit log, with how many times and
    when first and last, the latest first: one line per kind of access, however often."""
    return list(db.query(
        "SELECT actor, actor_role, action, count(*) AS count, min(ts) AS first_ts, "
        "max(ts) AS last_ts FROM audit_log WHERE agent = ? GROUP BY actor, actor_role, action "
        "ORDER BY last_ts DESC, actor, action", [agent]))
