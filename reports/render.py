"""HTML QA reports: one page per day or week (all sites or one), and an index of every report.

    from reports.render import render_report
    render_report(summary, Path("reports/out"))                       # -> reports/out/daily-2026-11-24.html
    render_report(summary, Path("reports/out"), self_contained=True)  # thumbnails inlined: one file to mail

`summary` is plain data (dicts, lists, strings, numbers, None) that the daemon side computes
from the store; this package never imports `daemon/` or the model code (only `model.files`, for atomic
writes), so it is tested with a dict.
Every string from the summary is escaped by the templates (autoescape on, nothing given is ever
marked safe); only the charts go in as markup, and `reports.charts` builds those from numbers.
The pages have no JavaScript and load nothing from the network.

Files written under `out_dir`, each atomically (a reader sees the old file or the new one):

    daily-2026-11-24.html, weekly-2026-11-23-tower-a.html   the reports
    index.html                                              every report there, newest first
    index.json                                              the index's data, one entry per report
    thumbs/<hash of the overlay path>.jpg                   worst-photo thumbnails (not when self-contained)
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from PIL import Image, ImageOps

from model.files import write_atomic
from reports.charts import finite, line_chart

log = logging.getLogger("qa-daemon")

TEMPLATES = Path(__file__).parent / "templates"
THUMBS = "thumbs"  # folder under out_dir, shared by every report there
THUMB_SIDE = 320  # longest side of a thumbnail, in pixels
KINDS = ("daily", "weekly")
REPORT_NAME = re.compile(r"(daily|weekly)-(\d{4}-\d{2}-\d{2})(?:-(.*))?\.html")
DASH = "—"
INDEX_DATA = "index.json"  # what the index lists about each report, written with the report
# (trend key, chart title, unit): the charts drawn for all sites and for each site
CHARTS = (
    ("photos", "Photos processed per day", "photos"),
    ("crack_share_pct", "Share of photos with cracks", "%"),
    ("taping_coverage_pct", "Mean taping coverage", "%"),
)


class ReportError(ValueError):
    """The summary cannot be rendered: a key that names the report is missing or malformed."""


# ---- numbers as people read them -----------------------------------------------------------------

def num(v: object) -> str:
    n = finite(v)
    return DASH if n is None else f"{round(n):,}"


def pct(v: object) -> str:
    n = finite(v)
    return DASH if n is None else f"{n:.1f}%"


def crack_length(px: object, mm: object = None) -> str:
    """Millimetres when the site's scale is known, else pixels; rounded."""
    if (n := finite(mm)) is not None:
        return f"{round(n):,} mm"
    return DASH if (n := finite(px)) is None else f"{round(n):,} px"


def crack_width(px: object, mm: object = None) -> str:
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


@functools.cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"], default_for_string=True),
        undefined=StrictUndefined,  # a typo in a template fails the render instead of printing nothing
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=num, pct=pct, crack_length=crack_length, crack_width=crack_width, area=area, when=when)
    return env


# ---- files ---------------------------------------------------------------------------------------

def safe_name(text: str) -> str:
    """`text` usable in a file name: only letters, digits, '_', '.' and '-'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)


def report_name(kind: str, day: str, site: str | None) -> str:
    """The report's file name: 'daily-2026-11-24.html', 'weekly-2026-11-23-tower-a.html'."""
    # safe_name is ASCII: 150 characters keep the whole name well under the 255 bytes file systems allow
    return f"{kind}-{day}.html" if site is None else f"{kind}-{day}-{safe_name(site)[:150]}.html"


def _checked(summary: dict) -> tuple[str, str, str | None]:
    """(kind, date, site) of the summary, refused with the key to fix when they cannot name a file."""
    kind, day, site = summary.get("kind"), summary.get("date"), summary.get("site")
    if kind not in KINDS:
        raise ReportError(f"summary['kind'] is {kind!r}; use one of {', '.join(KINDS)}")
    try:
        ok = isinstance(day, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", day) and date.fromisoformat(day)
    except ValueError:
        ok = False
    if not ok:
        raise ReportError(f"summary['date'] is {day!r}; use a day as YYYY-MM-DD")
    if site is not None and not isinstance(site, str):
        raise ReportError(f"summary['site'] is {site!r}; use a site name, or None for all sites")
    return kind, day, site


# ---- thumbnails ----------------------------------------------------------------------------------

@dataclass
class Thumb:
    src: str | None  # relative path or data: URI; None shows the "no overlay" placeholder
    href: str | None  # the full-size overlay, relative to the report
    size: tuple[int, int] = (0, 0)


def thumbnail_jpeg(overlay: Path) -> tuple[bytes, tuple[int, int]]:
    """A JPEG of `overlay` with its longest side THUMB_SIDE pixels (never upscaled), and its size."""
    with Image.open(overlay) as im:
        im.draft("RGB", (THUMB_SIDE, THUMB_SIDE))  # JPEG: decode at a fraction of full size
        small = ImageOps.exif_transpose(im).convert("RGB")
    small.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=82, optimize=True)
    return buf.getvalue(), small.size


