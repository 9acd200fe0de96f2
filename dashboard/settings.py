"""Dashboard settings, read from ``MIROIR_DASH_*`` environment variables or given directly."""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from miroir.numbers import decimal_number, whole_number
from miroir.wire import DAY_S  # the longest session idle time, login window and purge interval

ENV_PREFIX = "MIROIR_DASH_"
"""Prefix of the environment variables (``dashboard.env``) that hold the settings."""

MIN_AUDIT_DAYS = 180.0
"""Shortest audit-log retention the dashboard accepts, days."""

MAX_RETENTION_DAYS = 3650.0
"""Longest retention of any kind the dashboard accepts, days (ten years; beyond, a typo such as
1000000000000 made the purge fail with "Value too large for defined data type")."""


class DashboardSettings(BaseSettings):
    """Everything one site dashboard needs; secrets are files, never values."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    site: str = Field(pattern=r"^[a-z0-9-]{1,32}$",
                      description="Site id ([a-z0-9-], 1 to 32) whose boxes this dashboard shows.")
    db_path: Path = Field(description="SQLite database file (created if missing, WAL mode).")
    mqtt_host: str = Field("127.0.0.1", description="Host of the site's MQTT broker.")
    mqtt_port: int = Field(8883, ge=1, le=65535, description="TLS port of the site's MQTT broker.")
    mqtt_ca: Path | None = Field(None, description="PEM file of the site CA that signs the broker.")
    mqtt_cert: Path | None = Field(None, description="PEM client certificate of the dashboard.")
    mqtt_key: Path | None = Field(None, description="PEM private key of the dashboard certificate.")
    http_host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    http_port: int = Field(8000, ge=0, le=65535,
                           description="Port the HTTP server binds to (0 picks a free one).")
    admin_user: str = Field("admin", description="Name of the admin created on an empty database.")
    admin_password_file: Path | None = Field(
        None, description="File holding the initial admin password (used once, on an empty db)."
    )
    session_idle_s: float = Field(
        1800.0, gt=0, le=DAY_S,
        description=("Seconds without its user's act (a page opened, a form, a key or a click) after "
                     "which a login session ends; a page's background traffic does not count."),
    )
    secure_cookies: bool = Field(
        True, description="Secure cookies with the __Host- prefix (off only for plain http)."
    )
    totp_required: bool = Field(
        True, description="Admins, supervisors and IT users must enrol and enter a TOTP code at login."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Reverse-proxy addresses or CIDRs whose X-Forwarded-For header is believed.",
    )
    login_window_s: float = Field(
        900.0, gt=0, le=DAY_S, description="Window in seconds over which failed logins are counted."
    )
    login_max_failures_account: int = Field(
        5, ge=1, le=1000, description="Failed logins on one account from one client address "
        "within the window before that address is throttled for the account; also the wrong "
        "one-time codes on the account, from all addresses, before its code step is throttled."
    )
    login_max_failures_account_total: int = Field(
        50, ge=1, le=100_000, description="Failed logins on one account from all addresses within the window "
        "before the account is throttled, except in browsers whose last completed login to it is "
        "under 90 days old: a guess spread over many addresses is stopped, and a stranger elsewhere "
        "cannot lock the account's owner out."
    )
    login_max_failures_addr: int = Field(
        20, ge=1, le=100_000, description="Failed logins from one client address within the window before it "
        "is throttled, except in browsers whose last completed login to the account is under 90 "
        "days old: one person behind a floor's shared address cannot lock the floor out."
    )
    login_max_concurrent_checks: int = Field(
        4, ge=1, le=64, description="Password checks (argon2id, 64 MiB and about 0.1 s of a core each) run "
        "at once; a login that finds no free slot within a second is answered 503 with Retry-After "
        "and does not count as a failure."
    )
    retention_metrics_days: float = Field(
        30.0, gt=0, le=MAX_RETENTION_DAYS,
        description="Days per-second metrics and events are kept before the purge."
    )
    retention_aggregates_days: float = Field(
        365.0, gt=0, le=MAX_RETENTION_DAYS,
        description="Days daily aggregates, calls, flags and goals are kept."
    )
    retention_audit_days: float = Field(
        365.0, ge=MIN_AUDIT_DAYS, le=MAX_RETENTION_DAYS,
        description="Days audit-log entries and login attempts are kept "
        f"(at least {MIN_AUDIT_DAYS:g}: the CNIL asks six months to a year for access logs, and a "
        "slip such as 36 for 365 would purge the record of who read whose data within the hour)."
    )
    day_start_utc_h: float = Field(
        0.0, ge=0, lt=24, description="Hour, UTC, at which a day of the daily means begins (an "
        "agent's goals, the team board's progress, the audit page's team means): 0 is midnight "
        "UTC (01:00 in Morocco, 03:00 in Madagascar, 04:00 in Mauritius). Set an hour no shift "
        "works through, e.g. 5 (06:00 in Morocco) where a shift runs past 01:00: a shift then "
        "counts as one day, not two. Applies to the days rolled up and read from then on."
    )
    purge_interval_s: float = Field(
        3600.0, gt=0, le=DAY_S, description="Seconds between two automatic retention purges."
    )
    restart_grace_s: float = Field(
        120.0, ge=0, le=3600, description="Seconds a box that said it restarts (an update, a settings "
        "reload) has to come back before the offline alert: meanwhile the IT page, the floor and "
        "the agent pages show it restarting, not offline. 0 alerts at once, as for a stop."
    )
    metrics_token_file: Path | None = Field(
        None, description="File holding the bearer token Prometheus must send to /metrics "
        "(a systemd credential in production); unset, /metrics refuses every scrape."
    )
    cti_token_file: Path | None = Field(
        None, description="File holding the bearer token a CTI server must send to "
        "/api/cti/call-state (a systemd credential in production); unset, every call state is refused."
    )
    cti_rate_per_s: float = Field(
        10.0, gt=0, le=10_000, description="Call states a second one CTI client (its address, as the login "
        "throttle counts it) may post once its burst is spent; beyond, 429 with Retry-After."
    )
    cti_burst: int = Field(
        200, ge=1, le=100_000, description="Call states one CTI client may post at once (a resend of every "
        "seat's state after the CTI server restarts) before cti_rate_per_s applies."
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate (chain) to serve HTTPS directly; unset behind a "
        "TLS-terminating reverse proxy."
    )
    tls_key_file: Path | None = Field(
        None, description="PEM private key of tls_cert_file."
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> DashboardSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(f"{ENV_PREFIX}TLS_CERT_FILE and {ENV_PREFIX}TLS_KEY_FILE go together: "
                             "set both (HTTPS served directly) or neither (behind a reverse proxy)")
        return self

    @field_validator("*", mode="before")
    @classmethod
    def _plain_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """A number given as text in digits 0-9 (one ``.`` and a leading ``-`` allowed), as
        :mod:`miroir.numbers` reads it: pydantic's own reading took ``8_883``, ``+8883`` and
        `` 8883`` for 8883, and ``1e3`` for 1000. Digits past a float's range are refused too
        (read as infinity, a retention of that many days stopped the purge with a traceback)."""
        if not isinstance(value, str) or info.field_name is None:
            return value
        hint = cls.model_fields[info.field_name].annotation
        kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        try:
            if int in kinds:
                return whole_number(value, info.field_name, signed=True)
            if float in kinds:
                number = decimal_number(value, info.field_name, signed=True)
                if not math.isfinite(number):
                    raise ValueError(f"{info.field_name} is too large")
                return number
        except ValueError as exc:  # worded by _line as any other number that does not parse
            kind = "int_parsing" if int in kinds else "float_parsing"
            raise PydanticCustomError(kind, str(exc)) from None
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an address or CIDR") from None
        return value


class SettingsError(ValueError):
    """Dashboard settings that cannot be used: ``lines`` holds one line per bad variable."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def env_name(field: str) -> str:
    """The environment variable of a setting, as site IT types it (``MIROIR_DASH_MQTT_PORT``)."""
    return ENV_PREFIX + field.upper()


