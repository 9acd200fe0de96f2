"""Server-rendered pages: floor, agent view and self-view, team board, campaigns, audit."""

from __future__ import annotations

import time
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from miroir.numbers import decimal_number, whole_number

from .. import access, analytics, i18n, registry, schema
from ..access import User
from . import api
from .deps import CurrentUser, Db, PlainDecimal, PlainWhole, Settings, render, require_role
from .session import safe_next

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/")
def home(request: Request, db: Db, user: CurrentUser, settings: Settings) -> Response:
    """The live floor for admins and supervisors; agents go to their view, auditors to the log."""
    if user.role == "agent":
        return RedirectResponse("/me", status_code=303)
    if user.role == "auditor":
        return RedirectResponse("/audit", status_code=303)
    if user.role == "it":
        return RedirectResponse("/it", status_code=303)
    return render(request, "floor.html", {
        "site": settings.site, "teams": access.visible_teams(db, user),
        "pseudonymous_default": api._pseudonymous_default(db),
        "is_admin": user.role == "admin"})


CALLS_PAGE = 50
"""Calls per page of the agent view, newest first (older ones a link away, all in the CSV)."""
CALLS_SHOWN = 10
"""Calls of a page listed at once, its latest; the rest of the page a tap away (a phone)."""
AUDIT_PAGE = 100
"""Audit entries listed per page of the agent view (older ones a link away)."""
AuditBefore = Annotated[int | None, PlainWhole, Query(ge=1, le=api.MAX_ID)]
CallsBefore = Annotated[int | None, PlainWhole, Query(ge=1, le=api.MAX_ID)]
FlagsBefore = Annotated[int | None, PlainWhole, Query(ge=1, le=api.MAX_ID)]


def _calls_page(db: Db, agent: str, before: int | None) -> dict[str, Any]:
    """One page of the agent's calls, newest first: those after the call ``before`` in that
    order (the first page when it is None or not the agent's), with where the page sits among
    them all (``first``, ``last``, ``total``) and the ``before`` of the next page, if any."""
    pivot = before is not None and db.conn.execute(
        "SELECT start_ts, id FROM calls WHERE id = ? AND agent = ?", (before, agent)).fetchone()
    where, args = "c.agent = ?", [agent]
    if pivot:
        where += " AND (c.start_ts, c.id) < (?, ?)"
        args += [pivot[0], pivot[1]]
    rows = list(db.query("SELECT c.*, k.name AS campaign_name, k.closed_ts AS campaign_closed_ts "
                         "FROM calls c LEFT JOIN campaigns k "
                         f"ON k.campaign = c.campaign WHERE {where} "
                         "ORDER BY c.start_ts DESC, c.id DESC LIMIT ?", [*args, CALLS_PAGE + 1]))
    total = db.conn.execute("SELECT count(*) FROM calls WHERE agent = ?", (agent,)).fetchone()[0]
    older = db.conn.execute(f"SELECT count(*) FROM calls c WHERE {where}", args).fetchone()[0]
    calls = rows[:CALLS_PAGE]
    first = total - older + 1
    # the page before this one ends at its pivot: the pivot and the CALLS_PAGE - 1 calls after it
    # (None: that page is the first)
    newer = pivot and db.conn.execute(
        "SELECT id FROM calls WHERE agent = ? AND (start_ts, id) > (?, ?) "
        "ORDER BY start_ts, id LIMIT 1 OFFSET ?", (agent, pivot[0], pivot[1], CALLS_PAGE - 1)
    ).fetchone()
    return {"calls": calls, "before": pivot[1] if pivot else None, "first": first,
            "last": first + len(calls) - 1, "total": total,
            "next_before": calls[-1]["id"] if len(rows) > CALLS_PAGE else None,
            "newer_before": newer[0] if newer else None}


