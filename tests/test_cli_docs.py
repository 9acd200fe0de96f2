"""Every CLI command has help text and is documented in the README (as sqlite-utils does)."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from miroir.cli import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*prefix, name), helps.get(name), sub
                yield from _commands(sub, (*prefix, name))


def test_every_command_has_help_and_is_in_the_readme():
    commands = list(_commands(build_parser()))
    assert len(commands) >= 8
    names = {" ".join(path) for path, _, _ in commands}
    assert {"demo", "analyze", "edge run", "dashboard serve", "models build"} <= names
    for path, help_text, sub in commands:
        name = " ".join(path)
        assert help_text and len(help_text) > 10, f"`miroir {name}` has no help text"
        assert sub.description, f"`miroir {name}` has no description"
        for action in sub._actions:
            if action.dest != "help" and not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"`miroir {name}` option {action.dest} has no help text"
        assert f"miroir {name}" in README, f"`miroir {name}` is not in the README"


def _parsers(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """``(command path, parser)`` for the top parser and every command under it."""
    yield prefix, parser
    for path, _, sub in _commands(parser, prefix):
        if len(path) == len(prefix) + 1:
            yield from _parsers(sub, path)


def _default_text(value: object) -> str:
    """A default as a help text writes it: 600.0 as 600."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def test_every_option_with_a_default_gives_it_in_its_help():
    """`miroir bench edge --help` said "--repeats REPEATS  runs of each side (median)": how many
    runs when it is left out, the help did not say (3), nor for `bench vad --repeats` (5) or
    `dashboard user add --lang` (fr). Every option that has a default names it in its help."""
    missing = []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if (action.required or action.default in (None, argparse.SUPPRESS, False)
                    or isinstance(action, (argparse._HelpAction, argparse._VersionAction,
                                           argparse._SubParsersAction))):
                continue
            text = action.help or ""
            if not re.search(r"\bdefault\b", text) or _default_text(action.default) not in text:
                missing.append(f"miroir {' '.join(path)} {'/'.join(action.option_strings)} "
                               f"(default {_default_text(action.default)}): {text!r}")
    assert not missing, "\n".join(missing)


