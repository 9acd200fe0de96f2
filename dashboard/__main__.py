"""``python -m dashboard``: serve the dashboard configured by ``MIROIR_DASH_*`` variables."""

from __future__ import annotations

import logging
import sys

from .app import serve
from .settings import SettingsError, load


def main() -> None:
    """Read the settings from the environment and serve until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load()  # required fields (site, db_path) come from the environment
    except SettingsError as exc:
        sys.exit("\n".join(f"dashboard: error: {line}" for line in exc.lines))
    serve(settings)


if __name__ == "__main__":
    main()
