"""Which package may import which: the dashboard shares only the small ``miroir/`` package with the box."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported(path: Path) -> set[str]:
    """The top-level package of every module a file imports (at its top or inside a function)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_dashboard_imports_nothing_of_the_box() -> None:
    """The dashboard imported ``edge.journal`` (its log throttle) and ``edge.update`` (the version
    order): code both use lives in ``miroir/``, so the server never loads the box's package."""
    files = sorted((ROOT / "dashboard").rglob("*.py"))
    assert len(files) > 20
    importing = [str(p.relative_to(ROOT)) for p in files if "edge" in _imported(p)]
    assert importing == [], f"dashboard modules importing edge: {importing}"


def test_the_shared_modules_import_neither_the_box_nor_the_dashboard() -> None:
    """``miroir/``'s shared modules (all but the CLI, which starts either) stand alone."""
    shared = [p for p in sorted((ROOT / "miroir").glob("*.py")) if p.name not in ("cli.py", "__main__.py")]
    assert {"wire.py", "journal.py", "versions.py"} <= {p.name for p in shared}
    importing = [str(p.relative_to(ROOT)) for p in shared if _imported(p) & {"edge", "dashboard"}]
    assert importing == [], f"shared modules importing the box or the dashboard: {importing}"


def _defined(path: Path) -> set[str]:
    """The names a module assigns at its top level."""
    tree = ast.parse(path.read_text(), str(path))
    return {t.id for node in tree.body if isinstance(node, ast.Assign | ast.AnnAssign)
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(t, ast.Name)}


def test_the_audio_format_and_the_day_are_defined_once() -> None:
    """``RATE_HZ``/``FRAME_SAMPLES``/``FRAME_S`` were defined again in 9 modules besides
    edge/frames.py (bench/farend.py's rate as ``RATE``), ``DAY_S`` in 5 besides miroir/wire.py: each
    now imports the one definition but the demo, which keeps its rate (importing edge.frames would
    load numpy), equal to the box's."""
    from demo import calls
    from edge import frames

    owners = {"RATE_HZ": {"edge/frames.py", "demo/calls.py"}, "FRAME_SAMPLES": {"edge/frames.py"},
              "FRAME_S": {"edge/frames.py"}, "DAY_S": {"miroir/wire.py"}}
    folders = ("miroir", "edge", "dashboard", "provisioning", "models", "demo", "bench")
    found: dict[str, set[str]] = {name: set() for name in owners}
    for path in (p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))):
        for name in _defined(path) & owners.keys():
            found[name].add(str(path.relative_to(ROOT)))
    assert found == owners
    assert calls.RATE_HZ == frames.RATE_HZ
