"""Files and secrets the commands read, as site IT gives them: a missing or unreadable file, a
spreadsheet's CSV, no terminal to type a password on. Real processes: one line, exit 2, no
traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from provisioning.broker import new_site_dir


def _miroir(args: list[str], tmp: Path, dash_settings: bool = True,
            **env: str) -> subprocess.CompletedProcess[str]:
    """``miroir ARGS`` in its own session (no terminal to ask on, as under cron), stdin empty;
    the dashboard's two required settings given unless ``dash_settings`` is False."""
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("MIROIR_DASH_")}
    dash = {"MIROIR_DASH_SITE": "paris-1", "MIROIR_DASH_DB_PATH": str(tmp / "dashboard.sqlite")}
    dash = dash if dash_settings else {}
    return subprocess.run([sys.executable, "-m", "miroir", *args], env={**base, **dash, **env},
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          start_new_session=True, check=False)


def _one_line_error(done: subprocess.CompletedProcess[str], *said: str) -> None:
    """Exit 2 and one `miroir: error:` line on stderr after the log, holding each of ``said``."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    *before, last = done.stderr.strip().splitlines()
    assert last.startswith("miroir: error: "), done.stderr[-3000:]
    assert not any("error" in line for line in before), done.stderr[-3000:]
    for text in said:
        assert text in last, (text, last)


def test_the_dashboard_imports_the_csv_a_spreadsheet_writes_and_names_a_bad_file(
        tmp_path: Path) -> None:
    """`miroir dashboard import` of a missing file, a folder or a file not in UTF-8 gave a
    traceback (FileNotFoundError, IsADirectoryError, UnicodeDecodeError; exit 1), and the same
    floor saved by a spreadsheet as "CSV UTF-8" (a byte-order mark first), which `miroir provision
    enroll-csv` takes, was refused as "floor.csv: 'box'". The file is read as enroll-csv reads it;
    a bad one is one line naming it, as enroll-csv's are."""
    floor = tmp_path / "floor.csv"
    floor.write_bytes("\ufeffbox,seat,agent,team\r\nbox-001,A-01,priya,north\r\n".encode())
    done = _miroir(["dashboard", "import", str(floor)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "imported 1 seats"
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("box,seat,agent,team\nbox-002,Sévigné,,\n".encode("latin-1"))
    nobox = tmp_path / "nobox.csv"
    nobox.write_text("seat,agent,team\nA-01,priya,north\n")
    for path, said in ((tmp_path / "missing.csv", "no such file"),
                       (tmp_path, "is a directory"),
                       (latin, "not UTF-8 text"),
                       (nobox, "no box column")):
        _one_line_error(_miroir(["dashboard", "import", str(path)], tmp_path), str(path), said)


def test_a_password_or_passphrase_file_missing_or_no_terminal_to_ask_on_is_one_line(
        tmp_path: Path) -> None:
    """`dashboard user add --password-file` of a missing file gave a FileNotFoundError traceback,
    exit 1; with no file and no terminal (a cron job, a script's ssh without -t), `dashboard user
    add`, `provision backup` and `provision restore` gave an EOFError traceback from getpass, exit
    1; a missing `--passphrase-file` read "[Errno 2] No such file or directory: '...'". Each is now
    one line naming what to give; exit 2."""
    site = new_site_dir()  # one the broker's user can reach, as site-init wants
    try:
        done = _miroir(["provision", "site-init", "--site-dir", str(site), "--site", "paris-1",
                        "--broker-host", "localhost"], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        _no_secret_no_traceback(site, tmp_path)
    finally:
        shutil.rmtree(site)


def _no_secret_no_traceback(site: Path, tmp_path: Path) -> None:
    """Each way of giving no usable password or passphrase, on the real commands."""
    missing = tmp_path / "nothing-here"
    backup = tmp_path / "site.bak"
    good = tmp_path / "good.bak"  # a backup to restore
    (tmp_path / "passphrase").write_text("a long enough passphrase\n")
    done = _miroir(["provision", "backup", str(good), "--site-dir", str(site), "--passphrase-file",
                    str(tmp_path / "passphrase")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    cases = [
        (["dashboard", "user", "add", "tech", "--role", "it", "--password-file", str(missing)],
         [f"--password-file {missing}: no such file"]),
        (["dashboard", "user", "add", "tech", "--role", "it", "--password-file", str(tmp_path)],
         [f"--password-file {tmp_path}: is a directory"]),
        (["dashboard", "user", "add", "tech", "--role", "it"],
         ["no password", "--password-file FILE"]),
        (["provision", "backup", str(backup), "--site-dir", str(site), "--passphrase-file",
          str(missing)], [f"--passphrase-file {missing}: no such file"]),
        (["provision", "backup", str(backup), "--site-dir", str(site)],
         ["no passphrase", "--passphrase-file FILE"]),
        (["provision", "restore", str(good), "--site-dir", str(tmp_path / "new")],
         ["no passphrase", "--passphrase-file FILE"]),
    ]
    for args, said in cases:
        _one_line_error(_miroir(args, tmp_path), *said)
    assert not backup.exists() and not (tmp_path / "new").exists()


def test_a_model_file_not_built_is_one_line_naming_the_command_that_builds_it(
        tmp_path: Path) -> None:
    """With the model files not built (an install without `miroir models build`), `miroir bench
    edge`, `bench vad` and `bench accuracy` ended in a traceback, exit 1, whose last line held
    the advice ("models.build.ModelError: model file .../silero_vad.onnx is missing: run `miroir
    models build --force`"). That advice is now the one line, exit 2."""
    empty = tmp_path / "models"
    empty.mkdir()
    for args in (["bench", "edge", "--seconds", "5", "--repeats", "1"],
                 ["bench", "vad", "--repeats", "1"], ["bench", "accuracy"]):
        _one_line_error(_miroir(args, tmp_path, MIROIR_MODELS_DIR=str(empty)),
                        f"model file {empty / 'silero_vad.onnx'} is missing: run `miroir models "
                        "build --force`")


def test_a_folder_option_given_a_file_is_one_line(tmp_path: Path) -> None:
    """A folder option given the path of a file (`demo --workdir`, `bench ingest --pki-dir`,
    `models train affect --out`, the last after 25 s of training) ended in a FileExistsError
    traceback from mkdir, exit 1, and
    `provision enroll-csv` of a folder said "[Errno 21] Is a directory: 'x'". A system error
    that reaches the command line is one line naming the path and the reason, exit 2 (the
    traceback is still logged with -v); the training's folder is checked before it trains."""
    taken = tmp_path / "a-file"
    taken.write_text("not a folder\n")
    for args in (["demo", "--workdir", str(taken), "--seconds", "1", "--json"],
                 ["bench", "ingest", "--pki-dir", str(taken), "--boxes", "1", "--duration", "1"],
                 ["models", "train", "affect", "--out", str(taken)]):
        _one_line_error(_miroir(args, tmp_path), f"{taken}: File exists")
    _one_line_error(_miroir(["provision", "enroll-csv", str(tmp_path), "--site-dir",
                             str(tmp_path)], tmp_path), f"{tmp_path}: Is a directory")
    verbose = _miroir(["-v", "models", "train", "affect", "--out", str(taken)], tmp_path)
    assert verbose.returncode == 2 and "FileExistsError" in verbose.stderr, verbose.stderr[-3000:]


def test_a_dashboard_database_path_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    """`MIROIR_DASH_DB_PATH` in a folder that does not exist (a typo in dashboard.env), naming a
    folder, or naming a file that is no database: `dashboard serve`, `user add`, `import`,
    `retire` and `purge` each ended in a sqlite3 traceback ("unable to open database file",
    "file is not a database"), exit 1. One line naming the variable, the path and why; exit 2;
    nothing created."""
    site = new_site_dir()
    try:
        done = _miroir(["provision", "site-init", "--site-dir", str(site), "--site", "paris-1",
                        "--broker-host", "localhost"], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        mqtt = {"MIROIR_DASH_MQTT_CA": str(site / "ca" / "cert.pem"),
                "MIROIR_DASH_MQTT_CERT": str(site / "dashboard" / "cert.pem"),
                "MIROIR_DASH_MQTT_KEY": str(site / "dashboard" / "key.pem")}
        (tmp_path / "password").write_text("a long enough password\n")
        (tmp_path / "floor.csv").write_text("box,seat,agent,team\nbox-001,A-01,priya,north\n")
        not_db = tmp_path / "notes.txt"
        not_db.write_text("these are not the droids\n" * 100)
        commands = [["dashboard", "serve"],
                    ["dashboard", "user", "add", "tech", "--role", "it", "--password-file",
                     str(tmp_path / "password")],
                    ["dashboard", "import", str(tmp_path / "floor.csv")],
                    ["dashboard", "retire", "box-001"], ["dashboard", "purge"]]
        for path, why in ((tmp_path / "typo" / "dashboard.sqlite", f"no folder {tmp_path / 'typo'}"),
                          (tmp_path, "a folder, not a file"),
                          (not_db, "file is not a database")):
            for args in commands:
                _one_line_error(_miroir(args, tmp_path, MIROIR_DASH_DB_PATH=str(path), **mqtt),
                                f"MIROIR_DASH_DB_PATH: cannot open {path} as the dashboard's "
                                f"database ({why})")
        assert not (tmp_path / "typo").exists()
        assert not_db.read_text() == "these are not the droids\n" * 100
    finally:
        shutil.rmtree(site)


def test_what_can_be_checked_is_checked_before_a_secret_is_asked(tmp_path: Path) -> None:
    """`provision backup` of a folder that is no site asked the passphrase twice, then said "is
    not a site directory"; `provision restore` of a missing file or into a folder already used
    asked it, then refused; `dashboard user add` asked the password, then said the dashboard's
    settings were missing. Run as a script would (no terminal), each said "no passphrase given"
    or "no password given" instead of the real problem. The secret is asked last."""
    site = new_site_dir()
    try:
        done = _miroir(["provision", "site-init", "--site-dir", str(site), "--site", "paris-1",
                        "--broker-host", "localhost"], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        passphrase = tmp_path / "passphrase"
        passphrase.write_text("a long enough passphrase\n")
        backup = tmp_path / "site.bak"
        done = _miroir(["provision", "backup", str(backup), "--site-dir", str(site),
                        "--passphrase-file", str(passphrase)], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        used = tmp_path / "used"
        (used / "something").mkdir(parents=True)
        cases = [
            (["provision", "backup", str(tmp_path / "b.bak"), "--site-dir", str(tmp_path)],
             f"{tmp_path} is not a site directory"),
            (["provision", "restore", str(tmp_path / "missing.bak"), "--site-dir",
              str(tmp_path / "new")], f"{tmp_path / 'missing.bak'}: No such file or directory"),
            (["provision", "restore", str(backup), "--site-dir", str(used)],
             f"{used} exists and is not empty"),
        ]
        for args, said in cases:
            _one_line_error(_miroir(args, tmp_path), said)
        done = _miroir(["dashboard", "user", "add", "tech", "--role", "it"], tmp_path,
                       dash_settings=False)
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines() == [
            "miroir: error: MIROIR_DASH_SITE is not set: expected text",
            "miroir: error: MIROIR_DASH_DB_PATH is not set: expected a file path"], done.stderr
        assert not (tmp_path / "b.bak").exists() and not (tmp_path / "new").exists()
    finally:
        shutil.rmtree(site)


def test_a_dashboard_port_already_taken_is_one_line_before_anything_starts(
        tmp_path: Path) -> None:
    """`miroir dashboard serve` whose HTTP port another process holds (a second dashboard, a
    proxy on the same port) migrated the database, created the admin, ran the retention purge,
    then uvicorn logged "ERROR: [Errno 98] error while attempting to bind ..." and exited 3, a
    code the README gives no meaning to, with no `miroir: error:` line. The port is bound
    first: one line naming the address and the variables, exit 2, no database written."""
    import socket

    site = new_site_dir()
    holder = socket.socket()
    try:
        done = _miroir(["provision", "site-init", "--site-dir", str(site), "--site", "paris-1",
                        "--broker-host", "localhost"], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = _miroir(["dashboard", "serve"], tmp_path,
                       MIROIR_DASH_HTTP_HOST="127.0.0.1", MIROIR_DASH_HTTP_PORT=str(port),
                       MIROIR_DASH_MQTT_CA=str(site / "ca" / "cert.pem"),
                       MIROIR_DASH_MQTT_CERT=str(site / "dashboard" / "cert.pem"),
                       MIROIR_DASH_MQTT_KEY=str(site / "dashboard" / "key.pem"),
                       MIROIR_DASH_ADMIN_PASSWORD_FILE=str(site / "admin-password"))
        _one_line_error(done, f"cannot listen on 127.0.0.1:{port} (MIROIR_DASH_HTTP_HOST, "
                              "MIROIR_DASH_HTTP_PORT): Address already in use")
        assert not (tmp_path / "dashboard.sqlite").exists()
    finally:
        holder.close()
        shutil.rmtree(site)


def test_a_number_on_the_command_line_is_taken_in_plain_digits_only(tmp_path: Path) -> None:
    """`provision site-init --port ٨٨٨٣` (Arabic-Indic digits), `8_883`, ` 8883` or `+8883`
    made a site whose broker listens on 8883, as Python's ``int`` reads them: what was typed
    is not what the broker config says. Each is now refused before anything is made, exit 2,
    naming the option and the rule; `8883` still makes the site."""
    for typed in ("٨٨٨٣", "8_883", " 8883", "+8883"):
        site = new_site_dir()
        try:
            done = _miroir(["provision", "site-init", "--site-dir", str(site), "--site",
                            "paris-1", "--broker-host", "localhost", "--port", typed], tmp_path)
            assert done.returncode == 2, (typed, done.returncode, done.stdout[-500:])
            assert done.stderr.strip().splitlines()[-1].endswith(
                f"error: argument --port: {typed} is not a whole number written with the "
                "digits 0-9 only"), done.stderr[-1000:]
            assert list(site.iterdir()) == [], typed
        finally:
            shutil.rmtree(site)
    site = new_site_dir()
    try:
        done = _miroir(["provision", "site-init", "--site-dir", str(site), "--site", "paris-1",
                        "--broker-host", "localhost", "--port", "8883"], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        shutil.rmtree(site)


def test_a_seats_row_and_col_in_the_floor_csv_are_taken_in_plain_digits_only(
        tmp_path: Path) -> None:
    """`miroir dashboard import` read a seat's ``row`` and ``col`` (its place on the floor map)
    with Python's ``int``: '١' (Arabic-Indic) put the seat on row 1 and '1_0' on row 10. Each is
    now one line naming the CSV line, the box and the column; nothing imported. Digits, with
    the spaces a spreadsheet leaves around a cell, are taken."""
    import sqlite3

    floor = tmp_path / "floor.csv"
    floor.write_text("box,seat,agent,team,row,col\nbox-001,A-01,priya,north,١,3\n"
                     "box-002,A-02,omar,north,2,1_0\n")
    done = _miroir(["dashboard", "import", str(floor)], tmp_path)
    _one_line_error(done, str(floor),
                    "line 2 (box box-001): row must be a whole number written with the digits "
                    "0-9 only (got '١')",
                    "line 3 (box box-002): col must be a whole number written with the digits "
                    "0-9 only (got '1_0')")
    db = sqlite3.connect(tmp_path / "dashboard.sqlite")
    try:
        assert db.execute("SELECT count(*) FROM seats").fetchone() == (0,)
    finally:
        db.close()
    floor.write_text("box,seat,agent,team,row,col\nbox-001,A-01,priya,north, 1 ,3\n")
    done = _miroir(["dashboard", "import", str(floor)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    db = sqlite3.connect(tmp_path / "dashboard.sqlite")
    try:
        assert db.execute("SELECT box, row, col FROM seats").fetchall() == [("box-001", 1, 3)]
    finally:
        db.close()
