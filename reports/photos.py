"""Every photo of a site and capture day, in a table sorted by each of its columns: static pages, no JavaScript.

    from reports.photos import write_day_tables, day_page
    days = write_day_tables("tower-a", photos, Path("outputs/reports"))  # {"2026-11-24": 2000, ...}
    day_page("2026-11-24", "tower-a")  # -> "photos/2026-11-24/tower-a/by-time.html", relative to the reports

Under the reports folder, one folder per day and site, one page per ordering (ORDERS): by-file.html,
by-location.html, by-time.html, by-crack.html, by-crack-length.html, by-crack-width.html, by-taping.html,
by-taping-length.html. Each column header links to the page sorted by that column, so sorting needs no
script. Each row links to the photo's overlay and both masks. The reports link these pages; the index of
reports does not list them.

A row is rendered once and the orderings are joins of the same rows, so a day of 2,000 photos costs one
render of 2,000 rows and eight joins (`uv run python -m bench.reports` measures it).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from markupsafe import Markup

from model.files import write_atomic
from reports.charts import finite
from reports.html import Links, ReportError, environment, is_day, safe_name

PHOTOS = "photos"  # folder under the reports folder


@dataclass(frozen=True)
class Order:
    slug: str  # the page: by-<slug>.html
    heading: str  # the column's header
    key: Callable[[dict], tuple]
    descending: bool  # shown as "largest first"; text and times run A to Z, earliest first


def _largest_first(column: str) -> Callable[[dict], tuple]:
    """Largest first, unknown values last, ties by capture time then name."""
    def key(p: dict) -> tuple:
        v = finite(p.get(column))
        return (v is None, -(v or 0.0), p["captured_at"] or "", p["name"])
    return key


ORDERS = (
    Order("file", "File", lambda p: (p["name"].casefold(), p["name"], p["captured_at"] or ""), False),
    Order("location", "Location", lambda p: (p["location"] is None, p["location"] or "", p["captured_at"] or "",
                                             p["name"]), False),
    Order("time", "Time", lambda p: (p["captured_at"] or "", p["name"]), False),
    Order("crack", "Crack %", _largest_first("crack_pct"), True),
    Order("crack-length", "Crack length", _largest_first("crack_length_px"), True),
    Order("crack-width", "Widest crack", _largest_first("crack_max_width_px"), True),
    Order("taping", "Taping %", _largest_first("taping_coverage_pct"), True),
    Order("taping-length", "Taping length", _largest_first("taping_length_px"), True),
)
DEFAULT_ORDER = "time"


def site_folder(site: str) -> str:
    """The folder of a site's tables: its name when that is file-name safe, else the safe form and a short
    hash of the real name, so two names that read alike once made safe never share a folder."""
    safe = safe_name(site)[:100]
    if safe == site and safe.strip("."):
        return safe
    return f"{safe}-{hashlib.sha256(site.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def day_folder(day: str, site: str) -> str:
    return f"{PHOTOS}/{day}/{site_folder(site)}"


def day_page(day: str, site: str, order: str = DEFAULT_ORDER) -> str:
    """The page of a site's photos of a day, sorted by `order`, relative to the reports folder."""
    return f"{day_folder(day, site)}/by-{order}.html"


def _day_of(p: dict, where: str) -> str:
    day = p.get("day") or str(p.get("captured_at") or "")[:10]
    if not is_day(day):
        raise ReportError(f"{where}['day'] is {day!r}; use the capture day as YYYY-MM-DD")
    return day


def _row(p: dict) -> dict:
    """A photo with every column the table shows present, text where text is expected."""
    name = p.get("name")
    return {**p, "name": "—" if name is None else str(name),
            "location": None if p.get("location") is None else str(p["location"]),
            "captured_at": None if p.get("captured_at") is None else str(p["captured_at"])}


def days_of(photos: list[dict], where: str = "photos") -> dict[str, list[dict]]:
    """The photos by capture day, oldest day first."""
    by_day: dict[str, list[dict]] = defaultdict(list)
    for i, p in enumerate(photos):
        by_day[_day_of(p, f"{where}[{i}]")].append(_row(p))
    return dict(sorted(by_day.items()))


def write_day_tables(site: str, photos: list[dict], out_dir: Path, where: str = "photos") -> dict[str, int]:
    """Write the tables of a site's photos, one folder per capture day; {day: photos}. `where` names the list
    in error messages."""
    counts = {}
    for day, rows in days_of(photos, where).items():
        write_day(site, day, rows, Path(out_dir))
        counts[day] = len(rows)
    return counts


def write_day(site: str, day: str, photos: list[dict], out_dir: Path) -> list[Path]:
    """The pages of one site and day, one per ordering; their paths."""
    folder = out_dir / day_folder(day, site)
    folder.mkdir(parents=True, exist_ok=True)
    links = Links(folder)
    env = environment()
    row = env.get_template("macros.html").module.photo_row  # type: ignore[attr-defined]
    rendered = {id(p): row(p, links(p.get("overlay_path")), links(p.get("crack_mask")), links(p.get("taping_mask")))
                for p in photos}
    page = env.get_template("photos.html")
    paths = []
    for order in ORDERS:
        rows = Markup("").join(rendered[id(p)] for p in sorted(photos, key=order.key))
        html = page.render(site=site, day=day, photos=len(photos), rows=rows, orders=ORDERS, order=order,
                           index="../../../index.html")
        path = folder / f"by-{order.slug}.html"
        write_atomic(path, html.encode("utf-8"))
        paths.append(path)
    return paths
