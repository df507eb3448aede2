"""End-to-end daemon throughput: photos dropped into a watched folder, until their results are committed.

    uv run python -m bench.daemon [--photos 60] [--large 20] [--steady 30] [--startups 3] [--checkpoint DIR] [--json]
    uv run python -m bench.daemon --startup-only [--startups 5]

Starts a real `qa-daemon run` on a temporary folder with the shipped model, waits until it is up,
then drops a burst of photos at once and reads the store as an analyst would (plain sqlite3):

- start-up (`startup`): from launching `qa-daemon run`, with bytecode precompiled and a photo already
  waiting in the watched folder, to that photo's results committed (`startup_s`), and to the
  "qa-daemon started" line (`ready_s`); the median of `--startups` restarts;
- throughput: photos / (last commit - drop);
- latency: each photo's commit - drop, p50 and p95 (a burst: the last photo waits for all others;
  `--steady N`: N photos sent one per second, the latency a crew sees);
- peak resident memory of the daemon process (psutil, sampled every 0.1 s).

Bursts: `--photos` real 640x640 photos from ../shared/datasets, then `--large` 4000x3000 photos
made from other real ones (upscaled, JPEG quality 90, like a 12-megapixel phone photo).
`watch.settle_s` is 0.5 s here (default 2 s): it adds to each photo's latency, not to throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2

from model import SHIPPED_CHECKPOINT
from tests.support.daemon import STARTED, DaemonError, DaemonProcess, write_daemon_config
from tests.support.datasets import CRACKS, DRYWALL, SHARED
from tests.support.datasets import REPO as REPO  # bench/__main__.py and bench/soak.py read it here

SOURCES = [CRACKS / "train", DRYWALL / "train"]


def real_photos(n: int, skip: int = 0) -> list[Path]:
    """n distinct real photos, alternating between the two datasets."""
    pools = [sorted(s.glob("*.jpg"))[skip:] for s in SOURCES]
    if not all(pools):
        sys.exit(f"real photos not found under {SHARED}; this benchmark needs ../shared/datasets")
    return [pools[i % 2][i // 2] for i in range(n)]


def make_large(sources: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sources:
        im = cv2.resize(cv2.imread(str(src)), (4000, 3000), interpolation=cv2.INTER_CUBIC)
        target = folder / f"big_{len(out):03d}_{src.stem[:30]}.jpg"  # stems of copies share a prefix
        cv2.imwrite(str(target), im, [cv2.IMWRITE_JPEG_QUALITY, 90])
        out.append(target)
    return out


def committed(db: Path, names: set[str]) -> dict[str, datetime]:
    """Commit time of each named photo that is done."""
    con = sqlite3.connect(db, timeout=30)
    try:
        rows = con.execute("SELECT name, processed_at FROM photos JOIN jobs ON jobs.photo_id = photos.id "
                           "WHERE jobs.status = 'done'").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()
    return {n: datetime.fromisoformat(t) for n, t in rows if n in names}


def wait_committed(db: Path, names: set[str], timeout: float) -> dict[str, datetime]:
    end = time.monotonic() + timeout
    while True:
        done = committed(db, names)
        if len(done) == len(names) or time.monotonic() > end:
            return done
        time.sleep(0.2)


def figures(latencies: list[float], span_s: float) -> dict:
    lat = sorted(latencies)
    return {"photos": len(lat), "seconds": round(span_s, 2), "photos_per_s": round(len(lat) / span_s, 3),
            "p50_latency_s": round(statistics.median(lat), 2),
            "p95_latency_s": round(lat[max(0, round(0.95 * len(lat)) - 1)], 2)}


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def steady(home: Path, files: list[Path], folder: str, rate: float, timeout: float = 600) -> dict:
    """Drop one photo every 1/rate seconds; latency of each from its drop to its commit."""
    target = home / "in" / "bench-site" / folder
    target.mkdir(parents=True)
    staging = home / "staging" / folder
    staging.mkdir(parents=True)
    dropped = {}
    for f in files:
        shutil.copy(f, staging / f.name)
        start = time.monotonic()
        dropped[f.name] = now_utc()
        (staging / f.name).rename(target / f.name)  # appears complete, at once
        time.sleep(max(0.0, 1 / rate - (time.monotonic() - start)))
    done = wait_committed(home / "qa.sqlite3", set(dropped), timeout)
    lat = [(done[n] - dropped[n]).total_seconds() for n in done]
    return {**figures(lat, (max(done.values()) - min(dropped.values())).total_seconds()), "rate": rate}


def burst(home: Path, files: list[Path], folder: str, timeout: float = 1800) -> dict:
    """Copy `files` into the watched folder at once; wait for all their records; the figures."""
    staging = home / "staging" / folder
    staging.mkdir(parents=True)
    for f in files:
        shutil.copy(f, staging / f.name)
    target = home / "in" / "bench-site" / folder
    dropped = datetime.now(UTC).replace(tzinfo=None)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target)  # the whole burst appears at one instant
    done = wait_committed(home / "qa.sqlite3", {f.name for f in files}, timeout)
    lat = [(t - dropped).total_seconds() for t in done.values()]
    return figures(lat, max(lat))


def startup(checkpoint: Path, device: str, runs: int, timeout: float = 300, runtime: str = "auto") -> dict:
    """Seconds from launching `qa-daemon run` to its first photo's commit (`startup_s`) and to its "qa-daemon
    started" line (`ready_s`), medians of `runs` restarts, each with a new real photo waiting in the watched folder.

    An untimed first start compiles the bytecode (as `uv sync --compile-bytecode` does at install) and makes the
    store; each timed start is then a restart on that store, as after a reboot or an upgrade. `watch.settle_s`
    keeps its default (2 s): a photo found at start waits it out too, while the model loads. The first start
    also compiles the model (`model.runtime` auto: model/runtime.py) into the user's cache, if not yet there."""
    home = Path(tempfile.mkdtemp(prefix="qa-bench-start-"))
    config = write_daemon_config(home, {
        "model": {"checkpoint": str(checkpoint), "device": device, "runtime": runtime},
        "watch": {"roots": ["in"], "heartbeat_s": 30},
        "store": {"url": "sqlite:///qa.sqlite3"},
        "schedule": {"daily_report": None, "weekly_summary": None, "retrain_check_hours": None}})
    folder = home / "in" / "bench-site" / "start"
    folder.mkdir(parents=True)
    first, ready = [], []
    with DaemonProcess(home, config, "daemon-{run}.log", precompiled=True) as daemon:
        for i, photo in enumerate(real_photos(runs + 1)):
            shutil.copy(photo, folder / photo.name)
            launched, begin = now_utc(), time.monotonic()
            daemon.start()
            done, up = {}, None
            while not done or up is None:  # the photo may be committed before the "started" line is written
                if up is None and STARTED in daemon.log_text():
                    up = time.monotonic() - begin
                done = done or committed(home / "qa.sqlite3", {photo.name})
                if not daemon.running() or time.monotonic() - begin > timeout:
                    daemon.kill()
                    sys.exit(f"start-up {i}: no photo processed after {timeout} s\n{daemon.log_text()}")
                time.sleep(0.02)
            if daemon.terminate(timeout=120) != 0:
                sys.exit(f"start-up {i}: the daemon did not stop cleanly\n{daemon.log_text()}")
            if i:  # the first start compiled the bytecode
                first.append((done[photo.name] - launched).total_seconds())
                ready.append(up)
    shutil.rmtree(home, ignore_errors=True)
    return {"startup_s": round(statistics.median(first), 2), "ready_s": round(statistics.median(ready), 2),
            "runs": runs, "startup_runs_s": [round(s, 2) for s in first], "ready_runs_s": [round(s, 2) for s in ready]}


