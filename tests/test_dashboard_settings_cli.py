"""Bad ``MIROIR_DASH_*`` settings, as site IT types them in ``dashboard.env``: every ``miroir
dashboard`` command, run as a real process, says one line per bad variable and exits 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BAD = {
    "MIROIR_DASH_MQTT_PORT": "88x3",
    "MIROIR_DASH_RETENTION_AUDIT_DAYS": "36",
    "MIROIR_DASH_TRUSTED_PROXIES": "10.0.0.1",
    "MIROIR_DASH_SECURE_COOKIES": "maybe",
    "MIROIR_DASH_TOTP_REQUIRE": "false",
}
"""A non-number, a value out of range, a list not in JSON, a yes/no, a mistyped variable name."""

EXPECTED = [
    "MIROIR_DASH_TOTP_REQUIRE: no such setting (did you mean MIROIR_DASH_TOTP_REQUIRED?)",
    "MIROIR_DASH_TRUSTED_PROXIES: expected a JSON list of addresses or CIDRs, e.g. "
    '["127.0.0.1/32", "::1/128"], got \'10.0.0.1\'',
    "MIROIR_DASH_MQTT_PORT: expected a whole number, at least 1 and at most 65535, got '88x3'",
    "MIROIR_DASH_SECURE_COOKIES: expected true or false, got 'maybe'",
    "MIROIR_DASH_RETENTION_AUDIT_DAYS = '36' is outside the allowed range: at least 180 and at "
    "most 3650",
]
"""Worded as a campaign file's errors are: the name as typed, the value, what it accepts."""

COMMANDS = [
    ["serve"],
    ["user", "add", "tech", "--role", "it", "--password-file", "{tmp}/password"],
    ["import", "{tmp}/floor.csv"],
    ["retire", "box-001"],
    ["purge"],
    ["backup", "{tmp}/copy.sqlite"],
    ["restore", "{tmp}/floor.csv"],
]


