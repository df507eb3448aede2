"""What the store says about a period: the plain data reports render and `history` prints.

    summary = period_summary(store, date(2026, 11, 24), date(2026, 11, 24), site=None, kind="daily")
    rows = history(store, site="tower-a", since=None, until=None, group_by="week")

Everything is read through the SQL views `photo_results` and `daily_site_summary`
(daemon/migrations/versions/0005_*), the same ones analysts query; days are capture days.

A site's figures (`site_figures`) cover cracks and taping alike, and list every photo (`all_photos`,
which the reports turn into a table per day). Whether the photos were measured with the site's scale
(`sites.<name>.mm_per_pixel`) is read from the results themselves (a length in mm was recorded or not),
so a report is right about photos processed before the scale was set.
"""

from __future__ import annotations

import bisect
import statistics
from collections import defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from daemon.days import midnight_utc, week_start
from daemon.store import Store
from daemon.store.schema import FailureStage

SEVERITIES = ("hairline", "fine", "medium", "wide")
TITLES = {"daily": "Daily QA report", "weekly": "Weekly QA summary"}
# the photo_results columns a report shows of each photo (thumbnails, the table of all photos)
PHOTO_COLUMNS = ("name", "location", "captured_at", "day", "crack_pct", "crack_length_px", "crack_length_mm",
                 "crack_max_width_px", "crack_max_width_mm", "crack_severity", "taping_coverage_pct",
                 "taping_components", "taping_length_px", "taping_length_mm", "overlay_path", "crack_mask",
                 "taping_mask")
# distributions as (lowest, label): fixed classes, so two days or two sites read alike
COVERAGE_CLASSES = ((0.0, "<5"), (5.0, "5–10"), (10.0, "10–20"), (20.0, "20–40"), (40.0, "≥40"))  # % of a photo
WIDTH_CLASSES = ((0.0, "<5"), (5.0, "5–10"), (10.0, "10–20"), (20.0, "20–50"), (50.0, "50–100"), (100.0, "≥100"))
TAPING_SHOTS = 3  # photos shown with the most taping, and with the least


def _rows(store: Store, sql: str, **params: Any) -> list[dict]:
    with store.reader() as s:
        return [dict(r._mapping) for r in s.execute(text(sql), params)]


def report_photo(p: dict) -> dict:
    """One photo as a report shows it: PHOTO_COLUMNS, with its times as text."""
    out = {k: p.get(k) for k in PHOTO_COLUMNS}
    out["captured_at"] = str(p["captured_at"])[:19] if p.get("captured_at") is not None else None
    out["day"] = str(p["day"]) if p.get("day") is not None else (out["captured_at"] or "")[:10] or None
    return out


def _scaled(p: dict) -> bool:
    """Whether the photo was measured with its site's scale (mm_per_pixel): lengths in mm were recorded."""
    return p.get("crack_length_mm") is not None or p.get("taping_length_mm") is not None


def classes(values: list[float], bounds: tuple[tuple[float, str], ...]) -> list[dict]:
    """How many values fall in each class, every class listed (0 where none): [{"label", "photos"}]."""
    lows, counts = [low for low, _ in bounds], [0] * len(bounds)
    for v in values:
        counts[max(0, bisect.bisect_right(lows, v) - 1)] += 1
    return [{"label": label, "photos": n} for (_, label), n in zip(bounds, counts, strict=True)]


def quartiles(values: list[float]) -> dict | None:
    """Lower quartile, median and upper quartile; None without values."""
    if not values:
        return None
    if len(values) == 1:
        return {"q1": values[0], "median": values[0], "q3": values[0]}
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"q1": q1, "median": median, "q3": q3}


def _total(photos: list[dict], column: str) -> float | None:
    known = [p[column] for p in photos if p.get(column) is not None]
    return sum(known) if known else None