def _thumb_file(overlay: Path, out_dir: Path) -> tuple[str, tuple[int, int]]:
    """The thumbnail under out_dir/thumbs/, named by the overlay's path so re-rendering reuses it."""
    name = hashlib.sha256(str(overlay).encode("utf-8", "surrogatepass")).hexdigest()[:24] + ".jpg"
    target = out_dir / THUMBS / name
    if target.is_file() and target.stat().st_mtime_ns >= overlay.stat().st_mtime_ns:
        with Image.open(target) as im:
            return f"{THUMBS}/{name}", im.size
    data, size = thumbnail_jpeg(overlay)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, data)
    return f"{THUMBS}/{name}", size


def _link(target: Path, out_dir: Path) -> str:
    """A URL to `target` relative to out_dir; percent-quoting also keeps a ':' from reading as a scheme."""
    try:
        rel = os.path.relpath(target, out_dir.absolute())
    except ValueError:  # another drive on Windows: no relative path exists
        return target.as_uri()
    return quote(Path(rel).as_posix())


def thumb(overlay: object, out_dir: Path, self_contained: bool) -> Thumb:
    """The thumbnail and full-size link of one overlay; a missing or unreadable one gets the placeholder."""
    if not isinstance(overlay, str) or not overlay:
        return Thumb(None, None)
    path = Path(os.path.abspath(overlay))
    try:
        if self_contained:
            data, size = thumbnail_jpeg(path)
            src = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
        else:
            src, size = _thumb_file(path, out_dir)
    except FileNotFoundError:
        return Thumb(None, None)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        log.warning("%s: no thumbnail for the report (%s)", path, exc)
        return Thumb(None, None)
    return Thumb(src, _link(path, out_dir), size)


# ---- the page's data -----------------------------------------------------------------------------

def _dicts(v: object) -> list[dict]:
    return [d for d in v if isinstance(d, dict)] if isinstance(v, list) else []


def _text(v: object) -> str:
    return DASH if v is None else str(v)


def charts(trend: list[dict]) -> list[Markup]:
    """The trend charts, sized to sit three in a row at about their natural size (text stays legible)."""
    return [line_chart([(_text(row.get("day")), row.get(key)) for row in trend], title, unit, width=360, height=170)
            for key, title, unit in CHARTS]


def _worst(w: dict, out_dir: Path, self_contained: bool) -> dict:
    severity = w.get("severity")
    return {
        "name": _text(w.get("name")), "location": w.get("location"), "captured_at": w.get("captured_at"),
        "crack_pct": w.get("crack_pct"), "length_px": w.get("length_px"),
        "max_width_px": w.get("max_width_px"), "max_width_mm": w.get("max_width_mm"),
        "severity": severity, "severity_class": safe_name(str(severity)),  # base.html colours the known classes
        "thumb": thumb(w.get("overlay"), out_dir, self_contained),
    }


def figures(raw: dict, out_dir: Path, self_contained: bool, anchor: str = "") -> dict:
    """One SITE_FIGURES dict, every key present (None where absent), thumbnails made, charts drawn."""
    keys = ("photos", "with_cracks", "crack_share_pct", "crack_length_px", "crack_length_mm", "crack_area_px",
            "mean_crack_pct", "taping_coverage_pct", "failures")
    site = _text(raw.get("site"))
    severity = raw.get("severity") if isinstance(raw.get("severity"), dict) else {}
    return {
        **{k: raw.get(k) for k in keys},
        "site": site, "anchor": anchor,
        "severity": [(str(name), n, safe_name(str(name))) for name, n in severity.items()],
        "worst": [_worst(w, out_dir, self_contained) for w in _dicts(raw.get("worst"))],
        "charts": charts(_dicts(raw.get("trend"))),
    }


