"""``python -m dashboard``: serve the dashboard configured by ``MIROIR_DASH_*`` variables."""

from __future__ import annotations

import logging

from .app import serve
from .settings import DashboardSettings


def main() -> None:
    """Read the settings from the environment and serve until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serve(DashboardSettings())  # required fields (site, db_path) come from the environment


if __name__ == "__main__":
    main()
