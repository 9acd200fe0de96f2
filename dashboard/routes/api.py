"""The JSON API: floor, agents, coaching, calls, teams, campaigns, audit (OpenAPI at /api/openapi.json).

Every read of one agent's data by someone other than that agent is written to the audit log.
Objects out of the caller's scope answer 404, like objects that do not exist.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field, StringConstraints, field_validator, model_validator

from miroir import wire

from .. import access, analytics, commands, fleet, registry, retention, schema
from .. import db as store
from ..access import User
from ..ingest import MAX_FUTURE_S
from .deps import CurrentUser, Db, PlainDecimal, PlainWhole, Settings, require_role

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["api"])

AgentId = Annotated[str, Path(min_length=1, max_length=64)]
TeamId = Annotated[str, Path(min_length=1, max_length=64)]
MAX_NOTE = 2000
MAX_VARIANTS = 12
CAMPAIGN_ROLES = ("admin", "supervisor", "auditor")
MAX_ID = 2**63 - 1
"""Largest row id SQLite stores (a signed 64-bit INTEGER): ids beyond it are refused (422)."""
RowId = Annotated[int, PlainWhole, Path(ge=1, le=MAX_ID)]
"""A flag, goal or call id in a path: 1 to :data:`MAX_ID` (422 otherwise, never a 500)."""
MIN_TS = 1_577_836_800.0
"""Earliest timestamp a flag or a call may carry: 2020-01-01T00:00:00Z (Unix seconds)."""
MAX_TS = 4_102_444_800.0
"""Latest timestamp a flag or a call may carry: 2100-01-01T00:00:00Z (Unix seconds)."""
TS_BOUNDS: dict[str, Any] = {"ge": MIN_TS, "le": MAX_TS, "allow_inf_nan": False}
"""Bounds of a stored moment: finite, 2020 to 2100 (pages format it as a calendar date)."""


# ----------------------------------------------------------------------------- models
class FlagIn(BaseModel):
    """A moment flagged by a supervisor."""

    ts: Annotated[float, PlainDecimal] = Field(
        description="Moment flagged, Unix seconds (2020 on, at most a day ahead of "
                                  "the dashboard's clock).", **TS_BOUNDS)
    note: str = Field("", max_length=MAX_NOTE, description="Coaching note.")
    shared: bool = Field(False, description="Share the moment with the team as a remarkable call.")


class GoalIn(BaseModel):
    """A focus goal set for an agent."""

    metric: str = Field(description="Metric name (see /api/metrics/registry).")
    label: str = Field(max_length=120, description="Goal in words, e.g. « ralentir » (not blank).")
    direction: str = Field("down", pattern="^(up|down)$", description="Desired direction.")

    @field_validator("label")
    @classmethod
    def _named(cls, label: str) -> str:
        """A goal needs a name: one made only of spaces would be saved as an empty goal."""
        label = schema.visible_name(label)
        if not label:  # spaces only, or characters that show nothing (U+200B...)
            raise ValueError("a goal needs a name")
        return label


class OutcomeIn(BaseModel):
    """The outcome of a call."""

    outcome: str | None = Field(description="meeting, callback, refusal or no_answer; null takes "
                                            "a tag set by mistake back off.")


class CallIn(BaseModel):
    """A call recorded by a softphone/CTI connector or a supervisor."""

    agent: str = Field(max_length=64)
    start_ts: Annotated[float, PlainDecimal] = Field(
        description="Start of the call, Unix seconds (2020 on, at most a day ahead of the "
                    "dashboard's clock).", **TS_BOUNDS)
    end_ts: Annotated[float | None, PlainDecimal] = Field(
        None, description="End of the call, Unix seconds (2020 on, at most a day ahead of the "
                          "dashboard's clock).", **TS_BOUNDS)
    campaign: str | None = Field(None, max_length=80)
    variant: Annotated[int | None, PlainWhole] = Field(None, ge=1, le=MAX_ID)
    box: str | None = Field(None, pattern=wire.ID_PATTERN.pattern)
    summary: dict[Annotated[str, StringConstraints(max_length=64)],
                  float | int | Annotated[str, StringConstraints(max_length=256)] | bool | None] \
        | None = Field(None, max_length=64)

    @model_validator(mode="after")
    def _ends_after_start(self) -> CallIn:
        """A call ends when or after it starts (else its length reads negative)."""
        if self.end_ts is not None and self.end_ts < self.start_ts:
            raise ValueError("a call cannot end before it starts")
        return self


class VariantIn(BaseModel):
    """A pitch or opener variant of a campaign."""

    name: str = Field(min_length=1, max_length=80, description="Short name, e.g. « Question ».")
    text: str = Field("", max_length=MAX_NOTE, description="The opener or pitch as agents say it.")


class CampaignIn(BaseModel):
    """A new campaign with its variants."""

    campaign: str = Field(pattern=wire.ID_PATTERN.pattern,
                          description="Campaign id: 1 to 32 characters of [a-z0-9-].")
    name: str = Field(min_length=1, max_length=120, description="Display name.")
    team: str | None = Field(None, max_length=64,
                             description="Team running it (required for a supervisor).")
    variants: list[VariantIn] = Field(default_factory=list, max_length=MAX_VARIANTS,
                                      description="Variants to compare.")

    @field_validator("name")
    @classmethod
    def _named(cls, name: str) -> str:
        """A campaign needs a name: one of spaces only was saved empty, a link without text."""
        name = schema.visible_name(name)
        if not name:  # spaces only, or characters that show nothing (U+200B...)
            raise ValueError("a campaign needs a name")
        return name


class AssignIn(BaseModel):
    """Put an agent on a campaign, optionally with the variant they use."""

    agent: str = Field(max_length=64)
    variant: Annotated[int | None, PlainWhole] = Field(
        None, ge=1, le=MAX_ID, description="Variant id of this campaign, or none.")


class CallVariantIn(BaseModel):
    """The variant used on a call (its campaign follows from the variant)."""

    variant: Annotated[int, PlainWhole] = Field(ge=1, le=MAX_ID)


class PrivateIn(BaseModel):
    """The agent's private-call switch."""

    private: bool


# ---------------------------------------------------------------------------- helpers
def _pseudonymous_default(db: Any) -> bool:
    return schema.get_setting(db, "pseudonymous_default", "0") == "1"


def floor_data(db: Any, user: User, site: str, pseudonymous: bool | None) -> dict[str, Any]:
    """Seats the user may see, with layout, names (unless pseudonymous), team and campaign."""
    pseudo = _pseudonymous_default(db) if pseudonymous is None else pseudonymous
    boxes = access.visible_boxes(db, user)
    # private mode is the box's (its button, its socket, the dashboard's switch all end there):
    # what its status says, the dashboard's switch standing in for a box that never said
    rows = list(db.query(
        "SELECT s.box, s.label, s.row, s.col, s.agent, a.name, a.team, a.campaign, "
        "coalesce(b.private, a.private, 0) AS private FROM seats s "
        "LEFT JOIN agents a ON a.agent = s.agent LEFT JOIN boxes b ON b.box = s.box "
        "ORDER BY s.box"))
    known = {r["box"] for r in rows}
    if boxes is None:  # admin: boxes seen but not yet in the inventory too (not retired ones)
        retired = schema.retired_boxes(db)
        rows += [{"box": b, "label": b, "row": None, "col": None, "agent": None, "name": None,
                  "team": None, "campaign": None, "private": private or 0}
                 for b, private in db.conn.execute(
                     "SELECT box, private FROM boxes ORDER BY box").fetchall()
                 if b not in known and b not in retired]
    else:
        rows = [r for r in rows if r["box"] in boxes]
    for r in rows:
        r["private"] = bool(r["private"])
        if pseudo:
            r["name"] = None
            r["agent"] = None
    layout = db.conn.execute("SELECT layout_cols FROM sites WHERE site = ?", (site,)).fetchone()
    teams = sorted({r["team"] for r in rows if r["team"]})
    campaigns = sorted({r["campaign"] for r in rows if r["campaign"]})
    return {"site": site, "layout_cols": layout[0] if layout else None, "pseudonymous": pseudo,
            "seats": rows, "teams": teams, "campaigns": campaigns}


