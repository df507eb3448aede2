"""HTML QA reports: one page per day or week (all sites or one), each site's photos in tables, an index.

    from reports.render import render_report
    render_report(summary, Path("outputs/reports"))                       # -> outputs/reports/daily-2026-11-24.html
    render_report(summary, Path("outputs/reports"), self_contained=True)  # thumbnails inlined: one file to mail

`summary` is plain data (dicts, lists, strings, numbers, None) that the daemon side computes
from the store (daemon/summary.py says what each key holds); this package never imports `daemon/` or
the model code (only `model.files`, for atomic writes), so it is tested with a dict.
Every string from the summary is escaped by the templates (autoescape on, nothing given is ever
marked safe); only the charts go in as markup, and `reports.charts` builds those from numbers.
The pages have no JavaScript and load nothing from the network.

A report shows, for all sites and for each site, cracks and taping side by side: headline figures with a
line on what each means for QA, the worst crack photos and the photos with the most and the least taping
as overlay thumbnails, distributions, and 30-day trends. Where a site has no scale (`mm_per_pixel`), it
says so and names the config key, gives widths in pixels, and shows no severity classes.

Files written under `out_dir`, each atomically (a reader sees the old file or the new one):

    daily-2026-11-24.html, weekly-2026-11-23-tower-a.html   the reports
    index.html                                              every report there, newest first
    index.json                                              the index's data, one entry per report
    .index.lock                                             held while the index is updated (empty)
    thumbs/<hash of the overlay path>.jpg                   thumbnails (not when self-contained)
    photos/<day>/<site>/by-<column>.html                    every photo of a site and day (reports.photos)
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from filelock import FileLock
from markupsafe import Markup
from PIL import Image, ImageOps

from model.files import write_atomic
from reports.charts import bar_chart, finite, line_chart
from reports.html import DASH, ReportError, environment, is_day, link, num, pct, safe_name, text
from reports.photos import day_page, write_day_tables

log = logging.getLogger("qa-daemon")

THUMBS = "thumbs"  # folder under out_dir, shared by every report there
THUMB_SIDE = 320  # longest side of a thumbnail, in pixels
KINDS = ("daily", "weekly")
REPORT_NAME = re.compile(r"(daily|weekly)-(\d{4}-\d{2}-\d{2})(?:-(.*))?\.html")
INDEX_DATA = "index.json"  # what the index lists about each report, written with the report
INDEX_LOCK = ".index.lock"  # held while index.json and index.html are updated
# (trend key, chart title, unit): the 30-day charts of cracks and of taping, for all sites and for each site;
# a length is charted in mm where every photo had the site's scale, else in px
CRACK_CHARTS = (
    ("photos", "Photos processed per day", "photos"),
    ("crack_share_pct", "Share of photos with cracks", "%"),
    ("crack_length", "Crack length per day", None),
)
TAPING_CHARTS = (
    ("taping_share_pct", "Share of photos with taping", "%"),
    ("taping_coverage_pct", "Mean taping coverage", "%"),
    ("taping_length", "Taped length per day", None),
)


# ---- files ---------------------------------------------------------------------------------------

def report_name(kind: str, day: str, site: str | None) -> str:
    """The report's file name: 'daily-2026-11-24.html', 'weekly-2026-11-23-tower-a.html'."""
    # safe_name is ASCII: 150 characters keep the whole name well under the 255 bytes file systems allow
    return f"{kind}-{day}.html" if site is None else f"{kind}-{day}-{safe_name(site)[:150]}.html"


def _checked(summary: dict) -> tuple[str, str, str | None]:
    """(kind, date, site) of the summary, refused with the key to fix when they cannot name a file."""
    kind, day, site = summary.get("kind"), summary.get("date"), summary.get("site")
    if kind not in KINDS:
        raise ReportError(f"summary['kind'] is {kind!r}; use one of {', '.join(KINDS)}")
    if not is_day(day):
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
    return Thumb(src, link(path, out_dir), size)


# ---- the page's data -----------------------------------------------------------------------------

def _dicts(v: object) -> list[dict]:
    return [d for d in v if isinstance(d, dict)] if isinstance(v, list) else []


def _dict(v: object) -> dict:
    return v if isinstance(v, dict) else {}


def charts(trend: list[dict], specs: tuple, in_mm: bool) -> list[Markup]:
    """Trend charts, sized to sit three in a row at about their natural size (text stays legible)."""
    out = []
    for key, title, unit in specs:
        if unit is None:  # a length: mm where the whole period had the scale
            key, unit = (f"{key}_mm", "mm") if in_mm else (f"{key}_px", "px")
        out.append(line_chart([(text(row.get("day")), row.get(key)) for row in trend], title, unit,
                              width=360, height=170))
    return out


def distribution(classes: object, title: str, unit: str) -> Markup | None:
    """A bar chart of [{"label", "photos"}] classes; None when no photo falls in any."""
    bars = [(text(c.get("label")), c.get("photos")) for c in _dicts(classes)]
    return bar_chart(bars, title, unit) if any(n for _, n in bars) else None


