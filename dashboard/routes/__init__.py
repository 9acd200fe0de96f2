"""One FastAPI router per resource."""

from . import ids  # noqa: F401  (the {agent:id} convertor, registered before any route)