def _run(args: list[str], env: dict[str, str], tmp: Path) -> subprocess.CompletedProcess[str]:
    """``miroir dashboard ARGS`` in its own process, with exactly these MIROIR_DASH_* variables."""
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("MIROIR_DASH_")}
    return subprocess.run([sys.executable, "-m", "miroir", "dashboard",
                           *(a.format(tmp=tmp) for a in args)], env={**base, **env},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_every_dashboard_command_names_each_bad_variable_on_one_line(args: list[str],
                                                                      tmp_path: Path) -> None:
    """Each bad variable is one line: its name as typed, its value and what it accepts; exit 2
    (a usage error, as the README gives); no traceback, no pydantic report, nothing written."""
    (tmp_path / "password").write_text("a long enough password\n")
    (tmp_path / "floor.csv").write_text("box,seat,agent,team\nbox-001,A-01,Priya,north\n")
    db = tmp_path / "dashboard.sqlite"
    env = {"MIROIR_DASH_SITE": "paris-1", "MIROIR_DASH_DB_PATH": str(db), **BAD}
    done = _run(args, env, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"miroir: error: {line}" for line in EXPECTED], done.stderr
    assert not db.exists() and not (tmp_path / "copy.sqlite").exists()


def test_missing_and_paired_settings_are_named_by_their_variables(tmp_path: Path) -> None:
    """Without dashboard.env's lines each required variable is named; a TLS certificate without
    its key names both variables."""
    bare = _run(["purge"], {}, tmp_path)
    assert bare.returncode == 2
    assert bare.stderr.splitlines() == [
        "miroir: error: MIROIR_DASH_SITE is not set: expected text",
        "miroir: error: MIROIR_DASH_DB_PATH is not set: expected a file path"], bare.stderr
    half = _run(["serve"], {"MIROIR_DASH_SITE": "paris-1",
                            "MIROIR_DASH_DB_PATH": str(tmp_path / "d.sqlite"),
                            "MIROIR_DASH_TLS_CERT_FILE": str(tmp_path / "https.pem")}, tmp_path)
    assert half.returncode == 2
    assert half.stderr.splitlines() == [
        "miroir: error: MIROIR_DASH_TLS_CERT_FILE and MIROIR_DASH_TLS_KEY_FILE go together: set "
        "both (HTTPS served directly) or neither (behind a reverse proxy)"], half.stderr


def test_ports_and_the_site_id_are_checked_before_anything_starts(tmp_path: Path) -> None:
    """`MIROIR_DASH_MQTT_PORT=70000` and `MIROIR_DASH_SITE=Paris_1` passed the settings: the ingest
    then failed to connect (or subscribed to topics no box can publish on, box and site ids being
    `[a-z0-9-]`). Both are refused with the rest, one line each."""
    db = tmp_path / "dashboard.sqlite"
    done = _run(["purge"], {"MIROIR_DASH_SITE": "Paris_1", "MIROIR_DASH_DB_PATH": str(db),
                            "MIROIR_DASH_MQTT_PORT": "70000", "MIROIR_DASH_HTTP_PORT": "-1"}, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "miroir: error: MIROIR_DASH_SITE = 'Paris_1' is not 1 to 32 characters of a-z, 0-9 and - "
        "(as box ids are)",
        "miroir: error: MIROIR_DASH_MQTT_PORT = '70000' is outside the allowed range: at least 1 "
        "and at most 65535",
        "miroir: error: MIROIR_DASH_HTTP_PORT = '-1' is outside the allowed range: at least 0 and "
        "at most 65535"], done.stderr
    assert not db.exists()


def test_a_number_in_a_setting_is_taken_in_plain_digits_only(tmp_path: Path) -> None:
    """pydantic read `MIROIR_DASH_MQTT_PORT=8_883`, `MIROIR_DASH_CTI_BURST=+200` and
    `MIROIR_DASH_RETENTION_METRICS_DAYS=1e1` as 8883, 200 and 10 days: `miroir dashboard purge`
    ran (exit 0) with settings that are not what dashboard.env says. Each is now one line, as a
    non-number is; nothing written. Plain digits (a `.` in a number of days) are taken."""
    db = tmp_path / "dashboard.sqlite"
    site = {"MIROIR_DASH_SITE": "paris-1", "MIROIR_DASH_DB_PATH": str(db)}
    done = _run(["purge"], {**site, "MIROIR_DASH_MQTT_PORT": "8_883",
                            "MIROIR_DASH_CTI_BURST": "+200",
                            "MIROIR_DASH_RETENTION_METRICS_DAYS": "1e1"}, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "miroir: error: MIROIR_DASH_MQTT_PORT: expected a whole number, at least 1 and at most "
        "65535, got '8_883'",
        "miroir: error: MIROIR_DASH_RETENTION_METRICS_DAYS: expected a number, above 0 and at "
        "most 3650, got '1e1'",
        "miroir: error: MIROIR_DASH_CTI_BURST: expected a whole number, at least 1 and at most "
        "100000, got '+200'",
    ], done.stderr
    assert not db.exists()
    # plain digits past a float's range: read as infinity (a traceback: "timestamp out of range")
    huge = "1" + "0" * 400
    done = _run(["purge"], {**site, "MIROIR_DASH_RETENTION_METRICS_DAYS": huge}, tmp_path)
    assert (done.returncode, done.stderr.splitlines()) == (2, [
        "miroir: error: MIROIR_DASH_RETENTION_METRICS_DAYS: expected a number, above 0 and at "
        f"most 3650, got '{huge}'"]), done.stderr[-600:]
    assert not db.exists()
    done = _run(["purge"], {**site, "MIROIR_DASH_MQTT_PORT": "8883", "MIROIR_DASH_CTI_BURST": "200",
                            "MIROIR_DASH_RETENTION_METRICS_DAYS": "10.5"}, tmp_path)
    assert done.returncode == 0, done.stderr


TOO_LARGE = {
    "MIROIR_DASH_SESSION_IDLE_S": ("86401", "above 0 and at most 86400"),
    "MIROIR_DASH_LOGIN_WINDOW_S": ("86401", "above 0 and at most 86400"),
    "MIROIR_DASH_LOGIN_MAX_FAILURES_ACCOUNT": ("1001", "at least 1 and at most 1000"),
    "MIROIR_DASH_LOGIN_MAX_FAILURES_ACCOUNT_TOTAL": ("100001", "at least 1 and at most 100000"),
    "MIROIR_DASH_LOGIN_MAX_FAILURES_ADDR": ("100001", "at least 1 and at most 100000"),
    "MIROIR_DASH_LOGIN_MAX_CONCURRENT_CHECKS": ("65", "at least 1 and at most 64"),
    "MIROIR_DASH_RETENTION_METRICS_DAYS": ("1000000000000", "above 0 and at most 3650"),
    "MIROIR_DASH_RETENTION_AGGREGATES_DAYS": ("3650.5", "above 0 and at most 3650"),
    "MIROIR_DASH_RETENTION_AUDIT_DAYS": ("3651", "at least 180 and at most 3650"),
    "MIROIR_DASH_PURGE_INTERVAL_S": ("1000000000000", "above 0 and at most 86400"),
    "MIROIR_DASH_RESTART_GRACE_S": ("3601", "at least 0 and at most 3600"),
    "MIROIR_DASH_CTI_RATE_PER_S": ("10001", "above 0 and at most 10000"),
    "MIROIR_DASH_CTI_BURST": ("100001", "at least 1 and at most 100000"),
}
"""Each numeric setting with no upper bound before, just past the one it now has."""


def test_a_numeric_setting_past_its_upper_bound_is_refused_naming_its_range(
        tmp_path: Path) -> None:
    """The numeric settings had no upper bound: `MIROIR_DASH_RETENTION_METRICS_DAYS=1000000000000`
    made `miroir dashboard purge` migrate the database and then fail with "Value too large for
    defined data type", and a purge interval of 10^12 s or 100000000000 password checks at once
    were taken (exit 0). Each now has a documented range: a value past it is one line naming the
    variable and the range, exit 2, nothing written; the bounds themselves are taken."""
    db = tmp_path / "dashboard.sqlite"
    site = {"MIROIR_DASH_SITE": "paris-1", "MIROIR_DASH_DB_PATH": str(db)}
    done = _run(["purge"], {**site, **{k: v for k, (v, _) in TOO_LARGE.items()}}, tmp_path)
    assert done.returncode == 2, done.stderr
    assert sorted(done.stderr.splitlines()) == sorted(
        f"miroir: error: {name} = {value!r} is outside the allowed range: {span}"
        for name, (value, span) in TOO_LARGE.items()), done.stderr
    assert not db.exists()
    at_most = {name: span.rsplit(" ", 1)[1] for name, (_, span) in TOO_LARGE.items()}
    done = _run(["purge"], {**site, **at_most}, tmp_path)
    assert done.returncode == 0, done.stderr
