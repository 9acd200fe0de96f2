"""Shared route dependencies: request-scoped database, settings, templates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import sqlite_utils
from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from .. import db as store
from ..settings import DashboardSettings

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))


def get_settings(request: Request) -> DashboardSettings:
    """The app's settings."""
    settings: DashboardSettings = request.app.state.settings
    return settings


def get_db(request: Request) -> Iterator[sqlite_utils.Database]:
    """A database connection for the duration of one request."""
    db = store.open_db(request.app.state.settings.db_path)
    try:
        yield db
    finally:
        db.conn.close()


Db = Annotated[sqlite_utils.Database, Depends(get_db)]
Settings = Annotated[DashboardSettings, Depends(get_settings)]