def _flags_page(db: Db, agent: str, before: int | None) -> dict[str, Any]:
    """One page of the agent's flags as the API pages them (api.flags_page, api.FLAGS_PAGE a
    page), the first when ``before`` is None or not one of the agent's, with where the page
    sits among them all (``first``, ``last``) and the ``before`` of the page one back
    (``newer_before``, None when that is the first), as :func:`_calls_page`."""
    pivot = before is not None and db.conn.execute(
        "SELECT ts, id FROM flags WHERE id = ? AND agent = ?", (before, agent)).fetchone()
    page = api.flags_page(db, agent, api.FLAGS_PAGE, pivot[1] if pivot else None)
    older = page["total"] if not pivot else db.conn.execute(
        "SELECT count(*) FROM flags WHERE agent = ? AND (ts, id) < (?, ?)",
        (agent, pivot[0], pivot[1])).fetchone()[0]
    # the page before this one ends at its pivot: the pivot and the FLAGS_PAGE - 1 flags after it
    newer = pivot and db.conn.execute(
        "SELECT id FROM flags WHERE agent = ? AND (ts, id) > (?, ?) "
        "ORDER BY ts, id LIMIT 1 OFFSET ?", (agent, pivot[0], pivot[1], api.FLAGS_PAGE - 1)
    ).fetchone()
    first = page["total"] - int(older) + 1
    return {**page, "first": first, "last": first + len(page["flags"]) - 1,
            "newer_before": newer[0] if newer else None}


def _query(places: dict[str, int | None]) -> str:
    """The agent page's query for these places of its pagings (None: a list's first page)."""
    query = urlencode([(k, v) for k, v in places.items() if v is not None])
    return "?" + query if query else ""


def _paging(calls: dict[str, Any], audit: dict[str, Any] | None,
            flags: dict[str, Any]) -> dict[str, str | None]:
    """The query of each link of the agent view's three pagings, each keeping the others'
    places: ``here`` (this page), the calls' ``calls_next`` (older), ``calls_newer`` (one page
    back) and ``calls_latest`` (the first page, once two or more back), the flags' and the audit
    log's likewise, and ``flag_form`` (this page, its flags at their first page, where a new
    flag shows); None where there is no such page."""
    here = {"calls_before": calls["before"], "audit_before": audit["before"] if audit else None,
            "flags_before": flags["before"]}

    def at(key: str, before: int | None) -> str:
        return _query({**here, key: before})

    links: dict[str, str | None] = {
        "here": _query(here), "flag_form": at("flags_before", None),
        "calls_next": at("calls_before", calls["next_before"]) if calls["next_before"] else None,
        "calls_newer": at("calls_before", calls["newer_before"]) if calls["before"] else None,
        "calls_latest": at("calls_before", None) if calls["newer_before"] else None,
        "flags_older": at("flags_before", flags["next_before"]) if flags["more"] else None,
        "flags_newer": at("flags_before", flags["newer_before"]) if flags["before"] else None,
        "flags_latest": at("flags_before", None) if flags["newer_before"] else None,
        "audit_older": None, "audit_newer": None, "audit_latest": None}
    if audit:
        links.update(
            audit_older=at("audit_before", audit["next_before"]) if audit["more"] else None,
            audit_newer=at("audit_before", audit["newer_before"]) if audit["before"] else None,
            audit_latest=at("audit_before", None) if audit["newer_before"] else None)
    return links


def _agent_address(agent: str, calls_before: int | None, audit_before: int | None,
                   flags_before: int | None = None) -> str:
    """The agent page at these places of its pagings (None: the first page)."""
    return f"/agents/{quote(agent, safe='')}" + _query(
        {"calls_before": calls_before, "audit_before": audit_before,
         "flags_before": flags_before})


