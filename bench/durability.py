"""What results that survive a power cut cost, and how long a backup of the store takes.

    uv run python -m bench.durability [--photos 40] [--repeats 2] [--rounds 40] [--detections 100000] [--json]
    uv run python -m bench.durability --skip-daemon          # the in-process figures only (seconds)

1. end to end (bench/daemon.py): a burst of `--photos` real 640x640 photos through a real `qa-daemon run`,
   with durable writes (`outputs.fsync: true`, `store.synchronous: full`, the defaults) and without
   (`outputs.fsync: false`, `store.synchronous: normal`), `--repeats` daemons of each in alternating
   order: the median photos/s of each;
2. per photo, in-process, each variant interleaved with the other round by round so both see the same
   load: writing its three result files (two mask PNGs and the overlay JPEG of a real photo, at
   640x640 and at 4000x3000) with and without `durable()`, and recording it done (one transaction with
   its two detections) with synchronous full and normal; medians in ms, and the difference: the cost of
   durability per photo;
3. `qa-daemon backup` (daemon/store/backup.py) of a SQLite store holding `--detections` detections (two
   per photo, bulk-inserted): seconds and size.

Needs ../shared/datasets for the real photos of 1 and 2.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from bench import daemon as e2e
from daemon.store import Detection, DetectionResult, Identified, Job, Photo, PhotoResult, Store
from daemon.store.backup import backup
from model import SHIPPED_CHECKPOINT
from model.files import durable, write_atomic
from model.masks import MASK_PNG, at_size, encode_png, overlay

DURABLE = {"outputs": {"fsync": True}, "store": {"synchronous": "full"}}
FAST = {"outputs": {"fsync": False}, "store": {"synchronous": "normal"}}


def end_to_end(photos: int, checkpoint: Path, repeats: int) -> dict:
    """photos/s of a burst through a real daemon with and without durable writes: `repeats` daemons of each,
    in alternating order (the first of a pair warms the page cache for the second); the medians."""
    runs: dict[str, list[float]] = {"fast": [], "durable": []}
    for i in range(repeats):
        for name in ("fast", "durable") if i % 2 == 0 else ("durable", "fast"):
            r = e2e.run(photos, 0, 0, checkpoint, "cpu", 8, startups=0, settings=FAST if name == "fast" else DURABLE)
            runs[name].append(r["bursts"]["640x640"]["photos_per_s"])
    fast, sync = statistics.median(runs["fast"]), statistics.median(runs["durable"])
    return {"photos": photos, "fast_photos_per_s": round(fast, 2), "durable_photos_per_s": round(sync, 2),
            "slowdown_pct": round(100 * (1 - sync / fast), 1), "runs": runs}


def result_files(photo: Path, size: tuple[int, int]) -> list[bytes]:
    """The bytes of a photo's three result files at `size` (w, h): two masks (edges of the real photo, a
    crack-like structure) and the overlay JPEG at the daemon's default longest side."""
    rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    edges = cv2.dilate(cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 80, 160), np.ones((3, 3), np.uint8))
    masks = [at_size(edges, size), at_size(np.where(edges[::-1] > 0, 255, 0).astype(np.uint8), size)]
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(overlay(rgb, [edges, edges[::-1]]), cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 85])
    return [encode_png(m, MASK_PNG) for m in masks] + [jpeg.tobytes()]


def writes(rounds: int, size: tuple[int, int], folder: Path) -> dict:
    """ms to write one photo's result files, with and without `durable()`, interleaved round by round."""
    files = result_files(e2e.real_photos(1)[0], size)
    times: dict[str, list[float]] = {"plain": [], "durable": []}
    for i in range(rounds):
        for mode in ("plain", "durable") if i % 2 else ("durable", "plain"):
            start = time.perf_counter()
            with durable(mode == "durable"):
                for j, data in enumerate(files):
                    write_atomic(folder / f"{mode}_{i}_{j}.bin", data)
            times[mode].append((time.perf_counter() - start) * 1000)
    plain, sync = statistics.median(times["plain"]), statistics.median(times["durable"])
    return {"plain_ms": round(plain, 2), "durable_ms": round(sync, 2), "fsync_cost_ms": round(sync - plain, 2),
            "bytes": sum(map(len, files))}


def commits(rounds: int, folder: Path) -> dict:
    """ms to record one photo done (its two detections and its job, one transaction), synchronous full
    against normal, interleaved."""
    stores = {level: Store.open(f"sqlite:///{folder / f'{level}.sqlite3'}", synchronous=level)
              for level in ("normal", "full")}
    versions = {level: s.models.register("v1", folder, "compact", "f" * 64, {}) for level, s in stores.items()}
    times: dict[str, list[float]] = {"normal": [], "full": []}
    measures = {"area_px": 1, "area_pct": 0.01, "components": 1}
    for i in range(rounds):
        for level in ("normal", "full") if i % 2 else ("full", "normal"):
            store = stores[level]
            store.queue.add_photo(Identified(
                path=folder / f"{i}.jpg", sha256=f"{i:064d}", image_ids=(f"p{i}",), size=1, mtime_ns=i,
                site="s", location="L1", captured_at=datetime(2026, 11, 24, 10), captured_from="exif",
                width=100, height=100))
            [job] = store.queue.claim(1, "bench")
            result = PhotoResult(folder, None, 10.0, [DetectionResult("crack", "segment crack", folder / "c.png", 0.5,
                                                                      measures),
                                                      DetectionResult("taping", "segment taping area",
                                                                      folder / "t.png", 0.5, measures)])
            start = time.perf_counter()
            store.queue.complete([(job, result)], versions[level])
            times[level].append((time.perf_counter() - start) * 1000)
    for s in stores.values():
        s.close()
    normal, full = statistics.median(times["normal"]), statistics.median(times["full"])
    return {"normal_ms": round(normal, 2), "full_ms": round(full, 2), "full_cost_ms": round(full - normal, 2)}