def _failure(f: dict) -> dict:
    return {k: f.get(k) for k in ("at", "path", "stage", "error", "quarantined_to")}


def context(summary: dict, out_dir: Path, self_contained: bool) -> dict:
    kind, day, site = _checked(summary)
    period = summary.get("period") if isinstance(summary.get("period"), dict) else {}
    start, end = _text(period.get("start", day)), _text(period.get("end", day))
    title = _text(summary.get("title") or f"{kind.capitalize()} QA report")
    totals = summary.get("totals") if isinstance(summary.get("totals"), dict) else {}
    versions = summary.get("model_versions") if isinstance(summary.get("model_versions"), list) else []
    return {
        "kind": kind, "date": day, "start": start, "end": end, "title": title,
        "site": site, "scope": "All sites" if site is None else site,
        "generated_at": summary.get("generated_at"),
        "model_versions": [str(v) for v in versions],
        # the worst photos are shown per site, where they can be found; not again for all sites
        "totals": figures({**totals, "site": totals.get("site") or "All sites", "worst": []}, out_dir, self_contained),
        "sites": [figures(s, out_dir, self_contained, f"site-{i}")
                  for i, s in enumerate(_dicts(summary.get("sites")), start=1)],
        "failures": [_failure(f) for f in _dicts(summary.get("failures"))],
    }


# ---- public API ----------------------------------------------------------------------------------

def render_report(summary: dict, out_dir: Path, self_contained: bool = False) -> Path:
    """Write the report for `summary` into `out_dir` (created if missing), refresh the index; the report's path.

    Self-contained: thumbnails are inlined as data: URIs and nothing is written under thumbs/,
    so the one file can be mailed (the links to full-size overlays still point at the files).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = context(summary, out_dir, self_contained)
    html = environment().get_template("report.html").render(ctx)
    path = out_dir / report_name(ctx["kind"], ctx["date"], ctx["site"])
    write_atomic(path, html.encode("utf-8"))
    known = _read_entries(out_dir)
    known[path.name] = {"kind": ctx["kind"], "date": ctx["date"], "end": ctx["end"], "site": ctx["site"],
                        "title": ctx["title"], "photos": num(ctx["totals"]["photos"]),
                        "crack_share": pct(ctx["totals"]["crack_share_pct"])}
    write_atomic(out_dir / INDEX_DATA, json.dumps(known, indent=1, sort_keys=True).encode("utf-8"))
    render_index(out_dir, known)
    return path


def _entry(path: Path, known: dict[str, dict]) -> dict | None:
    """What the index says about one report file: its entry in index.json, else (a report written by an
    older version, or an entry lost to a concurrent write) what its name says; None for other files."""
    m = REPORT_NAME.fullmatch(path.name)
    if not m:
        return None
    entry = {"kind": m.group(1), "date": m.group(2), "end": m.group(2), "site": m.group(3), "title": None,
             "photos": DASH, "crack_share": DASH}
    saved = known.get(path.name)
    if isinstance(saved, dict):
        entry.update({k: saved[k] for k in entry if k in saved})
    return {**entry, "file": quote(path.name)}


def _read_entries(out_dir: Path) -> dict[str, dict]:
    try:
        entries = json.loads((out_dir / INDEX_DATA).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:  # damaged: the reports are still listed, from their names
        log.warning("%s: could not be read (%s); listing the reports by name", out_dir / INDEX_DATA, exc)
        return {}
    return entries if isinstance(entries, dict) else {}


def render_index(out_dir: Path, known: dict[str, dict] | None = None) -> Path:
    """Write out_dir/index.html listing every report there, newest first; the index's path. `known`: the
    entries of index.json when the caller has them in hand (it just wrote them), else they are read."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    known = _read_entries(out_dir) if known is None else known
    entries = [e for p in sorted(out_dir.glob("*.html")) if (e := _entry(p, known)) is not None]
    entries.sort(key=lambda e: (e["kind"], e["site"] is not None, e["site"] or ""))  # all sites first
    entries.sort(key=lambda e: e["date"], reverse=True)  # stable: keeps the order above within a day
    html = environment().get_template("index.html").render(reports=entries)
    path = out_dir / "index.html"
    write_atomic(path, html.encode("utf-8"))
    return path