def _agent_context(db: Db, user: User, agent: str, self_view: bool,
                   audit_before: int | None = None, goal_error: str | None = None,
                   goal_form: dict[str, str] | None = None,
                   calls_before: int | None = None,
                   flags_before: int | None = None) -> dict[str, Any]:
    row = access.require_agent(db, user, agent)
    seat = db.conn.execute("SELECT box, label FROM seats WHERE agent = ?", (agent,)).fetchone()
    row["private"] = access.private_mode(db, agent, row)  # its button may have turned it on
    flags = _flags_page(db, agent, flags_before)
    goals = list(db.query("SELECT * FROM goals WHERE agent = ? AND active = 1 "
                          "ORDER BY created_ts", [agent]))
    for g in goals:
        g["series"] = analytics.daily_means(db, agent, g["metric"])
        g["label_metric"] = (registry.describe(g["metric"], user.lang)["label"]
                             if registry.known(g["metric"]) else g["metric"])
        g["unit_metric"] = (registry.describe(g["metric"], user.lang)["unit"]
                            if registry.known(g["metric"]) else "")
    calls = _calls_page(db, agent, calls_before)
    show_audit = self_view or user.role == "admin"
    audit = access.audit_page(db, agent, AUDIT_PAGE, audit_before) if show_audit else None
    return {
        "agent": row, "seat": {"box": seat[0], "label": seat[1]} if seat else None,
        "flags": flags["flags"], "flags_page": flags, "goals": goals,
        "calls": calls["calls"], "calls_page": calls,
        "calls_heard": (None if calls["total"] else
                        analytics.calls_heard(db, agent, time.time() - 86400)),
        "self_view": self_view,
        "can_coach": user.supervises and not self_view,
        "metrics": [registry.describe(n, user.lang) for n in analytics.metric_names(db)],
        "outcomes": analytics.OUTCOMES, "now_ts": time.time(), "calls_shown": CALLS_SHOWN,
        "audit": audit, "paging": _paging(calls, audit, flags),
        "visits": access.group_visits(audit["entries"]) if audit else [],
        "goal_error": goal_error, "goal_form": goal_form or {},
    }


@router.get("/agents")
@router.get("/teams")
def lists_page(db: Db, user: CurrentUser) -> Response:
    """What a supervisor types for the list of agents or teams: the board of their one team (its
    agents listed), else the floor (each seat's agent, each team's board a link away)."""
    require_role(user, "admin", "supervisor")
    teams = access.visible_teams(db, user)
    if user.role == "supervisor" and len(teams) == 1:
        return RedirectResponse(f"/teams/{quote(teams[0]['team'], safe='')}", status_code=303)
    return RedirectResponse("/", status_code=303)


@router.get("/agents/{agent:id}")
def agent_page(request: Request, db: Db, user: CurrentUser, agent: str,
               audit_before: AuditBefore = None, calls_before: CallsBefore = None,
               flags_before: FlagsBefore = None) -> Response:
    """An agent's shift, calls, flags and goals (audited)."""
    require_role(user, "admin", "supervisor")
    ctx = _agent_context(db, user, agent, self_view=False, audit_before=audit_before,
                         calls_before=calls_before, flags_before=flags_before)
    access.audit(db, user, "view_agent", agent)
    return render(request, "agent.html", ctx)


@router.get("/me")
def me_page(request: Request, db: Db, user: CurrentUser,
            audit_before: AuditBefore = None, calls_before: CallsBefore = None,
            flags_before: FlagsBefore = None) -> Response:
    """The agent's own view: what supervisors see, who looked, the private switch."""
    require_role(user, "agent")
    context = _agent_context(db, user, user.agent or "", True, audit_before,
                             calls_before=calls_before, flags_before=flags_before)
    sent = request.query_params.get("sent")
    context["private_unsent"] = sent == "0"
    context["private_no_seat"] = sent == "noseat"
    at = request.query_params.get("at")
    if sent in ("on", "off") and _unconfirmed(db, user.agent or "", at):
        context["agent"]["private"] = sent == "on"  # just switched here: the box confirms it soon
        # the page's script keeps saying so until the box speaks since, or the time is up
        context["private_sent_at"] = decimal_number(at or "", "at")
        context["private_confirm_s"] = PRIVATE_CONFIRM_S
    return render(request, "agent.html", context)


PRIVATE_CONFIRM_S = 10.0
"""How long after the private switch was sent the agent's page says it is done, its box's status
not yet in (a box answers within a second); after that, or once the box spoke, the box's word."""