def bulk_store(url: str, folder: Path, detections: int) -> None:
    """A store of `detections` detections, two per done photo, inserted in bulk."""
    store = Store.open(url)
    version = store.models.register("v1", folder, "compact", "f" * 64, {})
    n, day = detections // 2, datetime(2026, 1, 1, 10)
    rows = [{"id": i, "sha256": f"{i:064d}", "image_id": f"p{i}", "name": f"p{i}.jpg",
             "path": str(folder / f"p{i}.jpg"), "site": f"site-{i % 5}", "location": f"L{i % 40}",
             "captured_at": day + timedelta(minutes=i),
             "captured_from": "exif", "width": 640, "height": 640, "bytes": 80_000, "processed_at": day,
             "processing_ms": 180.0, "model_version_id": version, "output_dir": str(folder),
             "overlay_path": str(folder / f"p{i}__overlay.jpg")} for i in range(1, n + 1)]
    crack = {"task": "crack", "prompt": "segment crack", "threshold": 0.5, "area_px": 1200, "area_pct": 0.3,
             "components": 2, "mean_confidence": 0.8, "length_px": 300.0, "max_width_px": 4.0, "length_mm": 60.0,
             "max_width_mm": 0.8, "severity": "fine", "coverage_pct": None, "model_version_id": version}
    taping = {"task": "taping", "prompt": "segment taping area", "threshold": 0.5, "area_px": 40000,
              "area_pct": 9.8, "components": 1, "mean_confidence": 0.9, "length_px": None, "max_width_px": None,
              "length_mm": None, "max_width_mm": None, "severity": None, "coverage_pct": 9.8,
              "model_version_id": version}
    with store.engine.execution_options(writer=True).begin() as conn:
        conn.execute(Photo.__table__.insert(), rows)
        conn.execute(Job.__table__.insert(), [{"photo_id": i, "status": "done", "attempts": 1}
                                              for i in range(1, n + 1)])
        conn.execute(Detection.__table__.insert(),
                     [{**d, "photo_id": i, "mask_path": str(folder / f"p{i}__{d['task']}.png")}
                      for i in range(1, n + 1) for d in (crack, taping)])
    store.close()


def backup_time(detections: int, folder: Path) -> dict:
    url = f"sqlite:///{folder / 'big.sqlite3'}"
    start = time.perf_counter()
    bulk_store(url, folder, detections)
    built = time.perf_counter() - start
    b = backup(url, folder / "backup.sqlite3")
    return {"detections": b.detections, "photos": b.photos, "backup_s": round(b.seconds, 2),
            "mb": round(b.bytes / 2**20, 1), "store_built_s": round(built, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=40, help="640x640 photos in each end-to-end burst")
    ap.add_argument("--repeats", type=int, default=2, help="daemons of each kind, end to end")
    ap.add_argument("--rounds", type=int, default=40, help="photos written and recorded in-process, per variant")
    ap.add_argument("--detections", type=int, default=100_000, help="detections in the store backed up")
    ap.add_argument("--skip-daemon", action="store_true", help="leave out the end-to-end bursts")
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED_CHECKPOINT)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="qa-bench-durability-"))
    try:
        report = {"writes_640": writes(args.rounds, (640, 640), folder),
                  "writes_12mp": writes(args.rounds, (4000, 3000), folder),
                  "commit": commits(args.rounds, folder), "backup": backup_time(args.detections, folder)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if not args.skip_daemon:
        report["end_to_end"] = end_to_end(args.photos, args.checkpoint, args.repeats)
    report["hardware"] = e2e.hardware()
    if args.json:
        print(json.dumps(report))
        return
    for size in ("640", "12mp"):
        w = report[f"writes_{size}"]
        print(f"result files {size:>4} ({w['bytes'] / 1024:.0f} KB): {w['plain_ms']} ms, durable {w['durable_ms']} ms "
              f"(fsync +{w['fsync_cost_ms']} ms a photo)")
    c = report["commit"]
    print(f"recording a photo done: synchronous normal {c['normal_ms']} ms, full {c['full_ms']} ms "
          f"(+{c['full_cost_ms']} ms)")
    b = report["backup"]
    print(f"backup of {b['detections']} detections ({b['photos']} photos, {b['mb']} MB): {b['backup_s']} s")
    if "end_to_end" in report:
        e = report["end_to_end"]
        print(f"daemon, bursts of {e['photos']} at 640x640: {e['fast_photos_per_s']} photos/s without durable "
              f"writes, {e['durable_photos_per_s']} with ({e['slowdown_pct']}% slower; runs {e['runs']})")
    print(report["hardware"])


if __name__ == "__main__":
    main()