def run(photos: int, large: int, steady_photos: int, checkpoint: Path, device: str, batch_size: int,
        startups: int = 3, runtime: str = "auto", settings: dict | None = None) -> dict:
    """Measure `startups` start-ups (none for 0); then start a daemon with `model.runtime` `runtime`, send the
    bursts (a burst of 0 photos is left out) and the steady stream through it; the figures and its peak memory.
    `settings`: config keys by section, over the bench's own (`{"outputs": {"fsync": False}}`)."""
    starting = startup(checkpoint, device, startups, runtime=runtime) if startups else None
    home = Path(tempfile.mkdtemp(prefix="qa-bench-"))
    sections = {
        "model": {"checkpoint": str(checkpoint), "device": device, "batch_size": batch_size, "runtime": runtime},
        "watch": {"roots": ["in"], "settle_s": 0.5, "heartbeat_s": 30}, "store": {"url": "sqlite:///qa.sqlite3"},
        "schedule": {"daily_report": None, "weekly_summary": None, "retrain_check_hours": None}}
    for section, values in (settings or {}).items():
        sections[section] = {**sections.get(section, {}), **values}
    config = write_daemon_config(home, sections)
    small = real_photos(photos + steady_photos)
    large_files = make_large(real_photos(large, skip=photos + steady_photos), home / "large-src")
    with DaemonProcess(home, config, track_memory=True) as daemon:
        try:
            daemon.start(wait=True)
        except DaemonError as exc:
            sys.exit(f"{exc}\n{daemon.log_text()}")
        results = {"640x640": burst(home, small[:photos], "small")}
        if large:
            results["4000x3000"] = burst(home, large_files, "large")
        if steady_photos:
            results["steady_640x640"] = steady(home, small[photos:], "steady", rate=1.0)
        daemon.terminate(timeout=120)
    shutil.rmtree(home, ignore_errors=True)
    return {"bursts": results, "peak_rss_mb": round(daemon.peak_rss / 2**20), "startup": starting,
            "runtime": runtime}


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):  # Linux names the CPU model only here
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), cpu)
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=60, help="640x640 photos in the first burst")
    ap.add_argument("--large", type=int, default=20, help="4000x3000 photos in the second burst")
    ap.add_argument("--steady", type=int, default=0, help="640x640 photos sent one per second afterwards")
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED_CHECKPOINT)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--startups", type=int, default=3, help="timed restarts for the start-up figure")
    ap.add_argument("--startup-only", action="store_true", help="only the start-up figure")
    ap.add_argument("--runtime", default="auto", choices=["auto", "onnx", "eager"], help="the daemon's model.runtime")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.startup_only:
        report = {"startup": startup(args.checkpoint, args.device, args.startups, runtime=args.runtime)}
    else:
        report = run(args.photos, args.large, args.steady, args.checkpoint, args.device, args.batch_size,
                     args.startups, args.runtime)
    report.update(checkpoint=str(args.checkpoint), device=args.device, hardware=hardware())
    if args.json:
        print(json.dumps(report))
        return
    s = report["startup"]
    print(f"start-up: first photo processed {s['startup_s']} s after launch, ready in {s['ready_s']} s "
          f"(median of {s['runs']} restarts, bytecode precompiled); {report['hardware']}")
    if args.startup_only:
        return
    print(f"peak RSS {report['peak_rss_mb']} MB")
    print(f"{'burst':<15} {'photos':>6} {'seconds':>8} {'photos/s':>9} {'p50 s':>6} {'p95 s':>6}")
    for name, r in report["bursts"].items():
        print(f"{name:<15} {r['photos']:>6} {r['seconds']:>8} {r['photos_per_s']:>9} {r['p50_latency_s']:>6} "
              f"{r['p95_latency_s']:>6}")


if __name__ == "__main__":
    main()
