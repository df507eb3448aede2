"""Processed photos with chosen crack and taping figures, as the daemon leaves them, for the reports.

    add_results(store, tmp_path, [Result("tower-a", "2026-11-24", "IMG_1.jpg", crack_pct=2.0, taping_pct=30.0)])
    rows = photo_rows(2000, "tower-a", "2026-11-24", tmp_path)   # `photo_results` rows, no store needed
    summary = day_summary(rows)                                   # what period_summary makes of them

`add_results` goes through the store's queue as the processor does, and writes each photo's overlay (cracks
red, taping blue, drawn by `model.masks.write_overlay`) and masks unless told not to (their paths are
recorded all the same). The rows and summary of a
big day are built without a store, in a fraction of the time, for the tests and `bench.reports`.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from daemon.config import SeverityConfig
from daemon.store import DetectionResult, Identified, PhotoResult, Store
from daemon.summary import TITLES, report_photo, site_figures


@dataclass
class Result:
    """One processed photo: its figures in source pixels, in mm where the site had `mm_per_pixel`."""

    site: str
    day: str
    name: str
    crack_pct: float = 0.0
    crack_width_px: float = 0.0
    taping_pct: float = 0.0
    segments: int = 0
    mm_per_pixel: float | None = None
    location: str = "L1"
    time: str = "10:00:00"

    def measures(self) -> tuple[dict, dict]:
        """The crack and the taping detection's columns, as `daemon.measure.measure` gives them."""
        mm = self.mm_per_pixel
        crack_len = 40.0 * self.crack_pct
        width = self.crack_width_px if self.crack_pct else 0.0
        crack = {"area_px": int(self.crack_pct * 100), "area_pct": self.crack_pct,
                 "components": 1 if self.crack_pct else 0, "mean_confidence": 0.9 if self.crack_pct else None,
                 "length_px": crack_len, "max_width_px": width, "coverage_pct": None,
                 "length_mm": None if mm is None else crack_len * mm,
                 "max_width_mm": None if mm is None else width * mm,
                 "severity": SeverityConfig().classify(width * mm) if mm is not None and self.crack_pct else None}
        tape_len = 25.0 * self.taping_pct
        taping = {"area_px": int(self.taping_pct * 100), "area_pct": self.taping_pct, "components": self.segments,
                  "mean_confidence": 0.8 if self.taping_pct else None, "coverage_pct": self.taping_pct,
                  "length_px": tape_len, "length_mm": None if mm is None else tape_len * mm,
                  "max_width_px": None, "max_width_mm": None, "severity": None}
        return crack, taping


