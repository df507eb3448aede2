"""What every report page shares: the Jinja environment and its number filters, file-name-safe text,
relative links to the daemon's files.

    html = environment().get_template("report.html").render(context)
    href = link(Path("outputs/tower-a/2026-11-24/IMG_1__overlay.jpg"), Path("outputs/reports"))

Autoescape is on for every template and nothing from a summary is marked safe; numbers go through the
filters below, so an unknown one reads "—" and never "None" or "nan".
"""

from __future__ import annotations

import functools
import os
import re
from datetime import date
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from reports.charts import finite

TEMPLATES = Path(__file__).parent / "templates"
DASH = "—"


class ReportError(ValueError):
    """The summary cannot be rendered: a key that names a report or a file is missing or malformed."""


# ---- numbers as people read them -----------------------------------------------------------------

def num(v: object) -> str:
    n = finite(v)
    return DASH if n is None else f"{round(n):,}"


def pct(v: object) -> str:
    n = finite(v)
    return DASH if n is None else f"{n:.1f}%"


def line_length(px: object, mm: object = None) -> str:
    """A crack's or a taped joint's length: millimetres when the site's scale is known, else pixels; rounded."""
    if (n := finite(mm)) is not None:
        return f"{round(n):,} mm"
    return DASH if (n := finite(px)) is None else f"{round(n):,} px"


def line_width(px: object, mm: object = None) -> str:
    """A crack width: one decimal in millimetres, else whole pixels."""
    if (n := finite(mm)) is not None:
        return f"{n:.1f} mm"
    return DASH if (n := finite(px)) is None else f"{round(n):,} px"


def area(px: object) -> str:
    n = finite(px)
    return DASH if n is None else f"{round(n):,} px²"


def when(v: object) -> str:
    """An ISO timestamp as '2026-11-24 10:02:11'."""
    return str(v).replace("T", " ", 1) if v else DASH


def clock(v: object) -> str:
    """The time of day of an ISO timestamp, '10:02:11'; the whole text when it has no time."""
    text = str(v).replace("T", " ", 1) if v else ""
    return text[11:19] if len(text) >= 19 else text or DASH


def text(v: object) -> str:
    return DASH if v is None else str(v)


@functools.cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"], default_for_string=True),
        undefined=StrictUndefined,  # a typo in a template fails the render instead of printing nothing
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=num, pct=pct, line_length=line_length, line_width=line_width, area=area, when=when,
                       clock=clock, text=text)
    return env


# ---- files and links -----------------------------------------------------------------------------

def is_day(v: object) -> bool:
    """Whether `v` is a day written YYYY-MM-DD (what names report files and photo tables)."""
    try:
        return isinstance(v, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", v) is not None and bool(date.fromisoformat(v))
    except ValueError:
        return False


def safe_name(name: str) -> str:
    """`name` usable in a file name: only letters, digits, '_', '.' and '-'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)


def link(target: Path, base: Path) -> str:
    """A URL to `target` relative to the folder `base`; percent-quoting also keeps a ':' from reading as a
    scheme."""
    try:
        rel = os.path.relpath(os.path.abspath(target), os.path.abspath(base))
    except ValueError:  # another drive on Windows: no relative path exists
        return Path(os.path.abspath(target)).as_uri()
    return quote(Path(rel).as_posix())


class Links:
    """Relative links from one folder to many files, a photo table's thousands: the way to each file's
    folder is worked out once per folder (`os.path.relpath` costs more than the rest of a row)."""

    def __init__(self, base: Path):
        self.base = os.path.abspath(base)
        self.folders: dict[str, str | None] = {}

    def __call__(self, target: object) -> str | None:
        """The link to `target` (a path as the store records it), or None for no file."""
        if not isinstance(target, str) or not target:
            return None
        folder, name = os.path.split(os.path.abspath(target))
        if folder not in self.folders:
            try:
                self.folders[folder] = quote(Path(os.path.relpath(folder, self.base)).as_posix()) + "/"
            except ValueError:  # another drive on Windows
                self.folders[folder] = None
        prefix = self.folders[folder]
        return Path(folder, name).as_uri() if prefix is None else prefix + quote(name)
