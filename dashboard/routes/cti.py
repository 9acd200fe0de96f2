"""The call state from a CTI server off the boxes: relayed to a box's ``cmd`` topic.

A softphone or CTI connector on the box itself uses the box's control socket (docs/wire.md). A
CTI server elsewhere cannot publish on ``cmd`` (the broker admits only the dashboard there), so it
posts here with the bearer token of ``cti_token_file``, as Prometheus does for ``/metrics``; without
a configured token every request is refused. Each request is a database read and an MQTT command
to a box: a client (its address, as the login throttle counts it) gets ``cti_burst`` of them at
once, then ``cti_rate_per_s`` a second, and 429 with Retry-After beyond (nothing sent).

The states relayed (by state) and refused (by reason) are counted for ``/metrics``
(:class:`CallStateCounts`), not written to the audit log: it records who read or changed whose
data, and each agent sees their entries; a CTI server's states are a machine's feed, three or
four a call (about 20,000 a day on a 60-seat floor), which would bury them.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from miroir import wire

from .. import auth, commands, prom, schema
from .deps import Db

log = logging.getLogger(__name__)
router = APIRouter(tags=["cti"])
PATH = "/api/cti/call-state"
STATES = ("idle", "active", "hold")
REFUSALS = ("unauthorized", "no_seat", "too_many", "broker")
"""Why a call state was not relayed: a wrong or missing token (401), no such seat (404), over
the client's rate (429), the broker out of reach (503)."""


class CallStateCounts:
    """Call states relayed (by state) and refused (by reason) since the dashboard started."""

    def __init__(self) -> None:
        self.relayed = dict.fromkeys(STATES, 0)
        self.refused = dict.fromkeys(REFUSALS, 0)
        self._lock = threading.Lock()

    def count(self, kind: dict[str, int], key: str) -> None:
        """Add one to ``kind`` (:attr:`relayed` or :attr:`refused`) under ``key``."""
        with self._lock:
            kind[key] += 1

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        """Copies of (relayed, refused)."""
        with self._lock:
            return dict(self.relayed), dict(self.refused)


class CallStateIn(BaseModel):
    """A call state for one seat, named by its box or by the agent sitting there."""

    model_config = ConfigDict(extra="forbid")
    state: Literal["idle", "active", "hold"] = Field(description="The softphone's call state.")
    box: str | None = Field(None, pattern=wire.ID_PATTERN.pattern, description="Box id.")
    agent: str | None = Field(None, max_length=64, description="Agent id (the seat they sit at).")

    @model_validator(mode="after")
    def _one_target(self) -> CallStateIn:
        if (self.box is None) == (self.agent is None):
            raise ValueError("give exactly one of box and agent")
        return self


def _box_of(db: Any, body: CallStateIn) -> str:
    """The box the request names, if it is one of this site's and not retired (else 404)."""
    if body.agent is not None:
        row = db.conn.execute("SELECT box FROM seats WHERE agent = ?", (body.agent,)).fetchone()
    else:
        row = db.conn.execute("SELECT box FROM seats WHERE box = ? UNION SELECT box FROM boxes "
                              "WHERE box = ?", (body.box, body.box)).fetchone()
    if row is None or row[0] in schema.retired_boxes(db):
        raise HTTPException(status_code=404, detail="no such box or seated agent")
    return str(row[0])


def _within_rate(request: Request) -> None:
    """Spend one of the client's call states (:class:`dashboard.auth.RateLimit`); 429 with
    Retry-After once they are spent, before the database is opened or the token checked."""
    settings = request.app.state.settings
    addr = auth.client_address(request.client.host if request.client else None,
                               request.headers.get("x-forwarded-for"), settings.trusted_proxies)
    wait_s = request.app.state.cti_rate.take(auth.throttle_key(addr))
    if wait_s > 0:
        counts: CallStateCounts = request.app.state.cti_counts
        counts.count(counts.refused, "too_many")
        log.warning("call states from %s refused: more than %d at once or %g a second",
                    addr, settings.cti_burst, settings.cti_rate_per_s)
        raise HTTPException(status_code=429, headers={"retry-after": str(max(1, math.ceil(wait_s)))},
                            detail=f"too many call states: at most {settings.cti_burst} at once, "
                            f"then {settings.cti_rate_per_s:g} a second")


NOT_JSON = "send the call state as JSON, with the header Content-Type: application/json"
"""The ``detail`` of a call state posted with another Content-Type, or none (415)."""
EMPTY_BODY = "empty body: send the call state as a JSON object, e.g. {\"box\": ..., \"state\": ...}"
"""The ``msg`` of a call state posted with no body (422)."""


def is_json(content_type: str | None) -> bool:
    """True for ``application/json`` or ``application/<anything>+json``, parameters aside (as
    FastAPI's JSON bodies are read)."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/")
                                          and kind.endswith("+json"))


async def _authorized_body(request: Request) -> CallStateIn:
    """The call state posted, read once the CTI token is checked: 401 for a client without it
    whatever its body (the body's schema is none of its business); then 415 for a body not sent
    as JSON (docs/wire.md: ``Content-Type: application/json``), 422 for an empty or malformed
    one."""
    if not prom.authorized(request.app.state.cti_token, request.headers.get("authorization")):
        counts: CallStateCounts = request.app.state.cti_counts
        counts.count(counts.refused, "unauthorized")
        raise HTTPException(status_code=401, detail="unauthorized",
                            headers={"www-authenticate": 'Bearer realm="miroir-cti"'})
    if not is_json(request.headers.get("content-type")):
        raise HTTPException(status_code=415, detail=NOT_JSON)
    raw = await request.body()
    if not raw.strip():
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": EMPTY_BODY,
                                       "input": None}])
    try:
        return CallStateIn.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                      for e in exc.errors(include_url=False)]) from None


@router.post(PATH, status_code=202, openapi_extra={"requestBody": {
    "required": True, "content": {"application/json": {"schema": CallStateIn.model_json_schema()}}}})
def call_state(request: Request, _: Annotated[None, Depends(_within_rate)],
               body: Annotated[CallStateIn, Depends(_authorized_body)], db: Db) -> dict[str, Any]:
    """Send the call state to the box (``Authorization: Bearer <CTI token>``); 503 when the
    broker cannot take it now (send it again: a state sent twice changes nothing)."""
    counts: CallStateCounts = request.app.state.cti_counts
    try:
        box = _box_of(db, body)
    except HTTPException:
        counts.count(counts.refused, "no_seat")
        raise
    if not commands.send_command(request.app, box, "call_state", call_state=body.state):
        counts.count(counts.refused, "broker")
        raise HTTPException(status_code=503, detail="the broker is not reachable: send it again")
    counts.count(counts.relayed, body.state)
    log.debug("call state %s sent to box %s", body.state, box)
    return {"box": box, "state": body.state}
