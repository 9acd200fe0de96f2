"""Agent and team ids in the dashboard's paths: one segment each, whatever they hold.

An id that an older import let in may hold a ``/`` ("north/priya"), and may end like a route
("a/export.json"). The server decodes ``%2F`` before routing, so the request for that agent's
page, written with ``%2F`` as the pages' scripts write it, went to the export of agent "a".
:class:`IdPaths` therefore routes these paths as they were sent (still percent-encoded), and
the ``id`` convertor decodes the id once matched: an id written with ``%2F`` is one segment.
An id written with a bare ``/`` is matched as before (the longest agent route first).
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from starlette.convertors import Convertor, register_url_convertor
from starlette.types import ASGIApp, Receive, Scope, Send

ID_PREFIXES = ("/api/agents/", "/agents/", "/api/teams/", "/teams/")
"""The paths whose next part is an agent or team id."""
_SENT_AS_IS = "!$&'()*+,/:;=@%~"
"""What :class:`IdPaths` keeps of a raw path as it is: ``%`` escapes stay escapes."""


class IdConvertor(Convertor[str]):
    """``{agent:id}``: the rest of the path as sent, decoded once it is matched. Not ending in a
    bare ``/``: routing sends such an address to the one without it, as for every page (an id
    ending in ``/`` is reached written with ``%2F``, as the pages write it)."""

    regex = ".*[^/]"

    def convert(self, value: str) -> str:
        """The id, percent-decoded (UTF-8)."""
        return unquote(value)

    def to_string(self, value: str) -> str:
        """The id as one path segment."""
        return quote(value, safe="")


register_url_convertor("id", IdConvertor())


class IdPaths:
    """Route the paths of :data:`ID_PREFIXES` on the path as the client sent it (``raw_path``),
    so that an id's ``%2F`` is not a separator; the ``id`` convertor decodes it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] in ("http", "websocket") else None
        if raw:
            path = scope["path"]
            for prefix in ID_PREFIXES:
                if path.startswith(prefix) and raw.startswith(prefix.encode()):
                    sent = quote(raw[len(prefix):], safe=_SENT_AS_IS)  # raw UTF-8 bytes escaped
                    scope = {**scope, "path": prefix + sent}
                    break
        await self.app(scope, receive, send)
