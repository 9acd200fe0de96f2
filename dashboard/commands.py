"""Commands from the dashboard down to a box (``miroir/v1/<site>/<box>/cmd``)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def send_command(app: Any, box: str, payload: dict[str, Any]) -> bool:
    """Publish ``payload`` on ``box``'s ``cmd`` topic through the ingest's MQTT client.

    Uses ``app.state.ingest.publish_cmd(box, payload)`` when the running ingest provides it;
    returns True if the command was handed to the client, False if there is no way to send it
    (no ingest, or an ingest without ``publish_cmd``) or sending failed.
    """
    ingest = getattr(app.state, "ingest", None)
    publish = getattr(ingest, "publish_cmd", None)
    if publish is None:
        log.warning("no MQTT command channel: %s not sent to box %s", sorted(payload), box)
        return False
    try:
        result = publish(box, payload)
    except Exception:
        log.exception("could not send a command to box %s", box)
        return False
    return result is not False