def _require_flag(db: Any, user: User, flag_id: int) -> dict[str, Any]:
    rows = list(db.query("SELECT * FROM flags WHERE id = ?", [flag_id]))
    if not rows or not access.can_see_agent(db, user, rows[0]["agent"]):
        raise access.not_found("flag")
    return rows[0]


def _require_goal(db: Any, user: User, goal_id: int) -> dict[str, Any]:
    row = db.conn.execute("SELECT agent FROM goals WHERE id = ?", (goal_id,)).fetchone()
    if row is None or not access.can_see_agent(db, user, row[0]):
        raise access.not_found("goal")
    return dict(db["goals"].get(goal_id))


def _require_call(db: Any, user: User, call_id: int) -> dict[str, Any]:
    row = db.conn.execute("SELECT agent FROM calls WHERE id = ?", (call_id,)).fetchone()
    if row is None or not access.can_see_agent(db, user, row[0]):
        raise access.not_found("call")
    call = dict(db["calls"].get(call_id))
    call["summary"] = json.loads(call["summary"]) if call.get("summary") else None
    return call


def require_campaign(db: Any, user: User, campaign: str) -> dict[str, Any]:
    """The campaign if the user may see it (its team's supervisors, admins, auditors)."""
    row = db.conn.execute("SELECT campaign, name, team, closed_ts FROM campaigns "
                          "WHERE campaign = ?", (campaign,)).fetchone()
    if row is None or user.role not in CAMPAIGN_ROLES:
        raise access.not_found("campaign")
    if user.role == "supervisor" and row[2] is not None and row[2] not in user.teams:
        raise access.not_found("campaign")
    return {"campaign": row[0], "name": row[1], "team": row[2], "closed_ts": row[3]}


def _seen_campaigns_sql(user: User) -> tuple[str, list[str]]:
    """The condition on a ``campaigns`` row that :func:`require_campaign` lets the user see, and
    its arguments."""
    if user.role not in CAMPAIGN_ROLES:
        return "0", []
    if user.role == "supervisor":
        teams = sorted(user.teams)
        return f"(team IS NULL OR team IN ({','.join('?' for _ in teams)}))", teams
    return "1", []


LISTING_ORDER = "closed_ts IS NOT NULL, coalesce(closed_ts, created_ts, 0) DESC, campaign"
"""The order of :func:`campaign_listing`: the open campaigns, newest first, then the closed ones,
latest closed first."""


def campaign_page_of(db: Any, user: User, campaign: str, per_page: int) -> int:
    """The page (from 1) of :func:`campaign_listing` where ``campaign`` stands for ``user`` (1 if
    it is not one they may see)."""
    where, args = _seen_campaigns_sql(user)
    row = db.conn.execute(
        f"SELECT rank FROM (SELECT campaign, row_number() OVER (ORDER BY {LISTING_ORDER}) AS rank "
        f"FROM campaigns WHERE {where}) WHERE campaign = ?", [*args, campaign]).fetchone()
    return 1 if row is None else (int(row[0]) - 1) // per_page + 1


