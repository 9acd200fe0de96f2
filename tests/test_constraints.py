"""constraints.txt pins every package ./run installs, within pyproject.toml's ranges, and is what runs."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, Version]:
    """The constraints file as {canonical name: pinned version}; every line must be name==version."""
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and re.fullmatch(r"[A-Za-z0-9._-]+", name), f"not an exact pin: {line!r}"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def _installed_extras() -> list[str]:
    """The extras ./run installs (its EXTRAS line)."""
    m = re.search(r'^EXTRAS="([a-z,-]+)"$', (ROOT / "run").read_text(), re.M)
    assert m, "./run has no EXTRAS line"
    return m.group(1).split(",")


def test_every_dependency_run_installs_is_pinned_within_its_range() -> None:
    pins = _pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in _installed_extras():
        requirements += [Requirement(r) for r in project["optional-dependencies"][extra]]
    assert len(requirements) > 20
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} ({req}) is not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject.toml's {req}"


def test_the_suite_runs_on_the_pinned_versions() -> None:
    pins = _pins()
    pins.pop("pip")
    differ = {name: (str(want), metadata.version(name)) for name, want in pins.items()
              if Version(metadata.version(name)) != want}
    assert not differ, f"installed versions differ from constraints.txt (pinned, installed): {differ}"


def test_run_installs_with_the_constraints() -> None:
    run = (ROOT / "run").read_text()
    installs = [line for line in run.replace("\\\n", " ").splitlines() if "pip install" in line]
    assert len(installs) == 2
    assert all("-c constraints.txt" in line for line in installs), installs
    assert "cat pyproject.toml constraints.txt | sha256sum" in run, "a changed pin must reinstall"