def _unconfirmed(db: Db, agent: str, at: str | None) -> bool:
    """True while the private switch sent at ``at`` (server time, Unix seconds, as the switch's
    answer wrote it) awaits its box's status: under :data:`PRIVATE_CONFIRM_S` ago, and the box
    at the agent's seat said nothing since. False for a missing, malformed or future ``at`` (a
    reload of the address later, a made-up link)."""
    try:
        sent_ts = decimal_number(at or "", "at")
    except ValueError:
        return False
    now = time.time()
    if not now - PRIVATE_CONFIRM_S <= sent_ts <= now:  # NaN too
        return False
    row = db.conn.execute("SELECT b.last_status_ts FROM seats s JOIN boxes b ON b.box = s.box "
                          "WHERE s.agent = ?", (agent,)).fetchone()
    return row is None or row[0] is None or float(row[0]) < sent_ts


@router.post("/agents/{agent:id}/flags")
def flag_form(request: Request, db: Db, user: CurrentUser, agent: str,
              ts: Annotated[float, PlainDecimal, Form(**api.TS_BOUNDS)],
              note: Annotated[str, Form(max_length=2000)] = "",
              shared: Annotated[str, Form(max_length=4)] = "",
              calls_before: CallsBefore = None, audit_before: AuditBefore = None) -> Response:
    """Flag a moment from the agent page; back to it, its calls and audit log where they were,
    its flags at their first page, where the new one shows."""
    api.add_flag(db, user, agent, api.FlagIn(ts=ts, note=note, shared=shared == "1"))  # ticked
    return RedirectResponse(_agent_address(agent, calls_before, audit_before) + "#flags",
                            status_code=303)


@router.post("/agents/{agent:id}/goals")
def goal_form(request: Request, db: Db, user: CurrentUser, agent: str,
              metric: Annotated[str, Form(max_length=64)],
              label: Annotated[str, Form(max_length=120)],
              direction: Annotated[str, Form(pattern="^(up|down)$")] = "down",
              calls_before: CallsBefore = None, audit_before: AuditBefore = None,
              flags_before: FlagsBefore = None) -> Response:
    """Set a focus goal from the agent page, back to it with its pagings where they were;
    refused (a name of spaces only, a metric no goal is made of: registry.goal_metric), the
    agent's page comes back, at the same places, with the
    form as typed and the reason above it."""
    try:
        body = api.GoalIn(metric=metric, label=label, direction=direction)
        refused = None if registry.goal_metric(metric) or not registry.known(metric) \
            else "agent.goal_metric_refused"  # an unknown one: the API's 422 says so
    except ValidationError:
        refused = "agent.goal_unnamed"
    if refused is not None:
        require_role(user, "admin", "supervisor")
        ctx = _agent_context(db, user, agent, self_view=False, audit_before=audit_before,
                             goal_error=i18n.translate(user.lang, refused),
                             goal_form={"label": label, "metric": metric, "direction": direction},
                             calls_before=calls_before, flags_before=flags_before)
        access.audit(db, user, "view_agent", agent)  # the page shows the agent's data again
        return render(request, "agent.html", ctx, 422)
    api.add_goal(db, user, agent, body)
    return RedirectResponse(_agent_address(agent, calls_before, audit_before, flags_before)
                            + "#goals",
                            status_code=303)


@router.post("/calls/{call_id}/outcome")
def outcome_form(request: Request, db: Db, user: CurrentUser, call_id: api.RowId,
                 outcome: Annotated[str, Form(max_length=16)] = "",
                 next: Annotated[str, Form(max_length=512)] = "/") -> Response:
    """Tag a call's outcome from a page ("—", sent empty, takes a tag back off)."""
    api.set_outcome(db, user, call_id, outcome or None)
    return RedirectResponse(safe_next(next), status_code=303)


@router.post("/me/private")
def private_form(request: Request, db: Db, user: CurrentUser,
                 private: Annotated[str, Form(max_length=4)] = "0") -> Response:
    """The agent's private-call switch."""
    on = private == "1"
    unsent = api.set_private(request, db, user, on)
    answer = (f"/me?sent={'on' if on else 'off'}&at={time.time():.3f}" if unsent is None
              else "/me?sent=noseat" if unsent == api.NO_SEAT else "/me?sent=0")
    return RedirectResponse(answer + "#private", status_code=303)


