"""Dashboard settings, read from ``MIROIR_DASH_*`` environment variables or given directly."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DashboardSettings(BaseSettings):
    """Everything one site dashboard needs; secrets are files, never values."""

    model_config = SettingsConfigDict(env_prefix="MIROIR_DASH_", extra="forbid")

    site: str = Field(description="Site id ([a-z0-9-]) whose boxes this dashboard shows.")
    db_path: Path = Field(description="SQLite database file (created if missing, WAL mode).")
    mqtt_host: str = Field("127.0.0.1", description="Host of the site's MQTT broker.")
    mqtt_port: int = Field(8883, description="TLS port of the site's MQTT broker.")
    mqtt_ca: Path | None = Field(None, description="PEM file of the site CA that signs the broker.")
    mqtt_cert: Path | None = Field(None, description="PEM client certificate of the dashboard.")
    mqtt_key: Path | None = Field(None, description="PEM private key of the dashboard certificate.")
    http_host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    http_port: int = Field(8000, description="Port the HTTP server binds to (0 picks a free one).")
    admin_user: str = Field("admin", description="Name of the admin created on an empty database.")
    admin_password_file: Path | None = Field(
        None, description="File holding the initial admin password (used once, on an empty db)."
    )
    session_idle_s: float = Field(
        1800.0, gt=0, description="Seconds of inactivity after which a login session expires."
    )
    secure_cookies: bool = Field(
        True, description="Secure cookies with the __Host- prefix (off only for plain http)."
    )
