"""The scrub's cost: seconds to check 10,000 done photos' masks and overlays (`daemon/scrub.py`).

    uv run python -m bench.scrub [--photos 10000] [--json]

A store is filled with `--photos` done photos at each of two sizes, 640x480 and 4000x3000 sources:
two masks at the source's size (PNGs as the daemon writes them, a crack line and a taping band) and
an overlay JPEG (longest side 1600, as `outputs.overlay_max_side`). The files of one photo are
written once per size and hard-linked for every other photo, so the figure is the scrub's own work
(reading, CRC-checking the PNGs, decoding the JPEG at 1/8 scale, the store's queries) with the files
in the page cache; a cold disk adds reading `bytes_per_photo` at its speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import insert

from daemon.scrub import scrub
from daemon.store import Store
from daemon.store.schema import Detection, Job, JobStatus, Photo, utcnow
from model.masks import write_masks, write_overlay

SIZES = {"640x480": (640, 480), "4000x3000": (4000, 3000)}
PROMPTS = ["segment crack", "segment taping area"]


def wall(shape: tuple[int, int]) -> np.ndarray:
    """A photo-like picture (smooth shading and fine grain, as a wall is): its JPEG is as big as a real one's,
    where pure noise would be several times bigger."""
    rng = np.random.default_rng(0)
    shading = cv2.resize(rng.uniform(110, 190, (6, 8, 3)).astype(np.float32), shape[::-1],
                         interpolation=cv2.INTER_CUBIC)
    return np.clip(shading + rng.normal(0, 6, (*shape, 3)), 0, 255).astype(np.uint8)


def template(folder: Path, size: tuple[int, int]) -> list[Path]:
    """One photo's result files at `size`: [crack mask, taping mask, overlay]."""
    w, h = size
    crack = np.zeros((h, w), np.uint8)
    for x in range(w // 8, 7 * w // 8):  # a wandering line a few pixels wide
        y = int(h / 2 + h / 6 * np.sin(x / w * 9))
        crack[y: y + max(2, h // 400), x] = 255
    taping = np.zeros((h, w), np.uint8)
    taping[:, w // 3: w // 3 + w // 20] = 255
    masks = write_masks(folder, "template", PROMPTS, [crack, taping])
    rgb = wall((min(h, 1200), min(w, 1600)))
    small = [m[:: max(1, h // rgb.shape[0]), :: max(1, w // rgb.shape[1])][: rgb.shape[0], : rgb.shape[1]]
             for m in (crack, taping)]
    overlay = write_overlay(folder / "template__overlay.jpg", rgb, small, 1600)
    return [*masks, overlay]


def fill(store: Store, folder: Path, files: list[Path], n: int, size: tuple[int, int]) -> None:
    """`n` done photos whose results are hard links to `files`."""
    version = store.models.register("bench", folder, "compact", "b" * 64, {})
    now, batch = utcnow(), 2000
    for start in range(0, n, batch):
        photos, jobs, detections = [], [], []
        for i in range(start, min(n, start + batch)):
            out = folder / f"{i // 1000:03d}"
            out.mkdir(exist_ok=True)
            links = [out / f"p{i}{f.name.removeprefix('template')}" for f in files]
            for src, dst in zip(files, links, strict=True):
                os.link(src, dst)
            pid = i + 1
            photos.append(dict(id=pid, sha256=f"{pid:064x}", image_id=f"p{i}", name=f"p{i}.jpg",
                               path=str(folder / "gone" / f"p{i}.jpg"), site="bench", location="L1",
                               captured_at=datetime(2026, 11, 24, 9), captured_from="exif", width=size[0],
                               height=size[1], bytes=1, first_seen_at=now, processed_at=now, processing_ms=1.0,
                               model_version_id=version, output_dir=str(out), overlay_path=str(links[2])))
            jobs.append(dict(photo_id=pid, status=JobStatus.done, attempts=1, next_attempt_at=now, updated_at=now))
            detections += [dict(photo_id=pid, model_version_id=version, task=task, prompt=prompt,
                                mask_path=str(mask), threshold=0.5, area_px=1, area_pct=0.1, components=1)
                           for task, prompt, mask in zip(("crack", "taping"), PROMPTS, links, strict=False)]
        with store.engine.begin() as s:
            s.execute(insert(Photo), photos)
            s.execute(insert(Job), jobs)
            s.execute(insert(Detection), detections)


def cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        name = platform.processor() or "unknown CPU"
    return f"{name}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {"photos": args.photos, "hardware": cpu()}
    for label, size in SIZES.items():
        with tempfile.TemporaryDirectory(prefix="bench-scrub-") as tmp:
            folder = Path(tmp)
            files = template(folder, size)
            store = Store.open(f"sqlite:///{folder / 'qa.sqlite3'}")
            try:
                fill(store, folder, files, args.photos, size)
                start = time.perf_counter()
                found = scrub(store, fix=False)
                seconds = time.perf_counter() - start
            finally:
                store.close()
            assert found.checked == args.photos and not found.damaged, found.summary()
            results[label] = {"seconds": round(seconds, 2),
                              "seconds_per_10000": round(seconds * 10_000 / args.photos, 1),
                              "ms_per_photo": round(1000 * seconds / args.photos, 2),
                              "bytes_per_photo": sum(f.stat().st_size for f in files)}
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"scrub of {args.photos} done photos ({results['hardware']}):")
    for label in SIZES:
        r = results[label]
        print(f"  {label:>9} sources: {r['seconds']} s ({r['seconds_per_10000']} s per 10,000; "
              f"{r['ms_per_photo']} ms a photo; {r['bytes_per_photo']:,} bytes of results a photo)")


if __name__ == "__main__":
    main()