@router.get("/teams/{team:id}")
def team_page(request: Request, db: Db, user: CurrentUser, team: str) -> Response:
    """The team board: progress against each agent's own baseline, shared moments, debrief."""
    require_role(user, "admin", "supervisor")
    board = api.team_board(db, user, team)
    api.audit_board(db, user, board)
    return render(request, "team.html", {"board": board})


CAMPAIGNS_PAGE = 50
"""Campaigns listed per page of /campaigns (api.campaign_listing: the open ones, then the latest
closed); older ones a plain link away (``?page=``), however many a site has run."""
CampaignsPage = Annotated[int, PlainWhole, Query(ge=1, le=10**9)]


def _campaigns_context(db: Db, user: User, comparison: dict[str, Any] | None,
                       error: str | None = None, form: dict[str, str] | None = None,
                       page: int = 1) -> dict[str, Any]:
    """What campaigns.html shows: with a campaign (``comparison``), the page of the list where it
    stands (``page`` otherwise), so that the list shown with it has it."""
    editable = user.role in ("admin", "supervisor")
    teams = access.visible_teams(db, user) if editable else []
    agents: list[dict[str, Any]] = []
    can_edit = False
    if comparison is not None and editable:
        can_edit = user.role == "admin" or comparison.get("team") in user.teams
        scope = access.visible_agents(db, user)
        team = comparison.get("team")  # a team's campaign takes its agents only (api.OTHER_TEAM)
        rows = list(db.query("SELECT agent, name, team, campaign, variant FROM agents "
                             "WHERE active = 1 ORDER BY name, agent"))
        agents = [r for r in rows if (scope is None or r["agent"] in scope)
                  and (team is None or r["team"] == team)]
    if comparison is not None:
        page = api.campaign_page_of(db, user, comparison["campaign"], CAMPAIGNS_PAGE)
    listing = api.campaign_listing(db, user, page, CAMPAIGNS_PAGE)
    return {"campaigns": listing["campaigns"], "listing": listing, "comparison": comparison,
            "can_create": editable, "teams": teams, "agents": agents,
            "can_edit": can_edit and comparison is not None and not comparison.get("closed_ts"),
            "error": error, "form": form or {}, "min_agents": analytics.MIN_GROUP_AGENTS}


@router.get("/campaigns")
def campaigns_page(request: Request, db: Db, user: CurrentUser,
                   page: CampaignsPage = 1) -> Response:
    """Campaigns, :data:`CAMPAIGNS_PAGE` a page; admins and supervisors create them here."""
    require_role(user, "admin", "supervisor", "auditor")
    return render(request, "campaigns.html", _campaigns_context(db, user, None, page=page))


