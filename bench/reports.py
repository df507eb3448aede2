"""Reports of a big day: a site's 2,000 photos of one capture day, from the store to the pages.

    uv run python -m bench.reports [--photos 2000] [--runs 3] [--files] [--json]

The photos are recorded in a SQLite store as the daemon leaves them (`tests.support.results`; not timed):
a third with cracks, half with taping. Then, each run in a fresh reports folder:

- `summary_s`: `daemon.summary.period_summary`, reading the day from the store;
- `render_s`: `reports.render.render_report`: the daily report, its thumbnails and the eight pages of the
  day's table of all photos (one per ordering);
- `total_s`: both, what the daily report job does; target (issue #16): under 10 s.

Page weight: the bytes of the report and of each table page, and their total. Medians over `--runs`.
Without `--files` the photos' overlays and masks are recorded but not written, so the report shows
placeholders for its thumbnails (a dozen JPEGs less to shrink); `--files` writes them (slower to set up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

from bench.daemon import hardware
from daemon.store import Store
from daemon.summary import period_summary
from reports.render import render_report
from tests.support.results import Result, add_results

DAY = date(2026, 11, 24)
SITE = "tower-a"


def results(n: int) -> list[Result]:
    """`n` photos of one site and day, at 17 s intervals from 07:00, figures spread as on a real site."""
    out = []
    for i in range(n):
        seconds = 7 * 3600 + 17 * i
        out.append(Result(SITE, DAY.isoformat(), f"IMG_{i:05d}.jpg",
                          crack_pct=round((i * 37 % 100) / 20, 2) if i % 3 == 0 else 0.0,
                          crack_width_px=float(2 + i * 13 % 40), taping_pct=float(i * 7 % 60) if i % 2 else 0.0,
                          segments=1 + i % 4 if i % 2 else 0, mm_per_pixel=0.2, location=f"L{1 + i % 9}",
                          time=f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"))
    return out


def run(photos: int, runs: int, files: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = Store.open(f"sqlite:///{folder / 'qa.sqlite3'}")
        start = time.perf_counter()
        add_results(store, folder, results(photos), files=files)
        fill_s = time.perf_counter() - start
        timings: dict[str, list[float]] = {"summary_s": [], "render_s": [], "total_s": []}
        for i in range(runs):
            out = folder / f"reports-{i}"
            t0 = time.perf_counter()
            summary = period_summary(store, DAY, DAY, kind="daily")
            t1 = time.perf_counter()
            report = render_report(summary, out)
            t2 = time.perf_counter()
            timings["summary_s"].append(t1 - t0)
            timings["render_s"].append(t2 - t1)
            timings["total_s"].append(t2 - t0)
        store.close()
        pages = {str(p.relative_to(out)): p.stat().st_size for p in sorted((out / "photos").rglob("*.html"))}
        return {
            "photos": photos, "runs": runs, "files_written": files, "fill_s": round(fill_s, 2),
            **{k: round(statistics.median(v), 3) for k, v in timings.items()},
            "all_runs": {k: [round(x, 3) for x in v] for k, v in timings.items()},
            "report_bytes": report.stat().st_size, "table_page_bytes": pages,
            "table_bytes": sum(pages.values()), "total_bytes": report.stat().st_size + sum(pages.values()),
            "hardware": hardware(),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=2000, help="photos in the day")
    ap.add_argument("--runs", type=int, default=3, help="timed runs, each into a fresh reports folder")
    ap.add_argument("--files", action="store_true", help="write each photo's overlay and masks")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = run(args.photos, args.runs, args.files)
    if args.json:
        print(json.dumps(r))
        return
    print(f"hardware: {r['hardware']}; {r['photos']} photos in one day and site, {r['runs']} runs, medians "
          f"(store filled in {r['fill_s']} s{', files written' if r['files_written'] else ''})")
    for key in ("summary_s", "render_s", "total_s"):
        print(f"  {key:<10} {r[key]:>8.3f}   runs {r['all_runs'][key]}")
    print(f"  report page            {r['report_bytes']:>10,} bytes")
    for name, size in r["table_page_bytes"].items():
        print(f"  {name:<48} {size:>10,} bytes")
    print(f"  table pages, total     {r['table_bytes']:>10,} bytes; with the report {r['total_bytes']:,} bytes")


if __name__ == "__main__":
    main()