def campaign_listing(db: Any, user: User, page: int, per_page: int) -> dict[str, Any]:
    """Page ``page`` (from 1) of the campaigns the user may see, ``per_page`` a page, without
    their variants: the open ones first, newest first, then the closed ones, latest closed
    first; with how many there are in all (``total``), the rank of the page's first and last
    (``first``, ``last``) and the number of pages (``pages``, at least 1)."""
    where, args = _seen_campaigns_sql(user)
    total = int(db.conn.execute(f"SELECT count(*) FROM campaigns WHERE {where}",
                                args).fetchone()[0])
    rows = list(db.query(
        f"SELECT campaign, name, team, created_ts, closed_ts FROM campaigns WHERE {where} "
        f"ORDER BY {LISTING_ORDER} LIMIT ? OFFSET ?", [*args, per_page, (page - 1) * per_page]))
    first = (page - 1) * per_page + 1
    return {"campaigns": rows, "total": total, "page": page,
            "first": first if rows else None, "last": first + len(rows) - 1 if rows else None,
            "pages": max(1, -(-total // per_page))}


def _writable_campaign(db: Any, user: User, campaign: str, *,
                       open_only: bool = True) -> dict[str, Any]:
    """The campaign if the user may change it (admins; supervisors of its team), else 404.

    Raises 409 when ``open_only`` and the campaign is closed.
    """
    require_role(user, "admin", "supervisor")
    c = require_campaign(db, user, campaign)
    if user.role == "supervisor" and c["team"] not in user.teams:
        raise access.not_found("campaign")
    if open_only and c["closed_ts"] is not None:
        raise HTTPException(status_code=409, detail="campaign is closed")
    return c


def _variant_campaign(db: Any, variant: int) -> str | None:
    row = db.conn.execute("SELECT campaign FROM variants WHERE id = ?", (variant,)).fetchone()
    return None if row is None else str(row[0])


def create_campaign(db: Any, user: User, body: CampaignIn) -> None:
    """Create a campaign and its variants (admins; supervisors for one of their teams)."""
    require_role(user, "admin", "supervisor")
    team = (body.team or "").strip() or None
    if user.role == "supervisor":
        if team is None:
            raise HTTPException(status_code=422, detail="a supervisor's campaign needs a team")
        access.require_team(db, user, team)
    elif team is not None and not db.conn.execute("SELECT 1 FROM teams WHERE team = ?",
                                                  (team,)).fetchone():
        raise access.not_found("team")
    names = [schema.visible_name(v.name) for v in body.variants]
    if not all(names):  # spaces, or characters that show nothing, only
        raise HTTPException(status_code=422, detail="a variant needs a name")
    if len(set(names)) != len(names):
        raise HTTPException(status_code=422, detail="variant names must be distinct")
    with store.write_transaction(db):  # the id checked free is still free when written
        if db.conn.execute("SELECT 1 FROM campaigns WHERE campaign = ?",
                           (body.campaign,)).fetchone():
            raise HTTPException(status_code=409, detail="campaign id already used")
        db.conn.execute("INSERT INTO campaigns (campaign, name, team, created_ts, created_by) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (body.campaign, body.name, team, time.time(), user.username))
        for v, name in zip(body.variants, names, strict=True):
            db.conn.execute("INSERT INTO variants (campaign, name, text, created_by) "
                            "VALUES (?, ?, ?, ?)",
                            (body.campaign, name, v.text.strip(), user.username))
    access.audit(db, user, "campaign_create", None,
                 {"campaign": body.campaign, "variants": len(body.variants)})


def add_variant(db: Any, user: User, campaign: str, body: VariantIn) -> int:
    """Add a variant to an open campaign; return its id."""
    _writable_campaign(db, user, campaign)
    name = schema.visible_name(body.name)
    if not name:  # spaces, or characters that show nothing, only
        raise HTTPException(status_code=422, detail="a variant needs a name")
    with store.write_transaction(db):  # what is counted is what is there when written
        count, same = db.conn.execute(
            "SELECT count(*), coalesce(sum(name = ?), 0) FROM variants WHERE campaign = ?",
            (name, campaign)).fetchone()
        if count >= MAX_VARIANTS:
            raise HTTPException(status_code=409, detail=f"at most {MAX_VARIANTS} variants")
        if same:
            raise HTTPException(status_code=409, detail="a variant has that name already")
        cur = db.conn.execute("INSERT INTO variants (campaign, name, text, created_by) "
                              "VALUES (?, ?, ?, ?)",
                              (campaign, name, body.text.strip(), user.username))
    variant = int(cur.lastrowid or 0)
    access.audit(db, user, "variant_create", None,
                 {"campaign": campaign, "variant": variant, "name": name})
    return variant


def close_campaign(db: Any, user: User, campaign: str) -> float:
    """Close a campaign (no new variant, assignment or tag, its calls' outcomes frozen); return
    when it was closed."""
    _writable_campaign(db, user, campaign, open_only=False)
    now = time.time()
    with store.write_transaction(db):  # closed once, whoever closes it at the same time
        closed = db.conn.execute("SELECT closed_ts FROM campaigns WHERE campaign = ?",
                                 (campaign,)).fetchone()[0]
        if closed is not None:
            return float(closed)
        db.conn.execute("UPDATE campaigns SET closed_ts = ?, closed_by = ? WHERE campaign = ?",
                        (now, user.username, campaign))
        taken_off = [r[0] for r in db.conn.execute(
            "SELECT agent FROM agents WHERE campaign = ? ORDER BY agent", (campaign,)).fetchall()]
        db.conn.execute("UPDATE agents SET campaign = NULL, variant = NULL WHERE campaign = ?",
                        (campaign,))
    # about each agent it takes off the campaign, as putting them on it is; once if none was
    for agent in taken_off or [None]:
        access.audit(db, user, "campaign_close", agent, {"campaign": campaign})
    return now


OTHER_TEAM = "the agent is not in the campaign's team"
"""Why an agent is not put on a team's campaign: its supervisors run it and read its figures of
their own agents only, and another team's supervisor may not open it, so an agent of another
team on it would be counted by some readers and not others, and show their supervisor a campaign
that answers them 404. A campaign of no team takes any agent."""


def _of_its_team(db: Any, campaign: dict[str, Any], agent: str) -> bool:
    """True if ``campaign`` (:func:`require_campaign`'s row) takes ``agent``: one of its team's,
    any agent for a campaign of no team (:data:`OTHER_TEAM`)."""
    if campaign["team"] is None:
        return True
    row = db.conn.execute("SELECT team FROM agents WHERE agent = ?", (agent,)).fetchone()
    return row is not None and row[0] == campaign["team"]


def _require_its_team(db: Any, campaign: dict[str, Any], agent: str) -> None:
    """422 (:data:`OTHER_TEAM`) unless ``campaign`` takes ``agent`` (:func:`_of_its_team`)."""
    if not _of_its_team(db, campaign, agent):
        raise HTTPException(status_code=422, detail=OTHER_TEAM)


def assign_agent(db: Any, user: User, campaign: str, body: AssignIn) -> None:
    """Put an agent in scope on an open campaign and variant (their next calls get them): an
    agent of the campaign's team, if it has one (:data:`OTHER_TEAM`)."""
    c = _writable_campaign(db, user, campaign)
    access.require_agent(db, user, body.agent)
    _require_its_team(db, c, body.agent)
    if body.variant is not None and _variant_campaign(db, body.variant) != campaign:
        raise HTTPException(status_code=422, detail="variant is not one of this campaign's")
    with db.conn:
        db.conn.execute("UPDATE agents SET campaign = ?, variant = ? WHERE agent = ?",
                        (campaign, body.variant, body.agent))
    access.audit(db, user, "campaign_assign", body.agent,
                 {"campaign": campaign, "variant": body.variant})


def set_call_variant(db: Any, user: User, call_id: int, variant: int) -> str:
    """Tag a call with the variant used (supervisors, admins); return the variant's campaign."""
    require_role(user, "admin", "supervisor")
    call = _require_call(db, user, call_id)
    campaign = _variant_campaign(db, variant)
    if campaign is None or not _may_see(db, user, campaign):
        raise access.not_found("variant")  # another team's answers as one that does not exist
    _require_its_team(db, _writable_campaign(db, user, campaign), call["agent"])
    if _closed_campaign(db, call["campaign"]):  # a closed campaign's comparison stays as closed
        raise HTTPException(status_code=409, detail="campaign is closed")
    with db.conn:
        db.conn.execute("UPDATE calls SET campaign = ?, variant = ? WHERE id = ?",
                        (campaign, variant, call_id))
    access.audit(db, user, "call_variant", call["agent"],
                 {"call": call_id, "campaign": campaign, "variant": variant,
                  "was": {"campaign": call["campaign"], "variant": call["variant"]}})
    return campaign


def _call_campaign(db: Any, user: User, body: CallIn) -> tuple[str | None, int | None]:
    """The campaign and variant of a new call: as given or the agent's current ones, either only
    in a campaign the user may change (:func:`_writable_campaign`: 404 for one they may only see,
    409 for a closed one) and that takes the agent (:func:`_of_its_team`: 422 otherwise); the
    agent's current campaign is left off a call otherwise."""
    if body.campaign is None and body.variant is None:
        row = db.conn.execute(
            "SELECT a.campaign, a.variant FROM agents a JOIN campaigns c ON "
            "c.campaign = a.campaign WHERE a.agent = ? AND c.closed_ts IS NULL",
            (body.agent,)).fetchone()
        if row is None:
            return None, None
        try:
            current = _writable_campaign(db, user, row[0])
        except HTTPException:
            return None, None
        if not _of_its_team(db, current, body.agent):  # as an older release could leave it
            return None, None
        return row[0], row[1]
    campaign = body.campaign
    if campaign is not None:
        # 404 out of scope or none, 409 closed, 422 another team's
        _require_its_team(db, _writable_campaign(db, user, campaign), body.agent)
    if body.variant is not None:
        owner = _variant_campaign(db, body.variant)
        if owner is not None and campaign is None and not _may_see(db, user, owner):
            owner = None  # another team's variant answers as one that does not exist
        if owner is None or (campaign is not None and owner != campaign):
            raise HTTPException(status_code=422, detail="variant is not one of the campaign's")
        if campaign is None:
            _require_its_team(db, _writable_campaign(db, user, owner), body.agent)
            campaign = owner
    return campaign, body.variant


def _may_see(db: Any, user: User, campaign: str) -> bool:
    """True if the user may see ``campaign`` (:func:`require_campaign`): the ids of its variants
    are on its page."""
    try:
        require_campaign(db, user, campaign)
    except HTTPException:
        return False
    return True


def agent_metrics_payload(db: Any, user: User, agent: str, since_ts: float,
                          until_ts: float | None) -> dict[str, Any]:
    """Metric descriptions, rows, cue markers and flags of one agent from ``since_ts`` to
    ``until_ts`` (open-ended when None); ``truncated`` when the window holds more than
    ``analytics.MAX_METRIC_ROWS`` rows (the newest are kept); ``affect_state``, the prospect
    affect stage of the box at the agent's seat now (``off``, ``on``... or None)."""
    names = analytics.metric_names(db)
    until = MAX_TS if until_ts is None else until_ts
    flags = list(db.query("SELECT id, ts, note, author FROM flags WHERE agent = ? AND ts >= ? "
                          "AND ts <= ? ORDER BY ts", [agent, since_ts, until]))
    rows = analytics.agent_metrics(db, agent, since_ts, until_ts,
                                   limit=analytics.MAX_METRIC_ROWS + 1)
    truncated = len(rows) > analytics.MAX_METRIC_ROWS
    affect = db.conn.execute("SELECT b.prospect_affect_state FROM seats s JOIN boxes b "
                             "ON b.box = s.box WHERE s.agent = ?", (agent,)).fetchone()
    return {"agent": agent,
            "affect_state": affect[0] if affect else None,
            "metrics": [registry.describe(n, user.lang) for n in names],
            "factors": [registry.describe_factor(f, user.lang) for f in analytics.factor_names(db)],
            "factor_noise_z": registry.FACTOR_NOISE_Z,
            "rows": rows[1:] if truncated else rows,
            "truncated": truncated,
            "cues": [{**c, "label": registry.cue_label(c["name"], user.lang)}
                     for c in analytics.agent_events(db, agent, since_ts) if c["ts"] <= until],
            "flags": flags}


def _ahead(*moments: float | None) -> bool:
    """Whether one of ``moments`` is more than a day ahead of the dashboard's clock (the boxes'
    messages' rule, :data:`dashboard.ingest.MAX_FUTURE_S`), refused (422): the retention purge
    goes by it, so a row dated 2099 was kept for ever (and a call sorted first on the agent's
    pages)."""
    return any(ts is not None and ts > time.time() + MAX_FUTURE_S for ts in moments)


def add_flag(db: Any, user: User, agent: str, body: FlagIn) -> int:
    """Store a flagged moment (supervisors and admins only; audited); return its id."""
    require_role(user, "admin", "supervisor")
    access.require_agent(db, user, agent)
    if _ahead(body.ts):
        raise HTTPException(status_code=422, detail="a flagged moment cannot be more than a day "
                                                    "ahead of the dashboard's clock")
    box = db.conn.execute(
        "SELECT box FROM seat_history WHERE agent = ? AND from_ts <= ? AND "
        "(to_ts IS NULL OR to_ts > ?) ORDER BY from_ts DESC LIMIT 1",
        (agent, body.ts, body.ts)).fetchone()
    with db.conn:
        cur = db.conn.execute(
            "INSERT INTO flags (agent, box, ts, note, author, created_ts, shared) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (agent, box[0] if box else None, body.ts, body.note.strip(), user.username,
             time.time(), int(body.shared)))
    flag_id = int(cur.lastrowid or 0)
    access.audit(db, user, "flag_create", agent, {"flag": flag_id, "shared": body.shared})
    return flag_id


def add_goal(db: Any, user: User, agent: str, body: GoalIn) -> int:
    """Set a focus goal (at most two active per agent; the oldest is retired; audited)."""
    require_role(user, "admin", "supervisor")
    access.require_agent(db, user, agent)
    if body.metric not in analytics.metric_names(db):
        raise HTTPException(status_code=422, detail=f"unknown metric {body.metric!r}")
    if not registry.goal_metric(body.metric):
        raise HTTPException(status_code=422,
                            detail=f"metric {body.metric!r} cannot be a goal: its daily mean "
                                   "says nothing of the agent's")
    with store.write_transaction(db):  # the goals read active are still the active ones
        active = [r[0] for r in db.conn.execute(
            "SELECT id FROM goals WHERE agent = ? AND active = 1 ORDER BY created_ts",
            (agent,)).fetchall()]
        for old in active[:max(0, len(active) - 1)]:
            db.conn.execute("UPDATE goals SET active = 0 WHERE id = ?", (old,))
        cur = db.conn.execute(
            "INSERT INTO goals (agent, metric, label, direction, author, created_ts) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (agent, body.metric, body.label.strip(), body.direction, user.username, time.time()))
    goal_id = int(cur.lastrowid or 0)
    access.audit(db, user, "goal_set", agent,
                 {"goal": goal_id, "metric": body.metric, "retired": active[:max(0, len(active) - 1)]})
    return goal_id


def _closed_campaign(db: Any, campaign: str | None) -> bool:
    """True if ``campaign`` (a call's; None for none) is closed."""
    row = None if campaign is None else db.conn.execute(
        "SELECT closed_ts FROM campaigns WHERE campaign = ?", (campaign,)).fetchone()
    return row is not None and row[0] is not None


def set_outcome(db: Any, user: User, call_id: int, outcome: str | None) -> None:
    """Tag a call's outcome, or take it off with None (the agent themself, their supervisors,
    admins; audited when it changes). The outcome of a call of a closed campaign is frozen for
    everyone (409): its comparison stays as it was closed."""
    call = _require_call(db, user, call_id)
    require_role(user, "admin", "supervisor", "agent")
    if outcome is not None and outcome not in analytics.OUTCOMES:
        raise HTTPException(status_code=422, detail=f"outcome must be one of {analytics.OUTCOMES}")
    if outcome is None and call["outcome"] is None:
        return  # nothing was tagged: nothing to take back
    with store.write_transaction(db):  # a close meanwhile is seen: nothing changes after it
        if _closed_campaign(db, call["campaign"]):
            raise HTTPException(status_code=409, detail="campaign is closed")
        db.conn.execute("UPDATE calls SET outcome = ?, outcome_by = ?, outcome_ts = ? WHERE id = ?",
                        (outcome, user.username, time.time(), call_id))
    access.audit(db, user, "call_outcome", call["agent"],
                 {"call": call_id, "outcome": outcome, "was": call["outcome"]})


NO_SEAT = "no_seat"
"""Why the private switch was not sent: the agent sits at no seat, so there is no box to tell."""
UNREACHABLE = "unreachable"
"""Why the private switch was not sent: the agent's box is offline or out of the broker's reach."""


def set_private(request: Request, db: Any, user: User, private: bool) -> str | None:
    """The agent's private switch: tell the agent's box, and store it once sent; return None if
    sent, else why not (:data:`NO_SEAT`, :data:`UNREACHABLE`)."""
    require_role(user, "agent")
    agent = user.agent or ""
    access.require_agent(db, user, agent)
    row = db.conn.execute("SELECT box FROM seats WHERE agent = ?", (agent,)).fetchone()
    if row is None:
        log.info("agent %s has no seat: private switch not sent", agent)
        return NO_SEAT
    box = db.conn.execute("SELECT state, last_seen_ts FROM boxes WHERE box = ?",
                          (row[0],)).fetchone()
    if not box or fleet.is_offline({"state": box[0], "last_seen_ts": box[1]}, time.time()):
        # its MQTT session is clean: a command sent while it is away never reaches it
        log.info("box of agent %s offline: private switch not sent", agent)
        return UNREACHABLE
    if not commands.send_command(request.app, row[0], "private_on" if private else "private_off"):
        return UNREACHABLE  # the seat shows what the box was told, never a privacy it lacks
    with db.conn:
        db.conn.execute("UPDATE agents SET private = ? WHERE agent = ?", (int(private), agent))
    return None


def team_board(db: Any, user: User, team: str, days: int = 14) -> dict[str, Any]:
    """Each agent's progress against their own baseline (alphabetical, never a ranking)."""
    access.require_team(db, user, team)
    agents = list(db.query("SELECT agent, name FROM agents WHERE team = ? ORDER BY name, agent",
                           [team]))
    names = analytics.metric_names(db)
    out = []
    for a in agents:
        goals = list(db.query("SELECT metric, label, direction FROM goals WHERE agent = ? "
                              "AND active = 1", [a["agent"]]))
        items = []
        for g in goals:
            series = analytics.daily_means(db, a["agent"], g["metric"], days)
            items.append({**g, "progress": analytics.progress(series, g["direction"]),
                          "days": len(series)})
        out.append({**a, "goals": items})
    shared = list(db.query(
        "SELECT f.id, f.agent, a.name, f.ts, f.note, f.author FROM flags f JOIN agents a ON "
        "a.agent = f.agent WHERE a.team = ? AND f.shared = 1 ORDER BY f.ts DESC LIMIT 20",
        [team]))
    since = time.time() - 86400
    debrief = {
        "calls": db.conn.execute("SELECT count(*) FROM calls c JOIN agents a ON a.agent = c.agent "
                                 "WHERE a.team = ? AND c.start_ts >= ?", (team, since)).fetchone()[0],
        "meetings": db.conn.execute(
            "SELECT count(*) FROM calls c JOIN agents a ON a.agent = c.agent WHERE a.team = ? "
            "AND c.start_ts >= ? AND c.outcome = 'meeting'", (team, since)).fetchone()[0],
        "flags": db.conn.execute("SELECT count(*) FROM flags f JOIN agents a ON a.agent = f.agent "
                                 "WHERE a.team = ? AND f.created_ts >= ?",
                                 (team, since)).fetchone()[0],
        # the calls the team's boxes heard start (their call_start events), at the seats of the
        # team's agents then: a site without a phone system feed (CTI) has no other count
        "calls_heard": db.conn.execute(
            "SELECT count(*) FROM events e JOIN seat_history h ON e.box = h.box AND e.ts >= h.from_ts "
            "AND (h.to_ts IS NULL OR e.ts < h.to_ts) JOIN agents a ON a.agent = h.agent "
            "WHERE a.team = ? AND e.ts >= ? AND e.name = 'call_start'", (team, since)).fetchone()[0],
    }
    return {"team": team, "agents": out, "shared": shared, "debrief": debrief,
            "metrics": names}


def audit_board(db: Any, user: User, board: dict[str, Any]) -> None:
    """Log a team board read in the audit log of each agent it shows (their goals' progress,
    their shared moments), as a read of their data; once for the team if it has no agent."""
    agents = [a["agent"] for a in board["agents"]] or [None]
    for agent in agents:
        access.audit(db, user, "team_board", agent, {"team": board["team"]})


MIN_GROUP_AGENTS = analytics.MIN_GROUP_AGENTS
"""Fewest agents behind a team aggregate for a reader who may not see each of them (see
:data:`analytics.MIN_GROUP_AGENTS`)."""


def aggregates(db: Any, user: User) -> list[dict[str, Any]]:
    """Per team and metric, the mean over agent-days (:func:`analytics.team_means`: rolled-up
    and recent days alike; no per-agent values); ``mean`` is
    None and ``withheld`` says why when fewer than :data:`MIN_GROUP_AGENTS` agents are behind
    it and the reader may not see each of the team's agents anyway (an admin, a team's own
    supervisor get every mean)."""
    teams = [t["team"] for t in access.visible_teams(db, user)]
    visible = access.visible_agents(db, user)
    out = []
    for team in teams:
        sees_each = visible is None or {r[0] for r in db.conn.execute(
            "SELECT agent FROM agents WHERE team = ?", (team,))} <= set(visible)
        shown: list[set[str]] = []
        for name, (mean, behind) in analytics.team_means_by(db, team).items():
            agents = len(behind)
            withheld = "too few agents" if mean is not None and agents < MIN_GROUP_AGENTS \
                and not sees_each else None
            out.append({"team": team, "metric": name, "mean": None if withheld else mean,
                        "agents": agents, "withheld": withheld})
            if mean is not None and not withheld:
                shown.append(behind)
        audit_small_groups(db, user, "read_team_means", shown, {"team": team})
    return out


def audit_small_groups(db: Any, user: User, action: str, groups: list[set[str]],
                       detail: dict[str, Any]) -> None:
    """Log a read of figures of which some come from fewer than :data:`MIN_GROUP_AGENTS`
    agents (a figure of one or two agents is their own data, docs/privacy.md) in the audit log
    of each of those agents: one entry per agent and read, however many such figures."""
    agents: set[str] = set()
    for group in groups:
        if len(group) < MIN_GROUP_AGENTS:
            agents |= group
    for agent in sorted(agents):
        access.audit(db, user, action, agent, detail)


def attachment(filename: str) -> str:
    """A Content-Disposition for a download named ``filename`` (RFC 6266): an ASCII fallback
    with anything but letters, digits, '.', '_' and '-' made '_', and the exact name as
    ``filename*`` (RFC 5987, UTF-8, percent-encoded). Team and agent ids come from the inventory
    as free text: a quote cannot add parameters, a non-Latin-1 character cannot fail the header."""
    fallback = _UNSAFE_FILENAME.sub("_", filename) or "export"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


def _streamed(settings: Any, chunks: Callable[[Any], Iterator[str]], media_type: str,
              headers: dict[str, str] | None = None) -> StreamingResponse:
    """An export written as it is read from SQLite (a connection of its own), never whole in
    memory."""
    return StreamingResponse(retention.stream_export(settings.db_path, chunks),
                             media_type=media_type, headers=headers)


# ---------------------------------------------------------------------------- routes
@router.get("/me")
def me(user: CurrentUser) -> dict[str, Any]:
    """The logged-in user: name, role, agent id, teams, language."""
    return {"username": user.username, "role": user.role, "agent": user.agent,
            "teams": sorted(user.teams), "lang": user.lang}


@router.get("/metrics/registry")
def metrics_registry(db: Db, user: CurrentUser) -> dict[str, Any]:
    """Metrics the boxes publish that the dashboard charts, with labels and units."""
    return {"metrics": [registry.describe(n, user.lang) for n in analytics.metric_names(db)]}


@router.get("/floor")
def floor(db: Db, user: CurrentUser, settings: Settings,
          pseudonymous: bool | None = None) -> dict[str, Any]:
    """Seats of the floor the user may see, with the site's layout."""
    require_role(user, "admin", "supervisor")
    data = floor_data(db, user, settings.site, pseudonymous)
    access.audit(db, user, "floor", None, {"seats": len(data["seats"])})
    return data


@router.get("/agents")
def list_agents(db: Db, user: CurrentUser) -> dict[str, Any]:
    """Agents the user may see one by one."""
    scope = access.visible_agents(db, user)
    rows = list(db.query("SELECT agent, name, team, campaign, active FROM agents ORDER BY agent"))
    if scope is not None:
        rows = [r for r in rows if r["agent"] in scope]
    return {"agents": rows}


@router.get("/agents/{agent:id}/metrics")
def get_agent_metrics(db: Db, user: CurrentUser, agent: AgentId,
                      since_ts: Annotated[float, PlainDecimal, Query(ge=0, allow_inf_nan=False)] = 0.0,
                      until_ts: Annotated[float | None, PlainDecimal, Query(allow_inf_nan=False)] = None
                      ) -> dict[str, Any]:
    """The agent's metrics rows, cue markers and flags (audited)."""
    access.require_agent(db, user, agent)
    access.audit(db, user, "read_metrics", agent, {"since_ts": since_ts})
    return agent_metrics_payload(db, user, agent, since_ts, until_ts)


@router.get("/agents/{agent:id}/moment")
def get_moment(db: Db, user: CurrentUser, agent: AgentId,
               ts: Annotated[float, PlainDecimal, Query(allow_inf_nan=False)],
               span_s: Annotated[float, PlainDecimal, Query(gt=0, le=300)] = 30.0) -> dict[str, Any]:
    """Audio-free replay of a moment: the contours ``span_s`` around ``ts`` (audited)."""
    access.require_agent(db, user, agent)
    access.audit(db, user, "moment_replay", agent, {"ts": ts})
    return agent_metrics_payload(db, user, agent, ts - span_s, ts + span_s)


FLAGS_PAGE = 100
"""An agent's flags the agent page shows, and a page of ``GET /api/agents/{agent}/flags`` unless
``?limit=`` says otherwise."""
MAX_FLAGS_LIMIT = 500
"""The most flags one page of ``GET /api/agents/{agent}/flags`` gives (``?limit=``)."""


def _agent_page(db: Any, table: str, time_col: str, agent: str, limit: int,
                before: int | None) -> dict[str, Any]:
    """One page of the agent's rows of ``table`` (flags, calls), newest first (by ``time_col``,
    then id), those after the row ``before`` in that order (404 unless it is one of the
    agent's): ``rows``, ``total``, ``more``, ``before`` and the ``before`` of the next page
    (``next_before``, None on the last)."""
    where, args = "agent = ?", [agent]
    if before is not None:
        pivot = db.conn.execute(f"SELECT {time_col}, id FROM {table} WHERE id = ? AND agent = ?",
                                (before, agent)).fetchone()
        if pivot is None:
            raise access.not_found(table.removesuffix("s"))
        where += f" AND ({time_col}, id) < (?, ?)"
        args += [pivot[0], pivot[1]]
    rows = list(db.query(f"SELECT * FROM {table} WHERE {where} "
                         f"ORDER BY {time_col} DESC, id DESC LIMIT ?", [*args, limit + 1]))
    more = len(rows) > limit
    rows = rows[:limit]
    total = db.conn.execute(f"SELECT count(*) FROM {table} WHERE agent = ?", (agent,)).fetchone()[0]
    return {"rows": rows, "total": int(total), "more": more, "before": before,
            "next_before": rows[-1]["id"] if more else None}


def flags_page(db: Any, agent: str, limit: int, before: int | None) -> dict[str, Any]:
    """One page of the agent's flags, newest first (by time, then id), those after the flag
    ``before`` in that order (404 unless it is one of the agent's), with ``total``, ``more`` and
    the ``before`` of the next page (``next_before``, None on the last)."""
    page = _agent_page(db, "flags", "ts", agent, limit, before)
    return {"flags": page.pop("rows"), **page}


@router.get("/agents/{agent:id}/flags")
def get_flags(db: Db, user: CurrentUser, agent: AgentId,
              before: Annotated[int | None, PlainWhole, Query(ge=1, le=MAX_ID)] = None,
              limit: Annotated[int, PlainWhole, Query(ge=1, le=MAX_FLAGS_LIMIT)] = FLAGS_PAGE
              ) -> dict[str, Any]:
    """The agent's flagged moments, newest first, ``limit`` a page.

    ``flags``: the newest ``limit`` after the flag ``before`` (from the newest without it; 404
    if it is not one of the agent's); ``total``: the agent's flags in all;
    ``more``/``next_before``: the ``before`` of the next page (None on the last).
    """
    access.require_agent(db, user, agent)
    access.audit(db, user, "read_flags", agent)
    return flags_page(db, agent, limit, before)


@router.post("/agents/{agent:id}/flags", status_code=201)
def post_flag(db: Db, user: CurrentUser, agent: AgentId, body: FlagIn) -> dict[str, Any]:
    """Flag a moment with a note (supervisors, admins)."""
    return {"id": add_flag(db, user, agent, body)}


@router.get("/flags/{flag_id}")
def get_flag(db: Db, user: CurrentUser, flag_id: RowId) -> dict[str, Any]:
    """One flagged moment."""
    flag = _require_flag(db, user, flag_id)
    access.audit(db, user, "read_flags", flag["agent"], {"flag": flag_id})
    return flag


@router.get("/agents/{agent:id}/goals")
def get_goals(db: Db, user: CurrentUser, agent: AgentId) -> dict[str, Any]:
    """The agent's focus goals with each goal's daily series."""
    access.require_agent(db, user, agent)
    access.audit(db, user, "read_goals", agent)
    goals = list(db.query("SELECT * FROM goals WHERE agent = ? ORDER BY created_ts DESC", [agent]))
    for g in goals:
        g["series"] = analytics.daily_means(db, agent, g["metric"])
    return {"goals": goals}


@router.post("/agents/{agent:id}/goals", status_code=201)
def post_goal(db: Db, user: CurrentUser, agent: AgentId, body: GoalIn) -> dict[str, Any]:
    """Set a focus goal (at most two active)."""
    return {"id": add_goal(db, user, agent, body)}


@router.get("/goals/{goal_id}")
def get_goal(db: Db, user: CurrentUser, goal_id: RowId) -> dict[str, Any]:
    """One goal with its metric's daily means."""
    goal = _require_goal(db, user, goal_id)
    access.audit(db, user, "read_goals", goal["agent"], {"goal": goal_id})
    goal["series"] = analytics.daily_means(db, goal["agent"], goal["metric"])
    return goal


MAX_CALLS_LIMIT = 500
"""Most calls one page of ``GET /api/agents/{agent}/calls`` gives (and its default)."""


def calls_page(db: Any, agent: str, limit: int, before: int | None) -> dict[str, Any]:
    """One page of the agent's calls, newest first (by start, then id), those after the call
    ``before`` in that order (404 unless it is one of the agent's), with ``total``, ``more`` and
    the ``before`` of the next page (``next_before``, None on the last)."""
    page = _agent_page(db, "calls", "start_ts", agent, limit, before)
    calls = page.pop("rows")
    for c in calls:
        c["summary"] = json.loads(c["summary"]) if c.get("summary") else None
    return {"calls": calls, **page}


@router.get("/agents/{agent:id}/calls")
def get_calls(db: Db, user: CurrentUser, agent: AgentId,
              before: Annotated[int | None, PlainWhole, Query(ge=1, le=MAX_ID)] = None,
              limit: Annotated[int, PlainWhole, Query(ge=1, le=MAX_CALLS_LIMIT)]
              = MAX_CALLS_LIMIT) -> dict[str, Any]:
    """The agent's calls with their summaries and outcomes, newest first, ``limit`` a page.

    ``calls``: the newest ``limit`` after the call ``before`` (from the newest without it; 404
    if it is not one of the agent's); ``total``: the agent's calls in all;
    ``more``/``next_before``: the ``before`` of the next page (None on the last).
    """
    access.require_agent(db, user, agent)
    access.audit(db, user, "read_calls", agent)
    return calls_page(db, agent, limit, before)


@router.post("/calls", status_code=201)
def post_call(db: Db, user: CurrentUser, body: CallIn) -> dict[str, Any]:
    """Record a call (CTI connector run by an admin, or a supervisor).

    Without a campaign or variant, the call takes the agent's current (open) campaign and
    variant if the user may change that campaign; a given variant must belong to the given
    campaign, which must be open and one the user may change (404 otherwise), of the agent's team
    if it has one (422 otherwise). Audited, with the creator in the call's ``created_by``.
    """
    require_role(user, "admin", "supervisor")
    access.require_agent(db, user, body.agent)
    if _ahead(body.start_ts, body.end_ts):
        raise HTTPException(status_code=422, detail="a call cannot start or end more than a day "
                                                    "ahead of the dashboard's clock")
    campaign, variant = _call_campaign(db, user, body)
    with db.conn:
        cur = db.conn.execute(
            "INSERT INTO calls (agent, box, start_ts, end_ts, campaign, variant, summary, "
            "created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (body.agent, body.box, body.start_ts, body.end_ts, campaign, variant,
             json.dumps(body.summary) if body.summary else None, user.username))
    access.audit(db, user, "call_create", body.agent,
                 {"call": cur.lastrowid, "campaign": campaign, "variant": variant})
    return {"id": cur.lastrowid}


@router.get("/calls/{call_id}")
def get_call(db: Db, user: CurrentUser, call_id: RowId) -> dict[str, Any]:
    """One call."""
    call = _require_call(db, user, call_id)
    access.audit(db, user, "read_calls", call["agent"], {"call": call_id})
    return call


@router.post("/calls/{call_id}/outcome")
def post_outcome(db: Db, user: CurrentUser, call_id: RowId, body: OutcomeIn) -> dict[str, Any]:
    """Tag a call's outcome (null takes a tag back off); a closed campaign's calls keep theirs
    (409)."""
    set_outcome(db, user, call_id, body.outcome)
    return {"id": call_id, "outcome": body.outcome}


@router.post("/calls/{call_id}/variant")
def post_call_variant(db: Db, user: CurrentUser, call_id: RowId,
                      body: CallVariantIn) -> dict[str, Any]:
    """Tag a call with the pitch or opener variant used (its campaign must be open, and of the
    call's agent's team if it has one)."""
    campaign = set_call_variant(db, user, call_id, body.variant)
    return {"id": call_id, "campaign": campaign, "variant": body.variant}


@router.get("/agents/{agent:id}/audit")
def get_agent_audit(db: Db, user: CurrentUser, agent: AgentId,
                    before: Annotated[int | None, PlainWhole, Query(ge=1, le=MAX_ID)] = None,
                    limit: Annotated[int, PlainWhole, Query(ge=1, le=1000)] = 200) -> dict[str, Any]:
    """Who looked at the agent's data and when (the agent, admins and auditors).

    ``entries``: the newest ``limit`` entries older than the entry ``before`` (all without it);
    ``total``: entries about the agent in all; ``more``/``next_before``: the ``before`` of the
    next page; ``summary``: each (actor, action) with its count, first and last time, so no
    entry is hidden by a flood of others.
    """
    if user.role not in ("admin", "auditor"):
        access.require_agent(db, user, agent)
        if user.role != "agent":
            raise access.not_found("agent")
    elif not db.conn.execute("SELECT 1 FROM agents WHERE agent = ?", (agent,)).fetchone():
        raise access.not_found("agent")
    return access.audit_page(db, agent, limit, before)


@router.get("/agents/{agent:id}/export.csv")
def export_agent_csv(db: Db, user: CurrentUser, settings: Settings, agent: AgentId,
                     excel: bool = False) -> Response:
    """The agent's per-second metrics as CSV (audited); ``excel=1``: as Excel in the user's
    language opens it in columns (``retention.metrics_excel_chunks``)."""
    access.require_agent(db, user, agent)
    access.audit(db, user, "export_csv", agent)
    return _metrics_csv(settings, [agent], agent, user.lang if excel else None)


def _metrics_csv(settings: Settings, agents: list[str], name: str,
                 excel_lang: str | None) -> Response:
    """The metrics CSV of ``agents`` named ``name``: the standard one, or Excel's in
    ``excel_lang``."""
    if excel_lang is None:
        return _streamed(settings, lambda d: retention.metrics_csv_chunks(d, agents),
                         "text/csv; charset=utf-8",
                         {"content-disposition": attachment(f"{name}.csv")})
    return _streamed(settings, lambda d: retention.metrics_excel_chunks(d, agents, excel_lang),
                     "text/csv; charset=utf-8",
                     {"content-disposition": attachment(f"{name}-excel.csv")})


@router.get("/agents/{agent:id}/export.json")
def export_agent_json(db: Db, user: CurrentUser, settings: Settings,
                      agent: AgentId) -> Response:
    """Everything stored about the agent (right of access; the agent or an admin), streamed:
    agent, account, login_attempts, sessions, known_browsers, seat_history, metrics, events
    (every stored field), daily_aggregates, calls, flags, goals, audit_log."""
    access.require_agent(db, user, agent)
    require_role(user, "admin", "agent")
    access.audit(db, user, "export_all", agent)
    return _streamed(settings, lambda d: retention.agent_export_chunks(d, agent),
                     "application/json")


@router.post("/agents/{agent:id}/erase")
def erase_agent(request: Request, db: Db, user: CurrentUser, agent: AgentId) -> dict[str, Any]:
    """Erase an agent who left (admins only): answered once nothing of theirs is reachable,
    with the rows deleted and the per-second rows left, which the purge loop then deletes
    (``GET /api/erasures`` follows it)."""
    require_role(user, "admin")
    access.require_agent(db, user, agent)
    access.audit(db, user, "erase", agent)
    deleted = retention.begin_erasure(db, agent)
    begun = request.app.state.erasure_begun
    if begun is None:  # no purge loop (an app not started): finished here, as before
        deleted.update(retention.finish_erasures(db))
    retention.flush_deleted(db)  # their name, account and notes out of the files at once
    left = retention.erasure_rows_left(db)
    if begun is not None:
        begun()
    return {"deleted": deleted, "left": left}


@router.get("/erasures")
def get_erasures(db: Db, user: CurrentUser) -> dict[str, Any]:
    """The per-second rows that erasures under way have still to delete (admins only)."""
    require_role(user, "admin")
    return {"left": retention.erasure_rows_left(db)}


# Last of the agent routes: its path takes the rest of the URL. An agent id is one path segment
# (miroir.labels), but one an older import let in with a "/" still reaches every route above,
# and written with %2F reaches this one even when it ends like one of them (routes/ids.py).
@router.get("/agents/{agent:id}")
def get_agent(db: Db, user: CurrentUser, agent: AgentId) -> dict[str, Any]:
    """One agent (audited)."""
    row = access.require_agent(db, user, agent)
    access.audit(db, user, "view_agent", agent)
    row["private"] = access.private_mode(db, agent, row)
    return row


@router.post("/me/private")
def post_private(request: Request, db: Db, user: CurrentUser, body: PrivateIn) -> dict[str, Any]:
    """The agent's private-call switch; the box is told on its ``cmd`` topic. ``sent`` False says
    why in ``unsent``: ``no_seat`` (the agent sits at no seat) or ``unreachable`` (the box is
    offline: its own button works)."""
    unsent = set_private(request, db, user, body.private)
    return {"private": body.private, "sent": unsent is None, "unsent": unsent}


@router.get("/teams")
def list_teams(db: Db, user: CurrentUser) -> dict[str, Any]:
    """Teams the user may open."""
    return {"teams": access.visible_teams(db, user)}


@router.get("/teams/{team:id}/board")
def get_team_board(db: Db, user: CurrentUser, team: TeamId) -> dict[str, Any]:
    """Progress of each agent against their own baseline, shared moments, daily debrief."""
    require_role(user, "admin", "supervisor")
    board = team_board(db, user, team)
    audit_board(db, user, board)
    return board


@router.get("/teams/{team:id}/export.csv")
def export_team_csv(db: Db, user: CurrentUser, settings: Settings, team: TeamId,
                    excel: bool = False) -> Response:
    """The team's per-second metrics as CSV (audited per agent); ``excel=1`` as for an agent's."""
    require_role(user, "admin", "supervisor")
    access.require_team(db, user, team)
    agents = [r[0] for r in db.conn.execute("SELECT agent FROM agents WHERE team = ? "
                                            "ORDER BY agent", (team,)).fetchall()]
    for a in agents:
        access.audit(db, user, "export_csv", a, {"team": team})
    return _metrics_csv(settings, agents, team, user.lang if excel else None)


CAMPAIGNS_LIMIT = 100
"""Campaigns a page of ``GET /api/campaigns`` gives unless ``limit`` says otherwise."""
MAX_CAMPAIGNS_LIMIT = 500
"""Most campaigns one page of ``GET /api/campaigns`` gives (each with up to
:data:`MAX_VARIANTS` variants)."""


@router.get("/campaigns")
def list_campaigns(db: Db, user: CurrentUser,
                   after: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
                   limit: Annotated[int, PlainWhole, Query(ge=1, le=MAX_CAMPAIGNS_LIMIT)]
                   = CAMPAIGNS_LIMIT) -> dict[str, Any]:
    """Campaigns the user may see, with their variants, by id, ``limit`` a page.

    ``campaigns``: the first ``limit`` whose id sorts after ``after`` (from the first without
    it); ``total``: campaigns the user may see in all; ``more``/``next_after``: the ``after`` of
    the next page (None on the last).
    """
    where, args = _seen_campaigns_sql(user)
    total = int(db.conn.execute(f"SELECT count(*) FROM campaigns WHERE {where}",
                                args).fetchone()[0])
    since = "" if after is None else "AND campaign > ? "
    rows = list(db.query(f"SELECT * FROM campaigns WHERE {where} {since}ORDER BY campaign "
                         "LIMIT ?", [*args, *([] if after is None else [after]), limit + 1]))
    more = len(rows) > limit
    rows = rows[:limit]
    variants: dict[str, list[dict[str, Any]]] = {c["campaign"]: [] for c in rows}
    if rows:
        marks = ",".join("?" for _ in rows)
        for v in db.query(f"SELECT campaign, id, name, text FROM variants WHERE campaign IN "
                          f"({marks}) ORDER BY campaign, id", list(variants)):
            variants[v.pop("campaign")].append(v)
    for c in rows:
        c["variants"] = variants[c["campaign"]]
    return {"campaigns": rows, "total": total, "more": more, "after": after,
            "next_after": rows[-1]["campaign"] if more else None}


@router.post("/campaigns", status_code=201)
def post_campaign(db: Db, user: CurrentUser, body: CampaignIn) -> dict[str, Any]:
    """Create a campaign with its variants (admins; supervisors for their teams)."""
    create_campaign(db, user, body)
    return get_campaign(db, user, body.campaign)


@router.get("/campaigns/{campaign}")
def get_campaign(db: Db, user: CurrentUser, campaign: str) -> dict[str, Any]:
    """One campaign with its variants."""
    c = require_campaign(db, user, campaign)
    c["variants"] = list(db.query("SELECT id, name, text FROM variants WHERE campaign = ? "
                                  "ORDER BY id", [campaign]))
    return c


@router.post("/campaigns/{campaign}/variants", status_code=201)
def post_variant(db: Db, user: CurrentUser, campaign: str, body: VariantIn) -> dict[str, Any]:
    """Add a variant to an open campaign."""
    return {"id": add_variant(db, user, campaign, body)}


@router.post("/campaigns/{campaign}/assign")
def post_assign(db: Db, user: CurrentUser, campaign: str, body: AssignIn) -> dict[str, Any]:
    """Put an agent (of its team, if it has one) on the campaign and a variant; their next calls
    are tagged with them."""
    assign_agent(db, user, campaign, body)
    return {"agent": body.agent, "campaign": campaign, "variant": body.variant}


@router.post("/campaigns/{campaign}/close")
def post_close(db: Db, user: CurrentUser, campaign: str) -> dict[str, Any]:
    """Close the campaign: its comparison stays, nothing new is tagged with it."""
    return {"campaign": campaign, "closed_ts": close_campaign(db, user, campaign)}


@router.get("/campaigns/{campaign}/comparison")
def get_comparison(db: Db, user: CurrentUser, campaign: str) -> dict[str, Any]:
    """Variants by meeting rate with 95 % Wilson intervals (the user's agents only); a variant
    whose calls come from fewer than :data:`MIN_GROUP_AGENTS` agents is withheld from a user who
    may not see each of them (an auditor): ``withheld`` "too few agents", no count, no rate."""
    c = require_campaign(db, user, campaign)
    visible = access.visible_agents(db, user)
    scope = visible if user.role == "supervisor" else None
    variants = analytics.variant_comparison(db, campaign, scope, visible)
    behind = analytics.variant_agents(db, campaign, scope)
    audit_small_groups(db, user, "read_variant_results",
                       [behind.get(v["variant"], set()) for v in variants
                        if v["calls"] and v["withheld"] is None], {"campaign": campaign})
    return {**c, "variants": variants}


@router.get("/audit")
def get_audit(db: Db, user: CurrentUser,
              before: Annotated[int | None, PlainWhole, Query(ge=1, le=MAX_ID)] = None,
              limit: Annotated[int, PlainWhole, Query(ge=1, le=5000)] = 500) -> dict[str, Any]:
    """The audit log, newest first (auditors and admins), ``limit`` a page.

    ``entries``: the newest ``limit`` entries older than the entry ``before`` (from the newest
    without it); ``total``: entries in all; ``more``/``next_before``: the ``before`` of the next
    page (None on the last); ``newer_before``: that of the page before (None: the first).
    """
    require_role(user, "admin", "auditor")
    return access.audit_log_page(db, None, limit, before)


@router.get("/aggregates")
def get_aggregates(db: Db, user: CurrentUser) -> dict[str, Any]:
    """Per-team means of every metric, no per-agent value (auditors, admins, supervisors)."""
    require_role(user, "admin", "auditor", "supervisor")
    return {"aggregates": aggregates(db, user)}