def site_figures(site: str, photos: list[dict], worst_n: int = 6) -> dict:
    """The headline figures of one site (or all) over a list of `photo_results` rows, cracks and taping."""
    n = len(photos)
    cracked = [p for p in photos if (p["crack_pct"] or 0) > 0]
    taped = [p for p in photos if (p["taping_coverage_pct"] or 0) > 0]
    scaled = sum(1 for p in photos if _scaled(p))
    all_scaled = bool(photos) and scaled == n  # mm figures only where every photo has them
    severity = {k: sum(1 for p in photos if p["crack_severity"] == k) for k in SEVERITIES}
    worst = sorted(cracked, key=lambda p: p["crack_pct"], reverse=True)[:worst_n]
    by_taping = sorted(taped, key=lambda p: (-p["taping_coverage_pct"], str(p["captured_at"])))
    most = by_taping[:TAPING_SHOTS]
    least = by_taping[TAPING_SHOTS:][-TAPING_SHOTS:][::-1]  # lowest first, none shown twice
    widths = [p["crack_max_width_px"] for p in cracked if p["crack_max_width_px"] is not None]
    coverage = [p["taping_coverage_pct"] for p in taped]
    return {
        "site": site, "photos": n, "failures": 0,
        # "all", "none" or "some" of the photos measured with the site's mm_per_pixel; None: no photos
        "scale": None if not photos else "all" if all_scaled else "some" if scaled else "none",
        "photos_scaled": scaled,
        "sites_without_scale": sorted({p["site"] for p in photos if not _scaled(p) and p.get("site")}),
        # cracks
        "with_cracks": len(cracked),
        "crack_share_pct": 100.0 * len(cracked) / n if n else 0.0,
        "crack_length_px": sum(p["crack_length_px"] or 0 for p in photos),
        "crack_length_mm": _total(photos, "crack_length_mm") if all_scaled else None,
        "crack_area_px": sum(p["crack_area_px"] or 0 for p in photos),
        "mean_crack_pct": sum(p["crack_pct"] or 0 for p in photos) / n if n else 0.0,
        "widest_crack_px": max(widths, default=None),
        "widest_crack_mm": max((p["crack_max_width_mm"] for p in cracked if p["crack_max_width_mm"] is not None),
                               default=None) if all_scaled else None,
        "crack_widths_px": classes(widths, WIDTH_CLASSES),
        "severity": severity,
        "worst": [report_photo(p) for p in worst],
        # taping
        "with_taping": len(taped),
        "taping_share_pct": 100.0 * len(taped) / n if n else 0.0,
        "taping_coverage_pct": sum(p["taping_coverage_pct"] or 0 for p in photos) / n if n else None,
        "taping_coverage_quartiles": quartiles(coverage),  # over the photos with taping
        "taping_coverage_classes": classes(coverage, COVERAGE_CLASSES),
        "taping_segments": sum(p["taping_components"] or 0 for p in photos),
        "taping_length_px": _total(photos, "taping_length_px"),
        "taping_length_mm": _total(photos, "taping_length_mm") if all_scaled else None,
        "most_taping": [report_photo(p) for p in most],
        "least_taping": [report_photo(p) for p in least],
        "all_photos": [],  # filled per site by period_summary: the totals list none
        "trend": [],
    }


def _pool(rows: list[dict]) -> dict:
    """`daily_site_summary` rows (days, sites) taken together: shares and means weighted by photos."""
    n = sum(r["photos"] for r in rows)
    with_cracks = sum(r["photos_with_cracks"] for r in rows)
    with_taping = sum(r["photos_with_taping"] or 0 for r in rows)

    def mean(column: str) -> float:
        return sum((r[column] or 0) * r["photos"] for r in rows) / n if n else 0.0

    def total(column: str) -> float | None:
        known = [r[column] for r in rows if r[column] is not None]
        return sum(known) if known else None

    return {"photos": n, "photos_with_cracks": with_cracks,
            "crack_share_pct": 100.0 * with_cracks / n if n else 0.0, "mean_crack_pct": mean("mean_crack_pct"),
            "crack_length_px": total("crack_length_px"), "crack_length_mm": total("crack_length_mm"),
            "photos_with_taping": with_taping, "taping_share_pct": 100.0 * with_taping / n if n else 0.0,
            "taping_coverage_pct": mean("mean_taping_coverage_pct"), "taping_segments": total("taping_segments"),
            "taping_length_px": total("taping_length_px"), "taping_length_mm": total("taping_length_mm")}


TREND_KEYS = ("photos", "crack_share_pct", "mean_crack_pct", "crack_length_px", "crack_length_mm",
              "taping_share_pct", "taping_coverage_pct", "taping_length_px", "taping_length_mm")


def _trend(rows: list[dict], end: date, days: int) -> list[dict]:
    """One point per day of the `days` ending at `end`, from `daily_site_summary` rows (any sites);
    a day without photos has its count 0 and every other figure None (a gap, not a zero)."""
    by_day: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_day[str(r["day"])].append(r)
    out = []
    for i in range(days - 1, -1, -1):
        day = (end - timedelta(days=i)).isoformat()
        pooled = _pool(by_day.get(day, []))
        out.append({"day": day, **{k: pooled[k] if pooled["photos"] or k == "photos" else None for k in TREND_KEYS}})
    return out


