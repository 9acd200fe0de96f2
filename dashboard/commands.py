"""Commands from the dashboard down to a box (``miroir/v1/<site>/<box>/cmd``)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def send_command(app: Any, box: str, action: str, **extra: Any) -> bool:
    """Send ``action`` (a :data:`miroir.wire.CMD_ACTIONS` value) to ``box``'s ``cmd`` topic
    through the running ingest's MQTT client (:meth:`dashboard.ingest.Ingest.publish_cmd`).

    Returns:
        True if the command was handed to the client; False if there is no ingest, it is not
        connected, or sending failed (logged).
    """
    ingest = getattr(app.state, "ingest", None)
    if ingest is None:
        log.warning("no MQTT command channel: %s not sent to box %s", action, box)
        return False
    try:
        return bool(ingest.publish_cmd(box, action, **extra))
    except Exception:
        log.exception("could not send %s to box %s", action, box)
        return False