_KINDS: dict[Any, str] = {int: "a whole number", float: "a number", bool: "true or false",
                          str: "text", Path: "a file path"}


def bounds(field: str) -> str:
    """A setting's bounds in words ("at least 0 and below 24"), empty if it has none."""
    words = []
    for item in DashboardSettings.model_fields[field].metadata:
        if isinstance(item, annotated_types.Ge):
            words.append(f"at least {item.ge:g}")
        elif isinstance(item, annotated_types.Gt):
            words.append(f"above {item.gt:g}")
        elif isinstance(item, annotated_types.Lt):
            words.append(f"below {item.lt:g}")
        elif isinstance(item, annotated_types.Le):
            words.append(f"at most {item.le:g}")
    return " and ".join(words)


def allowed(field: str) -> str:
    """What a setting accepts, in words: its kind and its bounds."""
    hint = DashboardSettings.model_fields[field].annotation
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if typing.get_origin(hint) is list:
        text = 'a JSON list of addresses or CIDRs, e.g. ["127.0.0.1/32", "::1/128"]'
    else:
        text = " or ".join(_KINDS.get(k, str(k)) for k in kinds if k is not type(None))
    if bounds(field):
        text += ", " + bounds(field)
    if type(None) in kinds:
        text += ", or unset"
    return text


