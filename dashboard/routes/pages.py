"""Server-rendered pages: floor, agent view and self-view, team board, campaigns, audit."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from .. import access, analytics, registry, schema
from ..access import User
from . import api
from .deps import CurrentUser, Db, Settings, render, require_role
from .session import safe_next

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/")
def home(request: Request, db: Db, user: CurrentUser, settings: Settings) -> Response:
    """The live floor for admins and supervisors; agents go to their view, auditors to the log."""
    if user.role == "agent":
        return RedirectResponse("/me", status_code=303)
    if user.role == "auditor":
        return RedirectResponse("/audit", status_code=303)
    return render(request, "floor.html", {
        "site": settings.site, "teams": access.visible_teams(db, user),
        "pseudonymous_default": api._pseudonymous_default(db),
        "is_admin": user.role == "admin"})


def _agent_context(db: Db, user: User, agent: str, self_view: bool) -> dict[str, Any]:
    row = access.require_agent(db, user, agent)
    seat = db.conn.execute("SELECT box, label FROM seats WHERE agent = ?", (agent,)).fetchone()
    flags = list(db.query("SELECT * FROM flags WHERE agent = ? ORDER BY ts DESC LIMIT 100",
                          [agent]))
    goals = list(db.query("SELECT * FROM goals WHERE agent = ? AND active = 1 "
                          "ORDER BY created_ts", [agent]))
    for g in goals:
        g["series"] = analytics.daily_means(db, agent, g["metric"])
        g["label_metric"] = (registry.describe(g["metric"], user.lang)["label"]
                             if registry.known(g["metric"]) else g["metric"])
    calls = list(db.query("SELECT * FROM calls WHERE agent = ? ORDER BY start_ts DESC LIMIT 50",
                          [agent]))
    show_audit = self_view or user.role == "admin"
    return {
        "agent": row, "seat": {"box": seat[0], "label": seat[1]} if seat else None,
        "flags": flags, "goals": goals, "calls": calls, "self_view": self_view,
        "can_coach": user.supervises and not self_view,
        "metrics": [registry.describe(n, user.lang) for n in analytics.metric_names(db)],
        "outcomes": analytics.OUTCOMES, "now_ts": time.time(),
        "audit": access.audit_entries(db, agent, 100) if show_audit else None,
    }


@router.get("/agents/{agent}")
def agent_page(request: Request, db: Db, user: CurrentUser, agent: str) -> Response:
    """An agent's shift, calls, flags and goals (audited)."""
    require_role(user, "admin", "supervisor")
    ctx = _agent_context(db, user, agent, self_view=False)
    access.audit(db, user, "view_agent", agent)
    return render(request, "agent.html", ctx)


@router.get("/me")
def me_page(request: Request, db: Db, user: CurrentUser) -> Response:
    """The agent's own view: what supervisors see, who looked, the private switch."""
    require_role(user, "agent")
    return render(request, "agent.html", _agent_context(db, user, user.agent or "", True))


@router.post("/agents/{agent}/flags")
def flag_form(request: Request, db: Db, user: CurrentUser, agent: str,
              ts: Annotated[float, Form()], note: Annotated[str, Form(max_length=2000)] = "",
              shared: Annotated[str, Form(max_length=4)] = "") -> Response:
    """Flag a moment from the agent page."""
    api.add_flag(db, user, agent, api.FlagIn(ts=ts, note=note, shared=bool(shared)))
    return RedirectResponse(f"/agents/{agent}#flags", status_code=303)


@router.post("/agents/{agent}/goals")
def goal_form(request: Request, db: Db, user: CurrentUser, agent: str,
              metric: Annotated[str, Form(max_length=64)],
              label: Annotated[str, Form(max_length=120)],
              direction: Annotated[str, Form(max_length=4)] = "down") -> Response:
    """Set a focus goal from the agent page."""
    api.add_goal(db, user, agent, api.GoalIn(metric=metric, label=label, direction=direction))
    return RedirectResponse(f"/agents/{agent}#goals", status_code=303)


@router.post("/calls/{call_id}/outcome")
def outcome_form(request: Request, db: Db, user: CurrentUser, call_id: int,
                 outcome: Annotated[str, Form(max_length=16)],
                 next: Annotated[str, Form(max_length=512)] = "/") -> Response:
    """Tag a call's outcome from a page."""
    api.set_outcome(db, user, call_id, outcome)
    return RedirectResponse(safe_next(next), status_code=303)


@router.post("/me/private")
def private_form(request: Request, db: Db, user: CurrentUser,
                 private: Annotated[str, Form(max_length=4)] = "0") -> Response:
    """The agent's private-call switch."""
    api.set_private(request, db, user, private == "1")
    return RedirectResponse("/me", status_code=303)


@router.get("/teams/{team}")
def team_page(request: Request, db: Db, user: CurrentUser, team: str) -> Response:
    """The team board: progress against each agent's own baseline, shared moments, debrief."""
    require_role(user, "admin", "supervisor")
    board = api.team_board(db, user, team)
    access.audit(db, user, "team_board", None, {"team": team})
    return render(request, "team.html", {"board": board})


@router.get("/campaigns")
def campaigns_page(request: Request, db: Db, user: CurrentUser) -> Response:
    """Campaigns and their variants."""
    require_role(user, "admin", "supervisor", "auditor")
    return render(request, "campaigns.html", {"campaigns": api.list_campaigns(db, user)
                                              ["campaigns"], "comparison": None})


@router.get("/campaigns/{campaign}")
def campaign_page(request: Request, db: Db, user: CurrentUser, campaign: str) -> Response:
    """Variant comparison by meeting rate with 95 % confidence intervals."""
    require_role(user, "admin", "supervisor", "auditor")
    data = api.get_comparison(db, user, campaign)
    return render(request, "campaigns.html", {"campaigns": api.list_campaigns(db, user)
                                              ["campaigns"], "comparison": data})


@router.get("/audit")
def audit_page(request: Request, db: Db, user: CurrentUser) -> Response:
    """The audit log and per-team aggregates (auditors, admins)."""
    require_role(user, "admin", "auditor")
    return render(request, "audit.html", {
        "entries": access.audit_entries(db, None, 500), "aggregates": api.aggregates(db, user),
        "metrics": {n: registry.describe(n, user.lang)
                    for n in analytics.metric_names(db)}})


@router.post("/admin/settings")
def admin_settings(request: Request, db: Db, user: CurrentUser,
                   pseudonymous_default: Annotated[str, Form(max_length=4)] = "0") -> Response:
    """Admin switches (the floor's default pseudonymous mode)."""
    require_role(user, "admin")
    schema.set_setting(db, "pseudonymous_default", "1" if pseudonymous_default == "1" else "0")
    access.audit(db, user, "settings", None, {"pseudonymous_default": pseudonymous_default,
                                             "at": time.time()})
    return RedirectResponse("/", status_code=303)