def test_help_runs_for_every_command():
    for path, _, _ in _commands(build_parser()):
        proc = subprocess.run([sys.executable, "-m", "miroir", *path, "--help"],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0 and "usage: miroir" in proc.stdout, path


def test_readme_opens_with_the_two_commands():
    blocks = README.split("```")
    assert len(blocks) >= 3
    lines = blocks[1].splitlines()[1:]  # after the language tag
    first = [line for line in lines if line.strip() and not line.startswith("#")]
    assert first == ["./run demo", "./run test"]
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "./run test" in ci


def test_readme_lists_the_campaign_defaults_as_the_code_has_them() -> None:
    """The README's campaign defaults are the code's, key for key and range for range."""
    from edge.campaign import defaults_toml

    assert "```toml\n" + defaults_toml().rstrip("\n") + "\n```" in README


def test_the_it_guide_adds_a_dashboard_user_the_way_that_works(tmp_path: Path) -> None:
    """The IT guide's command to add an IT user, run against the real CLI with the dashboard.env
    that `miroir provision site-init` writes (database moved into tmp). The bare
    `miroir dashboard user add tech --role it` the guide gave stops: no MIROIR_DASH_* settings."""
    import os
    import re
    import shlex
    import shutil

    from provisioning.broker import new_site_dir
    from provisioning.site import init_site

    guide = (Path(__file__).resolve().parents[1] / "docs" / "it-guide.md").read_text()
    line = next(ln for ln in guide.splitlines() if "dashboard user add tech --role it" in ln)
    assert line.startswith("sudo sh -c "), line
    root = new_site_dir("miroir-guide-")  # (the broker's user must reach a site folder)
    try:
        init_site(root / "site", "paris-1", broker_host="127.0.0.1", port=18883, bind="127.0.0.1")
        env_file = tmp_path / "dashboard.env"
        shutil.copy(root / "site" / "dashboard.env", env_file)
    finally:
        shutil.rmtree(root)
    db = tmp_path / "dashboard.sqlite"
    env_file.write_text(re.sub(r"^MIROIR_DASH_DB_PATH=.*$", f"MIROIR_DASH_DB_PATH={db}",
                               env_file.read_text(), flags=re.M))
    password = tmp_path / "password"
    password.write_text("a long enough password\n")
    script = shlex.split(line)[3]  # sudo sh -c SCRIPT
    script = script.replace("/var/lib/miroir-site/dashboard.env", str(env_file))
    script = script.replace("exec miroir ", f"exec {shlex.quote(sys.executable)} -m miroir ")
    script += f" --password-file {shlex.quote(str(password))}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIROIR_DASH_")}
    bare = subprocess.run([sys.executable, "-m", "miroir", "dashboard", "user", "add", "tech",
                           "--role", "it", "--password-file", str(password)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "MIROIR_DASH_SITE is not set" in bare.stderr, bare.stderr
    done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "added it tech" in done.stdout


def test_every_command_line_in_the_readme_parses() -> None:
    """Each `miroir ...` line of the README's command table, placeholders filled in and optional
    parts kept, is accepted by the real parser: a required option missing from the README (restore
    without --site-dir, site-init without --site) or a command that no longer exists fails."""
    import contextlib
    import io
    import re

    lines = [c for row in re.findall(r"^\| (`miroir [^|]*?)\|", README, re.M)
             for c in re.findall(r"`(miroir [^`]*)`", row)]
    assert len(lines) >= 25
    values = {"ROLE": "it"}  # a placeholder whose option takes only some values
    for line in lines:
        words = line.replace("[", " ").replace("]", " ").split()[1:]
        args = [values.get(w, "x") if not w.startswith("-") and (w.isupper() or "." in w) else w
                for w in words]
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                build_parser().parse_args(args)
        except SystemExit:
            raise AssertionError(f"README's `{line}`: {err.getvalue().strip()}") from None


def _doc_block(doc: str, needle: str) -> str:
    """The fenced ``sh`` block of ``docs/<doc>`` that holds ``needle`` (the command as written)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / doc).read_text()
    blocks = [b.split("\n", 1)[1] for b in text.split("```")[1::2] if b.startswith("sh\n")]
    found = [b for b in blocks if needle in b]
    assert found, f"docs/{doc} has no sh block with {needle!r}"
    return found[0]


def test_the_lan_https_certificate_command_of_the_tls_guide_works(tmp_path: Path) -> None:
    """docs/dashboard-tls.md's command for a LAN certificate from the site CA, run as written
    (paths into tmp): a server certificate for the given address, signed by the site CA, and the
    dashboard's identity at the broker left alone. The guide gave a Python call with undefined
    names (`provisioning.pki.issue(ca, dir, ...)`: NameError)."""
    import shutil

    from cryptography import x509

    from provisioning.broker import new_site_dir
    from provisioning.pki import load_cert
    from provisioning.site import init_site

    root = new_site_dir("miroir-guide-")
    try:
        site = root / "site"
        init_site(site, "paris-1", broker_host="127.0.0.1", port=18883, bind="127.0.0.1")
        identity = (site / "dashboard" / "cert.pem").read_bytes()
        script = _doc_block("dashboard-tls.md", "pki.issue").strip()
        assert script.startswith("sudo /opt/miroir/current/bin/python "), script
        script = script.removeprefix("sudo /opt/miroir/current/bin/python ")
        script = script.replace("/var/lib/miroir-site", str(site))
        done = subprocess.run(f"{sys.executable} {script}", shell=True, capture_output=True,
                              text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        cert = load_cert(site / "https" / "cert.pem")
        ca = load_cert(site / "ca" / "cert.pem")
        assert cert.issuer == ca.subject
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "192.168.10.5" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
        assert (site / "https" / "key.pem").stat().st_mode & 0o077 == 0
        assert (site / "dashboard" / "cert.pem").read_bytes() == identity
    finally:
        shutil.rmtree(root)


def test_the_it_guide_gives_the_enrolled_floor_to_the_dashboard(tmp_path: Path) -> None:
    """IT guide §2, followed as written: the floor CSV enrolled, then imported into the dashboard
    by the guide's command (dashboard.env from site-init, database into tmp); a supervisor of the
    team then has the two seats on the floor. The guide had no such step: the dashboard learns
    seats only from an import, and the supervisor's floor stayed empty while the boxes published."""
    import os
    import re
    import shlex
    import shutil

    from dashboard import access, auth, schema
    from dashboard import db as store
    from dashboard.routes.api import floor_data
    from provisioning.broker import new_site_dir
    from provisioning.inventory import parse_csv
    from provisioning.site import init_site

    guide = (Path(__file__).resolve().parents[1] / "docs" / "it-guide.md").read_text()
    csv_text = guide.split("```csv\n", 1)[1].split("```", 1)[0]
    floor_csv = tmp_path / "floor.csv"
    floor_csv.write_text(csv_text)
    root = new_site_dir("miroir-guide-")
    try:
        site = init_site(root / "site", "paris-1", broker_host="127.0.0.1", port=18883,
                         bind="127.0.0.1")
        site.enroll(parse_csv(floor_csv))
        env_file = tmp_path / "dashboard.env"
        shutil.copy(root / "site" / "dashboard.env", env_file)
    finally:
        shutil.rmtree(root)
    db_path = tmp_path / "dashboard.sqlite"
    env_file.write_text(re.sub(r"^MIROIR_DASH_DB_PATH=.*$", f"MIROIR_DASH_DB_PATH={db_path}",
                               env_file.read_text(), flags=re.M))
    db = store.open_db(db_path)
    schema.ensure_schema(db)
    auth.create_user(db, "claire", "a long enough password", "supervisor", teams=["north"])
    claire = access.load_user(db, "claire")
    assert floor_data(db, claire, "paris-1", False)["seats"] == []

    script = shlex.split(_doc_block("it-guide.md", "miroir dashboard import").strip())
    assert script[:3] == ["sudo", "sh", "-c"], script
    line = script[3].replace("/var/lib/miroir-site/dashboard.env", str(env_file))
    line = line.replace("exec miroir ", f"exec {shlex.quote(sys.executable)} -m miroir ")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIROIR_DASH_")}
    done = subprocess.run(["sh", "-c", line], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seats = floor_data(db, claire, "paris-1", False)["seats"]
    assert {(s["box"], s["label"], s["agent"], s["team"]) for s in seats} == {
        ("box-001", "A-01", "Priya", "north"), ("box-002", "A-02", "Rahul", "north")}
    db.conn.close()


def test_the_proxy_settings_of_the_tls_guide_read_the_same_through_sh(tmp_path: Path) -> None:
    """docs/dashboard-tls.md (a)'s dashboard.env lines, read as the IT guide's commands read that
    file (`sh -c 'set -a; . dashboard.env; ...'`): no error, and the dashboard's settings get both
    trusted proxies. Unquoted, sh cut the list at its space: "::1/128]: not found", and no
    trusted proxies."""
    lines = _doc_block("dashboard-tls.md", "MIROIR_DASH_TRUSTED_PROXIES")
    env_file = tmp_path / "dashboard.env"
    env_file.write_text(f"MIROIR_DASH_SITE=paris-1\nMIROIR_DASH_DB_PATH={tmp_path / 'db'}\n{lines}")
    code = ("from dashboard.settings import DashboardSettings; s = DashboardSettings(); "
            "print(s.http_port, s.trusted_proxies)")
    done = subprocess.run(["sh", "-c", f'set -a; . "{env_file}"; exec "$0" -c "$1"',
                           sys.executable, code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.strip() == "8000 ['127.0.0.1/32', '::1/128']"


def test_a_commands_mistyped_option_names_the_commands_usage_and_v_goes_after_it_too() -> None:
    """`miroir demo --bxoes 3` printed the top-level usage (`usage: miroir [-h] [--version] [-v]
    COMMAND ...`), not the demo's, and `miroir demo -v` was refused (-v only before the command).
    The command's own usage and a pointer to its --help now come, and -v is taken after it."""
    proc = subprocess.run([sys.executable, "-m", "miroir", "demo", "--bxoes", "3"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: miroir demo [-h] [-v] [--boxes BOXES]"), proc.stderr
    assert "miroir demo: error: unrecognized arguments: --bxoes 3 (`miroir demo --help` lists " \
           "its options)" in proc.stderr, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "miroir", "edge", "run", "--config", "x.toml",
                           "--lop"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("usage: miroir edge run "), proc.stderr
    parser = build_parser()
    assert parser.parse_args(["demo", "-v", "--boxes", "3"]).verbose is True
    assert parser.parse_args(["-v", "demo"]).verbose is True
    assert parser.parse_args(["demo", "--boxes", "3"]).verbose is False
    assert parser.parse_args(["provision", "expiry", "--verbose"]).verbose is True



def test_a_prefix_of_an_option_is_refused_as_a_mistyped_option(tmp_path: Path) -> None:
    """argparse took a prefix of an option for the option: `miroir dashboard user add x --rol it`
    added an `it` user, `miroir demo --second 5` ran a 5-s demo, `miroir --verb ...` logged in
    debug, while the README says a mistyped option prints the command's usage (and a prefix that
    names one option today names another once an option is added). Every parser of the CLI, the
    command groups' included, refuses a prefix: exit 2, the command's usage; full names work."""
    parser = build_parser()
    assert [path for path, sub in _parsers(parser) if sub.allow_abbrev] == []
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIROIR_DASH_")}
    env |= {"MIROIR_DASH_SITE": "paris-1", "MIROIR_DASH_DB_PATH": str(tmp_path / "d.sqlite")}
    unknown = "error: unrecognized arguments: "
    for args, usage, said in (
            (["dashboard", "user", "add", "x", "--rol", "it"], "miroir dashboard user add",
             "error: the following arguments are required: --role"),
            (["dashboard", "user", "add", "x", "--role", "it", "--lan", "en"],
             "miroir dashboard user add", unknown + "--lan"),
            (["demo", "--second", "0.1", "--json"], "miroir demo", unknown + "--second"),
            (["provision", "expiry", "--site-dir", str(tmp_path), "--day", "3"],
             "miroir provision expiry", unknown + "--day"),
            (["--verb", "provision", "expiry", "--site-dir", str(tmp_path)], "miroir",
             unknown + "--verb")):
        proc = subprocess.run([sys.executable, "-m", "miroir", *args], capture_output=True,
                              text=True, check=False, timeout=60, env=env,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith(f"usage: {usage} [-h]"), (args, proc.stderr)
        assert said in proc.stderr, (args, proc.stderr)
    assert parser.parse_args(["dashboard", "user", "add", "x", "--role", "it"]).role == "it"
    assert parser.parse_args(["demo", "--seconds", "0.1", "--json"]).seconds == 0.1
    assert parser.parse_args(["provision", "expiry", "--days", "3"]).days == 3
    assert parser.parse_args(["--verbose", "provision", "expiry"]).verbose is True



def test_every_parser_in_the_repository_refuses_option_prefixes() -> None:
    """The scripts outside the CLI (``python -m provisioning.bundle``, the benches, the update
    recovery, the firmware proofs) took `--out` for `--output` too: every ``ArgumentParser(...)``
    written in the repository passes ``allow_abbrev=False``."""
    import ast

    taking: list[str] = []
    found = 0
    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.rglob("*.py")):
        if ".venv" in path.parts or "build" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "ArgumentParser":
                found += 1
                if not any(k.arg == "allow_abbrev" and isinstance(k.value, ast.Constant)
                           and k.value.value is False for k in node.keywords):
                    taking.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found >= 15
    assert taking == [], f"parsers taking option prefixes: {taking}"

def test_the_readme_says_what_analyze_prints_in_text_and_in_json() -> None:
    """`miroir analyze` on a real headset pair: each part of its JSON is named in the README's row,
    and the text output is what the row says it is, a summary. The row said the command printed
    "call metrics, conversation (calls, overlaps, latency), prosody, ... the call summary", with
    `--json` adding only the VAD; the text printed none of the conversation, prosody or summary."""
    import json
    import re

    row = next(line for line in README.splitlines() if line.startswith("| `miroir analyze "))
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "ami-headsets"
    args = [sys.executable, "-m", "miroir", "analyze", str(shared / "source0.wav"), "--far",
            str(shared / "source1.wav")]
    done = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    named = set(re.findall(r"`([a-z_.]+)`", row))
    assert set(json.loads(done.stdout)) - named == set(), "JSON parts the README does not name"
    text = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    kinds = {"cue" if line.startswith("cue ") else re.sub(r"[:(].*", "", line).strip()
             for line in text.stdout.splitlines()}
    assert {"duration", "agent", "line", "cue"} <= kinds <= {"duration", "agent", "line", "cue",
                                                             "fatigue index"}, text.stdout
    summary = row.split("with `--json`", 1)[0]
    for said in ("length", "speech share", "cues raised", "fatigue index"):
        assert said in summary, said


def test_analyze_says_in_its_docstring_every_part_of_what_it_returns() -> None:
    """`edge.pipeline.analyze`'s Returns, which a reader of the code goes by, said "per-call
    metrics" (one row per 1 s window: 60 for the 60 s headset pair) and "the agent's prosody"
    (both sides'), and named none of its parts: `call`, `affect`, `events`, `vad`... Each
    top-level key of its result, on a real headset pair, is now named in it as written."""
    from edge.pipeline import analyze, load_vad_model
    from edge.source import pair, read_wav

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "ami-headsets"
    audio = pair(read_wav(shared / "source0.wav"), read_wav(shared / "source1.wav"))
    result = analyze(audio[:, : 16_000 * 10], load_vad_model())
    returns = (analyze.__doc__ or "").split("Returns:", 1)[1]
    named = set(re.findall(r"``([a-z_]+)``", returns))
    assert set(result) - named == set(), "parts of analyze()'s result its docstring does not name"
    # one row per 1 s window, many for the one call: the rows are not per call
    assert len(result["metrics"]) >= 9 > len(result["conversation"]["calls"])
    assert "per-call metrics" not in returns


def test_the_readme_names_every_module_of_the_box_and_of_provisioning() -> None:
    """The README's "Where each part lives" names each module of `edge/` and `provisioning/`: it
    left out 8 of edge's 26 (the cues, `signals.py`, and fatigue, `fatigue.py`, among them) and
    `provisioning/expiry.py`."""
    root = Path(__file__).resolve().parents[1]
    for folder in ("edge", "provisioning"):
        row = next(line for line in README.splitlines() if line.startswith(f"| `{folder}/` |"))
        modules = {p.name for p in (root / folder).glob("*.py")} - {"__init__.py"}
        missing = {name for name in modules if f"`{name}`" not in row}
        assert not missing, f"README's {folder}/ row lacks {sorted(missing)}"


def _code_spans(text: str) -> list[str]:
    """The code of a markdown text: each fenced block (its lines continued by ``\\`` joined) and
    each inline span."""
    spans = []
    for i, part in enumerate(text.split("```")):
        if i % 2:  # a fenced block, after its language tag
            spans.append(part.partition("\n")[2].replace("\\\n", " "))
        else:
            spans += re.findall(r"`([^`\n]+)`", part)
    return spans


_SHELL_STOP = re.compile(r"^(?:;|\||&&|>|<|#|\\\|)")
"""A word that ends a command in a shell line (a markdown table writes a pipe as ``\\|``)."""


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _quoted_command_problems(text: str, parser: argparse.ArgumentParser) -> list[str]:
    """Each `miroir` command (also `./run demo` and `.../bin/miroir`) quoted in ``text``'s code
    whose command path or one of whose options the real ``parser`` lacks (nothing is run)."""
    problems = []
    for span in _code_spans(text):
        for line in span.splitlines():
            line = line.replace("./run demo", "miroir demo")
            for m in re.finditer(r"(?:(?<![\w/.$-])|(?<=/bin/))miroir\s+(.*)", line):
                words = m.group(1).replace("`", " ").split()
                if not words or not re.fullmatch(r"-.*|[a-z][a-z-]*", words[0].strip("'\"")):
                    continue  # prose, such as `mail -s miroir it@example.fr`
                current, path, positional = parser, ["miroir"], False
                for word in words:
                    if _SHELL_STOP.match(word):
                        break
                    word_end = word.endswith(("'", ";"))  # the end of `sh -c '...'`
                    word = word.strip("'\";")
                    if word.startswith("--") or re.fullmatch(r"-[a-zA-Z]", word):
                        if word.split("=")[0] not in current._option_string_actions:
                            problems.append(f"`{' '.join(path)}` has no option "
                                            f"{word.split('=')[0]}: {line.strip()}")
                    elif not positional and word in _subcommands(current):
                        current = _subcommands(current)[word]
                        path.append(word)
                    else:
                        if _subcommands(current) and not positional:
                            problems.append(f"`{' '.join(path)}` has no command {word!r}: "
                                            f"{line.strip()}")
                        positional = True
                    if word_end:
                        break
    return problems


def test_every_command_and_option_quoted_in_the_docs_exists() -> None:
    """The commands quoted in README.md and docs/*.md were checked by hand, but for the README's
    table: a renamed command or option left a guide telling site IT to type one that fails. Every
    `miroir` command path and `--option` quoted in their code now exists in the real parser."""
    root = Path(__file__).resolve().parents[1]
    parser = build_parser()
    # the check itself bites: a mistyped command, a missing option, one after `sh -c '...`
    assert _quoted_command_problems(
        "`miroir dashbaord serve` and\n```sh\nsudo miroir demo --bxoes 3 | tee log\n"
        "sudo sh -c 'set -a; . env; exec miroir edge update --prevous'\n```", parser) == [
        "`miroir` has no command 'dashbaord': miroir dashbaord serve",
        "`miroir demo` has no option --bxoes: sudo miroir demo --bxoes 3 | tee log",
        "`miroir edge update` has no option --prevous: sudo sh -c 'set -a; . env; exec miroir "
        "edge update --prevous'"]
    options: set[str] = set()
    for _, sub in _parsers(parser):
        options.update(sub._option_string_actions)
    quoted = 0
    problems = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = doc.read_text()
        spans = _code_spans(text)
        quoted += sum(len(re.findall(r"miroir\s+[a-z-]", s)) for s in spans)
        problems += [f"{doc.name}: {p}" for p in _quoted_command_problems(text, parser)]
        # an option quoted alone (`--days N`) is one of a miroir command's, or one the same
        # document quotes with the script it belongs to (`python -m bench.cues --seeds 4`)
        scripts = " ".join(s for s in spans if s.startswith("python -m "))
        for span in spans:
            m = re.fullmatch(r"(--[a-z][a-z0-9-]*)(?:[ =].*)?", span)
            if m and m.group(1) not in options and not re.search(rf"{m.group(1)}\b", scripts):
                problems.append(f"{doc.name}: `{span}` is no option of a command")
    assert quoted >= 100
    assert not problems, "\n".join(problems)


def test_a_count_or_duration_that_is_not_positive_is_a_usage_error() -> None:
    """`miroir bench vad --repeats 0` ran the models, then gave a traceback ("no median for empty
    data"), exit 1; so did `bench affect --repeats 0`, `bench edge --seconds 0` (division by
    zero) and `bench latency --samples 0` (after starting a broker and a dashboard), and `bench
    edge --seconds 5` (a RuntimeError on its audio). They are refused as usage errors naming the
    option, the first at once."""
    cases = [("bench", "edge", "--repeats"), ("bench", "edge", "--seconds"),
             ("bench", "vad", "--repeats"), ("bench", "affect", "--repeats"),
             ("bench", "latency", "--samples"), ("bench", "latency", "--boxes")]
    for *command, option in cases:
        for value in ("0", "-2"):
            proc = subprocess.run([sys.executable, "-m", "miroir", *command, option, value],
                                  capture_output=True, text=True, timeout=60, check=False)
            assert proc.returncode == 2, (command, option, value, proc.stderr[-2000:])
            assert proc.stderr.splitlines()[-1] == (
                f"miroir {' '.join(command)}: error: argument {option}: {value} is not a "
                "positive number"), proc.stderr
    # too short for the bench's two-party audio (each channel at least half speech): one line
    proc = subprocess.run([sys.executable, "-m", "miroir", "bench", "edge", "--seconds", "5",
                           "--repeats", "1"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(
        "miroir: error: --seconds 5: the bench's audio is not at least half speech on each "
        "channel over its first 5 s"), proc.stderr


def test_every_range_the_cli_enforces_is_in_its_help() -> None:
    """`miroir demo --help` said "--boxes BOXES  number of simulated boxes (default 8)", and
    `--boxes 201` was refused ("between 1 and 200") only once run; so were a demo or site-init
    `--port` outside 1..65535 and the bench ingest's floors; `edge update --health-timeout-s 0` or
    `--soak-s -1` were taken as given. Each such option gives its range in
    its help, and a value outside it is a usage error of that command naming the option."""
    site_init = ("--site", "s", "--broker-host", "h")
    cases = [(("demo",), (), "--boxes", "1 to 200", "201"),
             (("demo",), (), "--port", "1 to 65535", "70000"),
             (("demo",), (), "--seconds", "positive", "0"),
             (("provision", "site-init"), site_init, "--port", "1 to 65535", "0"),
             (("bench", "ingest"), (), "--boxes", "1 or more", "0"),
             (("bench", "ingest"), (), "--duration", "1 or more", "0.5"),
             (("bench", "ingest"), (), "--rate", "positive", "0"),
             (("bench", "ingest"), (), "--per-process", "1 or more", "0"),
             (("edge", "update"), (), "--health-timeout-s", "positive", "0"),
             (("edge", "update"), (), "--soak-s", "0 or more", "-1")]
    parsers = dict(_parsers(build_parser()))
    for path, extra, option, words, bad in cases:
        action = next(a for a in parsers[path]._actions if option in a.option_strings)
        assert words in (action.help or ""), (path, option, action.help)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as stop:
            build_parser().parse_args([*path, *extra, option, bad])
        assert stop.value.code == 2, (path, option)
        last = err.getvalue().splitlines()[-1]
        assert last.startswith(f"miroir {' '.join(path)}: error: argument {option}: {bad} "), last
        assert words in last, last


def test_the_it_guide_lists_every_dashboard_setting_with_its_default() -> None:
    """Some `MIROIR_DASH_*` settings (the MQTT ones, the admin's name, the session's idle time,
    the purge's interval) were named in no document: site IT could learn them only from the
    code. The IT guide's table gives each variable, its default and what it accepts."""
    from dashboard.settings import DashboardSettings, allowed, env_name

    guide = Path("docs/it-guide.md").read_text()
    rows = {line.split("|")[1].strip().strip("`"): [c.strip() for c in line.split("|")[2:4]]
            for line in guide.split("## 7. Every dashboard setting")[1].splitlines()
            if line.startswith("| `MIROIR_DASH_")}
    assert set(rows) == {env_name(name) for name in DashboardSettings.model_fields}
    for name, field in DashboardSettings.model_fields.items():
        default, accepts = rows[env_name(name)]
        assert accepts == allowed(name), name
        if isinstance(field.default, (int, float)) and not isinstance(field.default, bool):
            assert float(default) == field.default, name
        assert (default == "(required)") == field.is_required(), name


def test_the_it_guide_says_how_long_an_update_waits_before_it_exits_5() -> None:
    """The guide said an update whose broker goes away during the check exits 5, not that it
    then waits up to 90 s and 40 s for the new release and 90 s more for the release put back
    (measured with the broker lost at the switch: exit 5 after 224 s, 90 s with it down from the
    start): a command still waiting at two minutes looked hung. The figures follow the code."""
    from edge.cli import BROKER_SETTLE_S

    args = build_parser().parse_args(["edge", "update", "x.release"])
    check_s, settle_s = args.health_timeout_s, BROKER_SETTLE_S
    row = next(line for line in Path("docs/it-guide.md").read_text().splitlines()
               if line.startswith("| update a box |"))
    assert (f"says so after those {check_s:.0f} s (exit 5" in row)
    assert (f"rolled back as not checked (exit 5) after up to {2 * check_s + settle_s:.0f} s: "
            f"{check_s:.0f} s and {settle_s:.0f} s for the new release, then {check_s:.0f} s for "
            "the one put back") in row


def test_every_option_of_every_command_is_named_in_the_docs() -> None:
    """30 options were in `--help` and in no document: among them the backup's
    `--passphrase-file` (a backup from cron cannot be asked for one), `site-init --extra-host`
    and `--admin-user`, `revoke --no-kick` and the broker's reload (`--broker-pid`,
    `--broker-unit`), `edge check --device`, `edge update --recover` and its box paths, the
    dashboard user's `--lang`, and the benches' and models' own. Each is named in README.md or
    docs/*.md, where site IT and developers look before they look at `--help`."""
    root = Path(__file__).resolve().parents[1]
    docs = "".join(p.read_text() for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))])
    missing = sorted({f"miroir {' '.join(path)} {option}"
                      for path, parser in _parsers(build_parser())
                      for action in parser._actions for option in action.option_strings
                      if option.startswith("--") and option not in ("--help", "--version",
                                                                    "--verbose")
                      and not re.search(rf"{re.escape(option)}\b", docs)})
    assert not missing, "\n".join(missing)
    # and a number the README's table gives an option of the row's command is its default
    parsers = dict(_parsers(build_parser()))
    wrong, checked = [], 0
    for line in README.splitlines():
        head = re.match(r"\| `miroir ([a-z][a-z -]*)", line)
        words = tuple(head.group(1).split()) if head else ()
        path = next((words[:n] for n in range(len(words), 0, -1) if words[:n] in parsers), ())
        if not path:
            continue
        actions = {o: a for a in parsers[path]._actions for o in a.option_strings}
        for option, value in re.findall(r"\[?(--[a-z][a-z-]*) (\d+(?:\.\d+)?)\b", line):
            checked += option in actions
            if option in actions and float(value) != float(actions[option].default):
                wrong.append(f"miroir {' '.join(path)} {option}: README {value}, "
                             f"default {actions[option].default}")
    assert checked >= 10 and not wrong, "\n".join(wrong)


def test_every_exit_code_of_its_own_is_in_the_commands_readme_row() -> None:
    """The README says every command exits 0, 2, 130 or 141, "and the codes a command's row
    gives of its own"; `miroir edge run` also exits 75 after a `reload` command (for systemd to
    start it again) and `miroir demo --seconds` 1 when a box did not report or a message was lost,
    and their rows named neither. Each code a command has of its own is in its row."""
    from dashboard.cli import UNKNOWN_BOX_EXIT
    from edge.box import EXIT_RELOAD
    from edge.cli import EXIT_BROKER_UNREACHABLE, EXIT_REFUSED, EXIT_ROLLED_BACK

    own = {"demo": [1], "edge run": [EXIT_RELOAD], "edge check": [1], "provision expiry": [1],
           "edge update": [EXIT_REFUSED, EXIT_ROLLED_BACK, EXIT_BROKER_UNREACHABLE],
           "dashboard retire": [UNKNOWN_BOX_EXIT]}
    missing = []
    for command, codes in own.items():
        row = next(line for line in README.splitlines() if line.startswith(f"| `miroir {command}"))
        said = " ".join(re.findall(r"\bexits? ([^;|]*)", row))  # each clause giving codes
        missing += [f"miroir {command}: {code}" for code in codes
                    if not re.search(rf"(?<![\d.]){code}(?![\d.]| s\b| to\b| or more)", said)]
    assert not missing, "\n".join(missing)


AGENT_MEASURES = {
    "voiced_ratio": "voiced share", "level_dbfs": "loudness", "f0_median_hz": "pitch",
    "pitch_range_st": "pitch", "pitch_movement_st_s": "pitch", "hnr_db": "HNR",
    "jitter": "jitter", "shimmer": "shimmer", "rate_syl_s": "speech rate",
    "articulation_rate_syl_s": "articulation rate", "pauses_per_min": "pauses",
    "breaths_per_min": "breaths", "hesitations_per_min": "filled pauses",
}
"""Each measure of a channel's voice the box publishes (``near_<name>``, ``far_<name>``) and the
words docs/privacy.md names it by."""


def test_the_privacy_page_names_every_measure_of_the_agents_voice_the_box_publishes() -> None:
    """docs/privacy.md, for the data-protection officer, said the agent's channel gave "pitch,
    loudness, rate, pauses, overlaps, latencies": the box also publishes the agent's voice
    quality (HNR, jitter, shimmer), breaths and filled pauses, the fatigue index with the drift
    of each of them and a break suggestion, and posture cues (miroir/wire.py). Its table now
    names each, and a measure added to the wire must be named there too."""
    from miroir import wire

    privacy = (Path(__file__).resolve().parents[1] / "docs" / "privacy.md").read_text()
    row = next(line for line in privacy.splitlines() if line.startswith("| agent prosody"))
    near = {name[len("near_"):] for name in wire.ALLOWED_FIELDS["metrics"]
            if name.startswith("near_") and name not in ("near_speech_ratio", "near_talking",
                                                          "near_signal")}
    assert near == set(AGENT_MEASURES)
    missing = sorted({w for w in AGENT_MEASURES.values() if w.lower() not in row.lower()})
    assert not missing, f"the agent's row of docs/privacy.md does not name: {missing}"
    for words in ("fatigue", "break suggestion", "posture cues", "overlaps", "latencies"):
        assert words in row, words


def _bench_options_quoted(text: str) -> dict[str, set[str]]:
    """Each ``python -m bench.X`` a markdown text quotes (inline spans may run over a line break),
    with the options quoted after it."""
    quoted: dict[str, set[str]] = {}
    for module, rest in re.findall(r"`python -m (bench\.[a-z_]+)([^`]*)`", text):
        quoted.setdefault(module, set()).update(re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", rest))
    return quoted


def test_every_option_the_docs_give_a_bench_script_is_one_of_its_own() -> None:
    """The README names the command behind each figure as `python -m bench.X --option`; those
    commands were checked by no test (only `miroir` ones are), so a renamed option left a figure
    that nobody could reproduce as written. Each bench script quoted in README.md or docs/*.md runs
    its `--help`, and every option quoted with it is in that help."""
    root = Path(__file__).resolve().parents[1]
    # the check itself bites: a span over a line break, an option that is not the script's
    assert _bench_options_quoted("(`python -m bench.analyze --minutes 1\n--rates 8000`)") == {
        "bench.analyze": {"--minutes", "--rates"}}
    quoted: dict[str, set[str]] = {}
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for module, options in _bench_options_quoted(doc.read_text()).items():
            quoted.setdefault(module, set()).update(options)
    assert len(quoted) >= 8 and sum(map(len, quoted.values())) >= 5
    checked = {module: set(options) for module, options in quoted.items()}
    checked.setdefault("bench.analyze", set()).add("--rates")  # no option of it: must be reported
    problems = []
    for module, options in sorted(checked.items()):
        proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                              cwd=root, timeout=120, check=False)
        assert proc.returncode == 0, f"python -m {module} --help: {proc.stderr[-500:]}"
        problems += [f"python -m {module} {o}" for o in sorted(options)
                     if not re.search(rf"(?<![\w-]){o}(?![\w-])", proc.stdout)]
    assert problems[:1] == ["python -m bench.analyze --rates"], problems  # the bait above
    assert not problems[1:], "options the docs quote that the script lacks:\n" + "\n".join(problems[1:])


def _code_names(root: Path) -> tuple[str, list[re.Pattern[str]]]:
    """The code that prints figures (not the tests) as one text, and the shape of each f-string
    that starts with a name (``f"rss_mb_per_hour_{r}"``: ``rss_mb_per_hour_.+``)."""
    files = [p for d in ("bench", "edge", "miroir", "models") for p in sorted((root / d).rglob("*.py"))]
    code = "\n".join(p.read_text() for p in files)
    shapes = [re.compile(re.sub(r"\\\{[^}]*\\\}", ".+", re.escape(s)))
              for s in re.findall(r"""\bf["']([a-z][a-z0-9]*_[a-z0-9_]*\{[^"'\n]*)["']""", code)]
    return code, shapes


def test_every_key_the_readme_measures_is_one_the_code_prints() -> None:
    """Each figure in the README's "Measured" names the key its command prints (`pause_recall`,
    `rss_mb_per_hour_16000`, ...); a figure with no key and no command could not be re-measured
    (eight of them were a reviewer's one-offs). Every such key quoted there is a name in the code,
    literally or as an f-string makes it (a measure on the wire with its side, a test by its name)."""
    root = Path(__file__).resolve().parents[1]
    section = README[README.index("## Measured"):]
    section = section[:section.index("\n## ")]
    keys = sorted(set(re.findall(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)+)`", section)))
    assert len(keys) >= 30
    code, shapes = _code_names(root)
    tests = "\n".join(p.read_text() for p in sorted((root / "tests").glob("test_*.py")))

    def printed(key: str) -> bool:
        side, _, name = key.partition("_")
        return bool(re.search(rf"(?<!\w){key}(?!\w)", code) or any(s.fullmatch(key) for s in shapes)
                    or (side in ("near", "far") and re.search(rf"(?<!\w){name}(?!\w)", code))  # the wire's
                    or (side == "test" and re.search(rf"def {key}\(", tests)))

    missing = [k for k in keys if not printed(k)]
    assert not missing, f"keys the README quotes that no code prints: {missing}"


def test_the_it_guide_lists_every_ingest_counter_prometheus_gets() -> None:
    """The ingest's counters that `/metrics` exports (dashboard.prom.INGEST_COUNTERS) are the
    ones the IT guide's "Series" line names for the site's alert rules, no more, no fewer."""
    import re

    from dashboard.prom import INGEST_COUNTERS

    line = next(x for x in Path("docs/it-guide.md").read_text().splitlines()
                if x.startswith("Series: `miroir_ingest_{"))
    m = re.match(r"Series: `miroir_ingest_\{([a-z_,]+)\}_total`", line)
    assert m, line
    named = {f"miroir_ingest_{n}" for n in m.group(1).split(",")}
    assert named == {name for _, name, _ in INGEST_COUNTERS}