def _line(field: str, value: Any, error: Any) -> str:
    """One refused variable, worded as a campaign file's keys are (its name as typed, its value,
    what it accepts)."""
    name, kind = env_name(field), str(error["type"])
    if kind == "missing":
        return f"{name} is not set: expected {allowed(field)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{name} = {value!r} is outside the allowed range: {bounds(field)}"
    if kind == "string_pattern_mismatch":  # the site id, the one setting with a pattern
        return f"{name} = {value!r} is not 1 to 32 characters of a-z, 0-9 and - (as box ids are)"
    if kind.endswith(("_parsing", "_type")):
        return f"{name}: expected {allowed(field)}, got {value!r}"
    reason = str(error["msg"]).removeprefix("Value error, ")
    return f"{name} = {value!r}: {reason}; expected {allowed(field)}"


class _FromValues(DashboardSettings):
    """The settings from the values given only (not the environment), to check each of them."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the values passed in."""
        return (init_settings,)


def load() -> DashboardSettings:
    """The settings from the ``MIROIR_DASH_*`` environment variables; bad ones raise
    :class:`SettingsError`, whose every line names one variable, its value and what it accepts."""
    given = {k[len(ENV_PREFIX):].lower(): v for k, v in os.environ.items()
             if k.upper().startswith(ENV_PREFIX)}  # read in any case, as pydantic-settings does
    known = DashboardSettings.model_fields
    lines: list[str] = []
    for name in sorted(set(given) - set(known)):  # a typo would otherwise go unnoticed
        near = difflib.get_close_matches(name, list(known), n=1)
        hint = f" (did you mean {env_name(near[0])}?)" if near else ""
        lines.append(f"{env_name(name)}: no such setting{hint}")
    values: dict[str, Any] = {k: v for k, v in given.items() if k in known}
    for name, info in known.items():  # a list is read as JSON, which fails before validation
        if name in values and typing.get_origin(info.annotation) is list:
            try:
                values[name] = json.loads(given[name])
            except ValueError:
                lines.append(f"{env_name(name)}: expected {allowed(name)}, got {given[name]!r}")
                del values[name]  # the other variables are still checked
    settings: DashboardSettings | None = None
    try:
        _FromValues(**values)  # every variable checked, whatever the others hold
        settings = DashboardSettings()
    except ValidationError as exc:
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            if field not in known:  # a rule across settings: its message names their variables
                lines.append(str(error["msg"]).removeprefix("Value error, "))
            else:
                lines.append(_line(field, given.get(field, error.get("input")), error))
    if lines or settings is None:
        raise SettingsError(lines)
    return settings