def _parse_variants(text: str) -> list[api.VariantIn]:
    """One variant per line: ``Name | text`` (the text is optional)."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        name, _, body = line.partition("|")
        out.append(api.VariantIn(name=name.strip(), text=body.strip()))
    return out


@router.post("/campaigns")
def campaign_create_form(request: Request, db: Db, user: CurrentUser,
                         campaign: Annotated[str, Form(max_length=32)],
                         name: Annotated[str, Form(max_length=120)],
                         team: Annotated[str, Form(max_length=64)] = "",
                         variants: Annotated[str, Form(max_length=20000)] = "") -> Response:
    """Create a campaign from the form (variants one per line, ``Name | text``); refused, the
    form comes back as typed with the reason above it."""
    require_role(user, "admin", "supervisor")
    form = {"campaign": campaign, "name": name, "team": team, "variants": variants}
    tr = i18n.translator(user.lang)
    try:
        body = api.CampaignIn(campaign=campaign.strip(), name=name, team=team or None,
                              variants=_parse_variants(variants))
    except ValidationError:
        return render(request, "campaigns.html",
                      _campaigns_context(db, user, None, tr("campaign.invalid"), form), 422)
    try:
        api.create_campaign(db, user, body)
    except HTTPException as exc:
        if exc.status_code not in (404, 409, 422) or not isinstance(exc.detail, str):
            raise
        why = f"{tr('campaign.refused')} {i18n.detail(user.lang, exc.detail)}."
        return render(request, "campaigns.html",
                      _campaigns_context(db, user, None, why, form), exc.status_code)
    return RedirectResponse(f"/campaigns/{body.campaign}", status_code=303)


@router.get("/campaigns/{campaign}")
def campaign_page(request: Request, db: Db, user: CurrentUser, campaign: str) -> Response:
    """Variant comparison by meeting rate with 95 % confidence intervals."""
    require_role(user, "admin", "supervisor", "auditor")
    data = api.get_comparison(db, user, campaign)
    return render(request, "campaigns.html", _campaigns_context(db, user, data))


@router.post("/campaigns/{campaign}/variants")
def variant_form(request: Request, db: Db, user: CurrentUser, campaign: str,
                 name: Annotated[str, Form(min_length=1, max_length=80)],
                 text: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """Add a variant to an open campaign; refused (no name, a name it has, too many), the
    campaign comes back with the form as typed and the reason above it."""
    try:
        api.add_variant(db, user, campaign, api.VariantIn(name=name, text=text))
    except HTTPException as exc:
        if exc.status_code not in (409, 422) or not isinstance(exc.detail, str):
            raise
        context = _campaigns_context(db, user, api.get_comparison(db, user, campaign),
                                     form={"name": name, "text": text})
        if not context["can_edit"]:  # closed meanwhile: no form to come back to
            raise
        tr = i18n.translator(user.lang)
        context["error"] = f"{tr('campaign.variant_refused')} {i18n.detail(user.lang, exc.detail)}."
        return render(request, "campaigns.html", context, exc.status_code)
    return RedirectResponse(f"/campaigns/{campaign}", status_code=303)


@router.post("/campaigns/{campaign}/assign")
def assign_form(request: Request, db: Db, user: CurrentUser, campaign: str,
                agent: Annotated[str, Form(max_length=64)],
                variant: Annotated[str, Form(max_length=12)] = "") -> Response:
    """Put an agent on the campaign and a variant."""
    try:  # a ValidationError is a ValueError: an id out of range is a 422 too
        body = api.AssignIn(agent=agent,
                            variant=whole_number(variant, "variant") if variant else None)
    except ValueError:
        raise HTTPException(status_code=422, detail="variant must be an id") from None
    api.assign_agent(db, user, campaign, body)
    return RedirectResponse(f"/campaigns/{campaign}", status_code=303)


CLOSE_UNCONFIRMED = "closing a campaign needs its confirmation box ticked"
"""A closed campaign cannot be reopened, its agents leave it and its calls' outcomes are frozen:
the page asks first."""


@router.post("/campaigns/{campaign}/close")
def close_form(request: Request, db: Db, user: CurrentUser, campaign: str,
               confirm: Annotated[str, Form(max_length=4)] = "") -> Response:
    """Close the campaign, once the form's box says that it cannot be reopened."""
    api._writable_campaign(db, user, campaign, open_only=False)  # 404 before anything else
    if confirm != "1":
        raise HTTPException(status_code=422, detail=CLOSE_UNCONFIRMED)
    api.close_campaign(db, user, campaign)
    return RedirectResponse(f"/campaigns/{campaign}", status_code=303)


AUDIT_LOG_PAGE = 500
"""Entries per page of the audit page, newest first (older ones a link away)."""


def _audit_links(log: dict[str, Any]) -> dict[str, str | None]:
    """The audit page's ``older``, ``newer`` (one page back) and ``latest`` (the first page,
    once two or more back) addresses; None where there is no such page."""
    def at(before: int | None) -> str:
        return "/audit" + ("" if before is None else "?" + urlencode({"audit_before": before}))

    return {"older": at(log["next_before"]) if log["more"] else None,
            "newer": at(log["newer_before"]) if log["before"] is not None else None,
            "latest": at(None) if log["newer_before"] is not None else None}


@router.get("/audit")
def audit_page(request: Request, db: Db, user: CurrentUser,
               audit_before: AuditBefore = None) -> Response:
    """The audit log, a page at a time, and per-team aggregates (auditors, admins)."""
    require_role(user, "admin", "auditor")
    log = access.audit_log_page(db, None, AUDIT_LOG_PAGE, audit_before)
    return render(request, "audit.html", {
        "entries": log["entries"], "log": log, "links": _audit_links(log),
        "aggregates": api.aggregates(db, user),
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
