"""What the store says about a period: the plain data reports render and `history` prints.

    summary = period_summary(store, date(2026, 11, 24), date(2026, 11, 24), site=None, kind="daily")
    rows = history(store, site="tower-a", since=None, until=None, group_by="week")

Everything is read through the SQL views `photo_results` and `daily_site_summary`
(daemon/migrations/versions/0002_*), the same ones analysts query; days are capture days.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from daemon.days import midnight_utc, week_start
from daemon.store import Store

SEVERITIES = ("hairline", "fine", "medium", "wide")
TITLES = {"daily": "Daily QA report", "weekly": "Weekly QA summary"}


def _rows(store: Store, sql: str, **params: Any) -> list[dict]:
    with store.reader() as s:
        return [dict(r._mapping) for r in s.execute(text(sql), params)]


def site_figures(site: str, photos: list[dict], worst_n: int = 6) -> dict:
    """The headline figures of one site (or all) over a list of `photo_results` rows."""
    n = len(photos)
    cracked = [p for p in photos if (p["crack_pct"] or 0) > 0]
    lengths_mm = [p["crack_length_mm"] for p in cracked if p["crack_length_mm"] is not None]
    severity = {k: sum(1 for p in photos if p["crack_severity"] == k) for k in SEVERITIES}
    worst = sorted(cracked, key=lambda p: p["crack_pct"], reverse=True)[:worst_n]
    return {
        "site": site, "photos": n, "with_cracks": len(cracked),
        "crack_share_pct": 100.0 * len(cracked) / n if n else 0.0,
        "crack_length_px": sum(p["crack_length_px"] or 0 for p in photos),
        "crack_length_mm": sum(lengths_mm) if lengths_mm else None,
        "crack_area_px": sum(p["crack_area_px"] or 0 for p in photos),
        "mean_crack_pct": sum(p["crack_pct"] or 0 for p in photos) / n if n else 0.0,
        "taping_coverage_pct": sum(p["taping_coverage_pct"] or 0 for p in photos) / n if n else None,
        "severity": severity, "failures": 0,
        "worst": [{"name": p["name"], "location": p["location"], "captured_at": str(p["captured_at"])[:19],
                   "crack_pct": p["crack_pct"], "length_px": p["crack_length_px"],
                   "max_width_px": p["crack_max_width_px"], "max_width_mm": p["crack_max_width_mm"],
                   "severity": p["crack_severity"], "overlay": p["overlay_path"]} for p in worst],
        "trend": [],
    }


def _pool(rows: list[dict]) -> dict:
    """`daily_site_summary` rows (days, sites) taken together: shares and means weighted by photos."""
    n = sum(r["photos"] for r in rows)
    with_cracks = sum(r["photos_with_cracks"] for r in rows)

    def mean(column: str) -> float:
        return sum((r[column] or 0) * r["photos"] for r in rows) / n if n else 0.0

    return {"photos": n, "photos_with_cracks": with_cracks,
            "crack_share_pct": 100.0 * with_cracks / n if n else 0.0, "mean_crack_pct": mean("mean_crack_pct"),
            "taping_coverage_pct": mean("mean_taping_coverage_pct")}


def _trend(rows: list[dict], end: date, days: int) -> list[dict]:
    """One point per day of the `days` ending at `end`, from `daily_site_summary` rows (any sites)."""
    by_day: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_day[str(r["day"])].append(r)
    out = []
    for i in range(days - 1, -1, -1):
        day = (end - timedelta(days=i)).isoformat()
        pooled = _pool(by_day.get(day, []))
        out.append({"day": day, **{k: pooled[k] for k in (
            "photos", "crack_share_pct", "mean_crack_pct", "taping_coverage_pct")}})
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
                     "LEFT JOIN photos p ON p.id = f.photo_id WHERE f.final AND f.at >= :a AND f.at < :b "
                     "ORDER BY f.at", a=midnight_utc(start), b=midnight_utc(end + timedelta(days=1)))
    if site:
        failures = [f for f in failures if f["site"] == site]
    by_site: dict[str, list[dict]] = defaultdict(list)
    for p in photos:
        by_site[p["site"]].append(p)
    sites = []
    for name in sorted(by_site):
        figures = site_figures(name, by_site[name])
        figures["failures"] = sum(1 for f in failures if f["site"] == name)
        figures["trend"] = _trend([r for r in daily if r["site"] == name], end, trend_days)
        sites.append(figures)
    totals = site_figures("All sites", photos)
    totals["failures"], totals["trend"] = len(failures), _trend(daily, end, trend_days)
    return {
        "kind": kind, "title": TITLES.get(kind, "QA report"), "date": start.isoformat(),
        "period": {"start": start.isoformat(), "end": end.isoformat()}, "site": site,
        "generated_at": datetime.now().isoformat(timespec="seconds"),
        "model_versions": sorted({p["model_version"] for p in photos if p["model_version"]}),
        "totals": totals, "sites": sites,
        "failures": [{"at": str(f["at"])[:19], "path": f["path"], "stage": f["stage"], "error": f["error"],
                      "quarantined_to": f["quarantined_to"]} for f in failures],
    }


def write_report(store: Store, kind: str, start: date, end: date, out_dir: Path, site: str | None = None,
                 self_contained: bool = False) -> Path:
    """The HTML report of [start, end] from the store, written into `out_dir` with the index refreshed;
    what both the schedule and `qa-daemon report` call."""
    from reports.render import render_report  # Jinja2 and Pillow: only when a report is made

    return render_report(period_summary(store, start, end, site=site, kind=kind), out_dir,
                         self_contained=self_contained)


def _period_key(day: str, group_by: str) -> str:
    d = date.fromisoformat(day)
    if group_by == "week":
        return week_start(d).isoformat()
    return day[:7] if group_by == "month" else day


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
            mm = [r["crack_length_mm"] for r in rs if r["crack_length_mm"] is not None]
            row.update({"photos_with_cracks": pooled["photos_with_cracks"],
                        "crack_share_pct": round(pooled["crack_share_pct"], 2),
                        "mean_crack_pct": round(pooled["mean_crack_pct"], 3),
                        "crack_length_px": round(sum(r["crack_length_px"] or 0 for r in rs), 1),
                        "crack_length_mm": round(sum(mm), 1) if mm else None,
                        **{k: sum(r[k] for r in rs) for k in SEVERITIES}})
        if task in (None, "taping"):
            row["mean_taping_coverage_pct"] = round(pooled["taping_coverage_pct"], 3)
        out.append(row)
    return out
