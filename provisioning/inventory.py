"""The site inventory: which box sits at which seat with which agent, and its certificate state.

Kept as ``inventory.json`` in the site directory, always replaced atomically (write a temporary
file, then rename), so a crash never leaves half an inventory. The dashboard reads it to list
sites, boxes, seats, agents and teams. Bulk enrolment reads a CSV file whose bad rows are all
reported with their line numbers before anything is written.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from miroir.files import atomic_write
from miroir.labels import LABEL_RULE, is_label
from miroir.wire import ID_PATTERN
from provisioning.pki import RESTORE

INVENTORY_FILE = "inventory.json"
INVENTORY_MODE = 0o600
"""Root's only: it names the agents and holds every certificate's serial."""
CSV_COLUMNS = ("box", "seat", "agent", "team")
REQUIRED_COLUMNS = ("box", "seat")

SEMICOLONS = ("the columns are separated by ';', not ',': save the file from Excel as "
              "\"CSV UTF-8 (délimité par des virgules)\", then run the command again")
"""Excel's French "CSV" separates with semicolons; both readers of a floor file say so."""

ACTIVE = "active"
REVOKED = "revoked"


class InventoryError(ValueError):
    """A bad enrolment request or CSV file; ``problems`` lists every one, with line numbers."""

    def __init__(self, problems: list[str], sound: Sequence[Enrolment] = ()) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.sound = list(sound)
        """The CSV rows with no problem of their own (still to check against the site)."""


@dataclass(frozen=True)
class Enrolment:
    """One box to enrol: its id, seat, and optionally agent and team."""

    box: str
    seat: str
    agent: str = ""
    team: str = ""
    line: int = 0
    """Line number in the CSV file it came from (0 when given on the command line)."""
    source: str = ""
    """The CSV file it came from ("" when given on the command line)."""

    @property
    def where(self) -> str:
        """Where the request came from, for messages: ``floor.csv:3`` or ``box box-001``."""
        return f"{self.source}:{self.line}" if self.line else f"box {self.box}"


@dataclass
class BoxRecord:
    """What the site knows about one enrolled box."""

    box: str
    seat: str
    agent: str = ""
    team: str = ""
    state: str = ACTIVE
    serial: str = ""
    """Hex serial number of the box's current certificate."""
    not_after: str = ""
    """Expiry of the current certificate (ISO 8601, UTC)."""
    enrolled_ts: float = 0.0
    revoked_ts: float | None = None
    previous_serials: list[str] = field(default_factory=list)
    """Serials replaced by a rotation and still valid until ``rotate --finish``."""


def check_enrolment(item: Enrolment, where: str) -> list[str]:
    """Return the problems of one enrolment request (empty when it is fine)."""
    problems = []
    if not ID_PATTERN.fullmatch(item.box):
        problems.append(f"{where}: box id {item.box!r} is not 1 to 32 characters of [a-z0-9-]")
    if not item.seat:
        problems.append(f"{where}: seat is empty")
    for name in ("seat", "agent", "team"):
        value = getattr(item, name)
        if value and not is_label(value):
            problems.append(f"{where}: {name} {value!r} must be {LABEL_RULE}")
    return problems


def parse_csv(path: Path) -> list[Enrolment]:
    """Read an enrolment CSV (header ``box,seat[,agent][,team]``), checking every row.

    Args:
        path: The CSV file (UTF-8, comma-separated, with a header line).

    Returns:
        The enrolments in file order.

    Raises:
        InventoryError: listing every bad row by line number (nothing is returned then).
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InventoryError([f"{path}: no such file"]) from None
    except UnicodeDecodeError as exc:
        raise InventoryError([f"{path}: not UTF-8 text ({exc.reason})"]) from None
    reader = csv.reader(text.splitlines())
    problems: list[str] = []
    header: list[str] | None = None
    items: list[Enrolment] = []
    sound: list[Enrolment] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        cells = [cell.strip() for cell in row]
        if header is None:
            if len(cells) == 1 and ";" in cells[0]:
                raise InventoryError([f"{path}:{line}: {SEMICOLONS}"])
            while not cells[-1]:  # the commas of columns deleted in Excel: box,seat,agent,team,,
                cells.pop()
            header = [c.lower() for c in cells]
            unknown = [c for c in header if c not in CSV_COLUMNS]
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if unknown or missing or len(set(header)) != len(header):
                raise InventoryError([
                    f"{path}:{line}: header must name the columns {', '.join(CSV_COLUMNS)} "
                    f"(box and seat required, each once); got {', '.join(cells)}"])
            continue
        where = f"{path}:{line}"
        if not any(cells[len(header):]):  # empty cells under the header's empty names
            cells = cells[:len(header)]
        if len(cells) != len(header):
            problems.append(f"{where}: {len(cells)} fields, expected {len(header)}")
            continue
        values = dict(zip(header, cells, strict=True))
        item = Enrolment(box=values["box"], seat=values["seat"], agent=values.get("agent", ""),
                         team=values.get("team", ""), line=line, source=str(path))
        own = check_enrolment(item, where)
        if item.box in seen:
            own.append(f"{where}: box {item.box!r} already on line {seen[item.box]}")
        seen.setdefault(item.box, line)
        problems += own
        items.append(item)
        if not own:
            sound.append(item)
    if header is None:
        problems.append(f"{path}: empty (a header line box,seat,agent,team is needed)")
    if problems:
        raise InventoryError(problems, sound)
    return items


class Inventory:
    """The boxes of one site, loaded from and saved to ``inventory.json``."""

    def __init__(self, site: str, boxes: Iterable[BoxRecord] = ()) -> None:
        self.site = site
        self.boxes: dict[str, BoxRecord] = {b.box: b for b in boxes}

    @classmethod
    def load(cls, site_dir: Path, site: str) -> Inventory:
        """Load the inventory of a site directory (empty if none yet)."""
        path = Path(site_dir) / INVENTORY_FILE
        if not path.exists():
            return cls(site)
        try:
            data = json.loads(path.read_text())
            return cls(data["site"], [BoxRecord(**b) for b in data["boxes"]])
        except (ValueError, KeyError, TypeError) as exc:
            raise InventoryError([f"{path} is damaged ({type(exc).__name__}: {exc}); "
                                  f"{RESTORE}"]) from None

    def save(self, site_dir: Path) -> Path:
        """Write ``inventory.json`` atomically and return its path."""
        path = Path(site_dir) / INVENTORY_FILE
        data: dict[str, Any] = {"site": self.site,
                                "boxes": [asdict(b) for b in sorted(self.boxes.values(),
                                                                    key=lambda b: b.box)]}
        atomic_write(path, (json.dumps(data, indent=1) + "\n").encode(), mode=INVENTORY_MODE)
        return path

    def get(self, box: str) -> BoxRecord:
        """The record of an enrolled box, or KeyError naming it."""
        try:
            return self.boxes[box]
        except KeyError:
            raise KeyError(f"box {box!r} is not enrolled in site {self.site}") from None

    def revoked(self) -> list[str]:
        """Ids of revoked boxes, sorted."""
        return sorted(b.box for b in self.boxes.values() if b.state == REVOKED)


__all__ = ["ACTIVE", "INVENTORY_FILE", "INVENTORY_MODE", "REVOKED", "BoxRecord", "Enrolment",
           "Inventory", "InventoryError", "check_enrolment", "parse_csv"]
