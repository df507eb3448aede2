"""A store filled with processed photos, as the daemon leaves it, without running a model."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from daemon.store import DetectionResult, Identified, PhotoResult, Store


def fill(store: Store, folder: Path, photos: list[tuple[str, str, float, str | None]]) -> None:
    """Processed photos: (site, capture day, crack %, severity), each with a crack and a taping detection."""
    version = store.models.register("v1", folder, "compact", "f" * 64, {})
    for i, (site, day, crack, severity) in enumerate(photos):
        store.queue.add_photo(Identified(
            path=folder / f"{i}.jpg", sha256=f"{i:064d}", image_ids=(f"{i}",), size=1, mtime_ns=i, site=site,
            location="L1", captured_at=datetime.fromisoformat(f"{day}T10:00:00"), captured_from="exif",
            width=100, height=100))
        [job] = store.queue.claim(1, "t")
        crack_m = {"area_px": int(crack * 100), "area_pct": crack, "components": 1 if crack else 0,
                   "mean_confidence": 0.9, "length_px": 10.0 * crack, "max_width_px": 2.0,
                   "length_mm": 5.0 * crack, "max_width_mm": 1.0, "severity": severity}
        taping_m = {"area_px": 500, "area_pct": 5.0, "components": 1, "coverage_pct": 5.0}
        store.queue.complete([(job, PhotoResult(folder, None, 10.0, [
            DetectionResult("crack", "segment crack", folder / "c.png", 0.5, crack_m),
            DetectionResult("taping", "segment taping area", folder / "t.png", 0.5, taping_m)]))], version)