@functools.cache
def _wall(h: int, w: int) -> np.ndarray:
    """A plastered wall to draw on, made once per size (a big day has thousands of photos)."""
    return np.clip(np.random.default_rng(0).normal(200, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def write_files(r: Result, folder: Path, image_id: str) -> tuple[Path, Path, Path]:
    """The photo's overlay JPEG and mask PNGs, drawn in proportion to its figures; (overlay, crack, taping)."""
    from model.masks import write_masks, write_overlay

    h, w = 240, 320
    crack, taping = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    if r.taping_pct:
        taping[:, 40: 40 + max(2, round(w * r.taping_pct / 100))] = 255
    if r.crack_pct:
        xs = np.arange(60, min(w - 1, 60 + max(10, round(2 * w * r.crack_pct / 100))))
        points = np.stack([xs, 120 + np.round(20 * np.sin(xs / 15))], axis=1).astype(np.int32)
        cv2.polylines(crack, [points], False, 255, max(1, round(r.crack_width_px / 4)))
    out = folder / r.site.replace("/", "_") / r.day
    out.mkdir(parents=True, exist_ok=True)
    paths = write_masks(out, image_id, ["segment crack", "segment taping area"], [crack, taping])
    overlay = write_overlay(out / f"{image_id}__overlay.jpg", _wall(h, w), [crack, taping])
    return overlay, paths[0], paths[1]


def add_results(store: Store, folder: Path, results: list[Result], files: bool = True) -> None:
    """Record each result as a processed photo (a crack and a taping detection), with its files if asked.
    The photos are queued one by one, as intake does, then taken and completed in one batch."""
    version = store.models.register("v1", folder, "compact", "f" * 64, {})
    by_path = {}
    for r in results:
        path = folder / "incoming" / r.site.replace("/", "_") / r.day / r.name
        digest = hashlib.sha256(str(path).encode()).hexdigest()
        by_path[path] = r
        store.queue.add_photo(Identified(
            path=path, sha256=digest, image_ids=(digest[:12],), size=1, mtime_ns=1, site=r.site,
            location=r.location, captured_at=datetime.fromisoformat(f"{r.day}T{r.time}"), captured_from="exif",
            width=320, height=240))
    done = []
    for job in store.queue.claim(len(results), "t"):
        r = by_path[job.path]
        crack_m, taping_m = r.measures()
        if files:
            overlay, crack_mask, taping_mask = write_files(r, folder / "outputs", job.image_id)
        else:  # recorded where the daemon would have written them
            out = folder / "outputs" / r.site.replace("/", "_") / r.day
            overlay, crack_mask, taping_mask = (out / f"{job.image_id}__overlay.jpg",
                                                out / f"{job.image_id}__segment_crack.png",
                                                out / f"{job.image_id}__segment_taping_area.png")
        done.append((job, PhotoResult(folder, overlay, 10.0, [
            DetectionResult("crack", "segment crack", crack_mask, 0.5, crack_m),
            DetectionResult("taping", "segment taping area", taping_mask, 0.5, taping_m)])))
    store.queue.complete(done, version)


def photo_rows(n: int, site: str, day: str, folder: Path, mm_per_pixel: float | None = None) -> list[dict]:
    """`n` photos of a site and day as `photo_results` rows: about a third with cracks, half with taping,
    a few with no overlay; the files they name are not written."""
    rows = []
    start = datetime.fromisoformat(f"{day}T07:00:00")
    for i in range(n):
        r = Result(site, day, f"IMG_{i:05d}.jpg", crack_pct=round((i * 37 % 100) / 20, 2) if i % 3 == 0 else 0.0,
                   crack_width_px=float(2 + i * 13 % 40), taping_pct=float(i * 7 % 60) if i % 2 else 0.0,
                   segments=1 + i % 4 if i % 2 else 0, mm_per_pixel=mm_per_pixel, location=f"L{1 + i % 9}")
        crack, taping = r.measures()
        out = folder / site / day
        rows.append({
            "site": site, "name": r.name, "location": r.location, "day": day,
            "captured_at": (start + timedelta(seconds=17 * i)).isoformat(sep=" "), "model_version": "v1",
            "crack_pct": crack["area_pct"], "crack_area_px": crack["area_px"],
            "crack_components": crack["components"], "crack_length_px": crack["length_px"],
            "crack_length_mm": crack["length_mm"], "crack_max_width_px": crack["max_width_px"],
            "crack_max_width_mm": crack["max_width_mm"], "crack_severity": crack["severity"],
            "taping_coverage_pct": taping["coverage_pct"], "taping_components": taping["components"],
            "taping_length_px": taping["length_px"], "taping_length_mm": taping["length_mm"],
            "overlay_path": None if i % 50 == 49 else str(out / f"p{i}__overlay.jpg"),
            "crack_mask": str(out / f"p{i}__segment_crack.png"),
            "taping_mask": str(out / f"p{i}__segment_taping_area.png"),
        })
    return rows


def day_summary(rows: list[dict], kind: str = "daily") -> dict:
    """What `daemon.summary.period_summary` makes of these rows (one day), without trends or failures."""
    day = rows[0]["day"]
    sites = []
    for site in sorted({r["site"] for r in rows}):
        mine = [r for r in rows if r["site"] == site]
        sites.append({**site_figures(site, mine), "all_photos": [report_photo(r) for r in mine]})
    return {"kind": kind, "title": TITLES[kind], "date": day, "period": {"start": day, "end": day}, "site": None,
            "generated_at": f"{day}T18:00:00", "model_versions": ["v1"], "totals": site_figures("All sites", rows),
            "sites": sites, "failures": []}