def period_summary(store: Store, start: date, end: date, site: str | None = None, kind: str = "daily",
                   trend_days: int = 30) -> dict:
    """The report data of [start, end] (capture days), for one site or all, with 30-day trends to `end`."""
    where = " AND site = :site" if site else ""
    photos = _rows(store, "SELECT * FROM photo_results WHERE day >= :a AND day <= :b" + where
                   + " ORDER BY captured_at", a=start.isoformat(), b=end.isoformat(), site=site)
    daily = _rows(store, "SELECT * FROM daily_site_summary WHERE day >= :a AND day <= :b" + where,
                  a=(end - timedelta(days=trend_days - 1)).isoformat(), b=end.isoformat(), site=site)
    failures = _rows(store, "SELECT f.at, f.path, f.stage, f.error, f.quarantined_to, p.site FROM failures f "
                     "LEFT JOIN photos p ON p.id = f.photo_id WHERE (f.final OR f.stage = :remade) "
                     "AND f.at >= :a AND f.at < :b ORDER BY f.at", a=midnight_utc(start),
                     b=midnight_utc(end + timedelta(days=1)), remade=FailureStage.remade)
    if site:
        failures = [f for f in failures if f["site"] == site]
    # what the scrub found is counted apart: a photo whose results were re-made or lost was processed
    scrub = {"remade": sum(f["stage"] == FailureStage.remade for f in failures),
             "lost": sum(f["stage"] == FailureStage.results_lost for f in failures)}
    failures = [f for f in failures if f["stage"] != FailureStage.remade]
    failed = [f for f in failures if f["stage"] != FailureStage.results_lost]
    by_site: dict[str, list[dict]] = defaultdict(list)
    for p in photos:
        by_site[p["site"]].append(p)
    sites = []
    for name in sorted(by_site):
        figures = site_figures(name, by_site[name])
        figures["failures"] = sum(1 for f in failed if f["site"] == name)
        figures["trend"] = _trend([r for r in daily if r["site"] == name], end, trend_days)
        figures["all_photos"] = [report_photo(p) for p in by_site[name]]
        sites.append(figures)
    totals = site_figures("All sites", photos)
    totals["failures"], totals["trend"] = len(failed), _trend(daily, end, trend_days)
    return {
        "kind": kind, "title": TITLES.get(kind, "QA report"), "date": start.isoformat(),
        "period": {"start": start.isoformat(), "end": end.isoformat()}, "site": site,
        "generated_at": datetime.now().isoformat(timespec="seconds"),
        "model_versions": sorted({p["model_version"] for p in photos if p["model_version"]}),
        "totals": totals, "sites": sites, "scrub": scrub,
        "failures": [{"at": str(f["at"])[:19], "path": f["path"], "stage": f["stage"], "error": f["error"],
                      "quarantined_to": f["quarantined_to"]} for f in failures],
    }


def write_report(store: Store, kind: str, start: date, end: date, out_dir: Path, site: str | None = None,
                 self_contained: bool = False) -> Path:
    """The HTML report of [start, end] from the store, written into `out_dir` with the index refreshed
    and each site's table of all photos per day; what both the schedule and `qa-daemon report` call."""
    from reports.render import render_report  # Jinja2 and Pillow: only when a report is made

    return render_report(period_summary(store, start, end, site=site, kind=kind), out_dir,
                         self_contained=self_contained)


def _period_key(day: str, group_by: str) -> str:
    d = date.fromisoformat(day)
    if group_by == "week":
        return week_start(d).isoformat()
    return day[:7] if group_by == "month" else day


def _rounded(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


def history(store: Store, site: str | None, since: date | None, until: date | None, group_by: str = "day",
            task: str | None = None) -> list[dict]:
    """Trend rows per period and site, oldest first; `task` keeps only crack or taping columns."""
    params = {"site": site, "since": since and since.isoformat(), "until": until and until.isoformat()}
    clauses = [c for c, key in (("site = :site", "site"), ("day >= :since", "since"), ("day <= :until", "until"))
               if params[key] is not None]
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in _rows(store, "SELECT * FROM daily_site_summary" + where + " ORDER BY day, site", **params):
        groups[(_period_key(str(r["day"]), group_by), r["site"])].append(r)
    out = []
    for (period, site_name), rs in sorted(groups.items()):
        pooled = _pool(rs)
        row: dict[str, Any] = {"period": period, "site": site_name, "photos": pooled["photos"]}
        if task in (None, "crack"):
            row.update({"photos_with_cracks": pooled["photos_with_cracks"],
                        "crack_share_pct": round(pooled["crack_share_pct"], 2),
                        "mean_crack_pct": round(pooled["mean_crack_pct"], 3),
                        "crack_length_px": round(pooled["crack_length_px"] or 0, 1),
                        "crack_length_mm": _rounded(pooled["crack_length_mm"], 1),
                        **{k: sum(r[k] for r in rs) for k in SEVERITIES}})
        if task in (None, "taping"):
            row.update({"photos_with_taping": pooled["photos_with_taping"],
                        "taping_share_pct": round(pooled["taping_share_pct"], 2),
                        "mean_taping_coverage_pct": round(pooled["taping_coverage_pct"], 3),
                        "taping_segments": int(pooled["taping_segments"] or 0),
                        "taping_length_px": _rounded(pooled["taping_length_px"], 1),
                        "taping_length_mm": _rounded(pooled["taping_length_mm"], 1)})
        out.append(row)
    return out