def _shot(p: dict, out_dir: Path, self_contained: bool) -> dict:
    """A photo shown as a thumbnail: its figures, its overlay's thumbnail and full-size link."""
    severity = p.get("crack_severity")
    return {
        **{k: p.get(k) for k in ("location", "captured_at", "crack_pct", "crack_length_px", "crack_length_mm",
                                 "crack_max_width_px", "crack_max_width_mm", "taping_coverage_pct",
                                 "taping_components", "taping_length_px", "taping_length_mm")},
        "name": text(p.get("name")), "severity": severity,
        "severity_class": safe_name(str(severity)),  # base.html colours the known classes
        "thumb": thumb(p.get("overlay_path"), out_dir, self_contained),
    }


FIGURES = ("photos", "failures", "photos_scaled", "with_cracks", "crack_share_pct", "crack_length_px",
           "crack_length_mm", "crack_area_px", "mean_crack_pct", "widest_crack_px", "widest_crack_mm",
           "with_taping", "taping_share_pct", "taping_coverage_pct", "taping_segments", "taping_length_px",
           "taping_length_mm")


def figures(raw: dict, out_dir: Path, self_contained: bool, anchor: str = "", days: list[dict] | None = None) -> dict:
    """One site's figures (or all sites'), every key present (None where absent), thumbnails made, charts
    drawn; `days`: the site's tables of all photos, one per capture day."""
    scale = raw.get("scale") if raw.get("scale") in ("all", "some", "none") else None
    severity = _dict(raw.get("severity"))
    shots = {k: [_shot(p, out_dir, self_contained) for p in _dicts(raw.get(k))]
             for k in ("worst", "most_taping", "least_taping")}
    trend = _dicts(raw.get("trend"))
    return {
        **{k: raw.get(k) for k in FIGURES}, **shots,
        "site": text(raw.get("site")), "anchor": anchor, "scale": scale,
        "sites_without_scale": [str(s) for s in raw.get("sites_without_scale") or [] if s is not None],
        # classes only where widths were measured in mm: a site without a scale has none, not zeros
        "severity": [(str(name), n, safe_name(str(name))) for name, n in severity.items()]
        if scale in ("all", "some") else [],
        "quartiles": _dict(raw.get("taping_coverage_quartiles")) or None,
        "width_chart": None if scale == "all" else distribution(
            raw.get("crack_widths_px"), "Photos by widest crack", "px"),
        "coverage_chart": distribution(raw.get("taping_coverage_classes"), "Photos with taping, by % taped", "%"),
        "crack_charts": charts(trend, CRACK_CHARTS, scale == "all"),
        "taping_charts": charts(trend, TAPING_CHARTS, scale == "all"),
        "days": days or [],
    }


def _failure(f: dict) -> dict:
    return {k: f.get(k) for k in ("at", "path", "stage", "error", "quarantined_to")}


def day_tables(raw: dict, where: str, out_dir: Path) -> list[dict]:
    """Write the site's tables of all photos; per capture day, its photos and the link to its table."""
    site = text(raw.get("site"))
    counts = write_day_tables(site, _dicts(raw.get("all_photos")), out_dir, where)
    return [{"day": day, "photos": n, "href": quote(day_page(day, site))} for day, n in counts.items()]


def scrub_counts(raw: object) -> dict[str, int]:
    """What the scrub found in the period: photos re-made, photos lost; 0 where absent or malformed."""
    raw = raw if isinstance(raw, dict) else {}
    return {k: int(finite(raw.get(k)) or 0) for k in ("remade", "lost")}


def context(summary: dict, out_dir: Path, self_contained: bool) -> dict:
    kind, day, site = _checked(summary)
    period = _dict(summary.get("period"))
    start, end = text(period.get("start", day)), text(period.get("end", day))
    title = text(summary.get("title") or f"{kind.capitalize()} QA report")
    totals = _dict(summary.get("totals"))
    versions = summary.get("model_versions") if isinstance(summary.get("model_versions"), list) else []
    sites = []
    for i, s in enumerate(_dicts(summary.get("sites")), start=1):
        days = day_tables(s, f"summary['sites'][{i - 1}]['all_photos']", out_dir)
        sites.append(figures(s, out_dir, self_contained, f"site-{i}", days))
    return {
        "kind": kind, "date": day, "start": start, "end": end, "title": title,
        "site": site, "scope": "All sites" if site is None else site,
        "generated_at": summary.get("generated_at"),
        "model_versions": [str(v) for v in versions],
        # photos are shown per site, where they can be found; not again for all sites
        "totals": figures({**totals, "site": totals.get("site") or "All sites", "worst": [], "most_taping": [],
                           "least_taping": []}, out_dir, self_contained),
        "sites": sites,
        "failures": [_failure(f) for f in _dicts(summary.get("failures"))],
        "scrub": scrub_counts(summary.get("scrub")),
    }


# ---- public API ----------------------------------------------------------------------------------

def render_report(summary: dict, out_dir: Path, self_contained: bool = False) -> Path:
    """Write the report for `summary` into `out_dir` (created if missing), with each site's tables of all
    photos under photos/, and refresh the index; the report's path.

    Self-contained: thumbnails are inlined as data: URIs and nothing is written under thumbs/,
    so the one file can be mailed (the links to full-size overlays and to the tables still point at the files).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = context(summary, out_dir, self_contained)
    html = environment().get_template("report.html").render(ctx)
    path = out_dir / report_name(ctx["kind"], ctx["date"], ctx["site"])
    write_atomic(path, html.encode("utf-8"))
    # one index update at a time (the schedule renders a missed daily and weekly report together; `qa-daemon
    # report` may run beside the daemon): each lists the folder and adds its entry after the other's
    with FileLock(out_dir / INDEX_LOCK):
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
