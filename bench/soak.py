"""Soak test: thousands of photos through a real daemon while faults are injected; none may be lost or doubled.

    uv run python -m bench.soak [--photos 5000] [--rate 8] [--seed 0] [--checkpoint DIR] [--json]
        [--kill-every 60-150] [--lock-every 45-120] [--disk-full-every 60-150] [--unmount-every 60-150]
        [--sigterm-at S] [--timeout S] [--mask-sample N] [--keep]

Starts a real `qa-daemon run` (`python -m daemon`, the shipped model by default) in a temporary folder
and, from a producer thread, drops `--photos` photos at a steady `--rate` into `in/<site>/<location>/`
(three quarters) and into a "network share" (a quarter). Every photo is a real 640x640 photo from
../shared/datasets (bench.daemon.real_photos, cycled) with a JPEG comment segment holding a counter
inserted after its SOI marker: unique bytes, the same pixels. Most appear at once (written under a
hidden temporary name, then renamed); one in five is written in place in two halves, as a slow copier
would. At 8 photos/s the queue grows (the daemon does about 5/s on 2 cores), so faults hit a busy daemon.

Faults, each kind on its own schedule drawn from a generator seeded by `--seed`, repeated over the
whole run (until every photo is done), each logged with its time:

1. SIGKILL of the daemon at a random moment (every `--kill-every` seconds), then a restart;
2. another process holds the SQLite write lock (`BEGIN EXCLUSIVE`) for 5 to 15 s, then commits;
3. the outputs disk full: `outputs.dir` is a tmpfs sized for the run (53 to 78 KB a photo measured there:
   two mask PNGs and an overlay JPEG at 640x640; 128 KB a photo are reserved, plus 128 MB so that the
   daemon's `outputs.min_free_mb`, 100 MB by default, is met), filled with a ballast file until writes
   fail (ENOSPC), held 10 to 20 s, then the ballast is deleted;
4. the share unmounted and back: the watch root `share/` is a bind mount of `nas/` (where the producer
   writes, the share's server side); it is unmounted for 8 to 12 s, which leaves `share/` an empty folder
   (as an unmounted NFS mount point does), then bound again;
5. once (`--sigterm-at`, default a random moment in the middle of the drops), SIGTERM: the daemon must
   exit with code 0; then a clean restart.

A daemon that exits by itself is restarted, as systemd's `Restart=on-failure` would, and logged. Faults
3 and 4 need root (mount); without it they are skipped, and the report says so. Whatever happens, even
Ctrl-C, the daemon is killed and everything is unmounted. The daemon runs with precompiled bytecode
(`PYTHONPYCACHEPREFIX` in the temporary folder), as `uv sync --compile-bytecode` installs it, so a
restart takes about 10 s rather than 28 s; the first start compiles.

At the end it waits until the store shows every dropped photo done (`--timeout` seconds after the last
drop; running out counts as lost photos), stops the faults, sends SIGTERM (the daemon must exit 0),
and checks, reading the store with plain sqlite3:

- dropped, recorded (photos.sha256 against each dropped file's sha256), done; lost = dropped - done;
- duplicates: files marked `duplicate` (every dropped photo is unique, so each one is false) and photos
  committed twice (a name in more than one per-photo log line "<name>  site=..." over all daemon logs);
- photos with a number of detections other than 2, final failures (quarantined), jobs not done;
- every detection's mask (or `--mask-sample N` of them): exists, single-channel {0, 255} PNG of the
  source's size;
- throughput: photos / wall time from the first drop to the last commit; also the wall time, the
  downtime spent stopping and restarting, and how many faults of each kind.

Exit code 1 when a check fails: photos lost, duplicates, wrong detections, bad masks, or an exit code
other than 0 after SIGTERM. `--json` prints the figures as one JSON object; the fault log goes to stderr.

Here: the producer and the run; the fault injector is bench/soak_faults.py, the checks and the table
bench/soak_report.py; the daemon process (tests/support/daemon.py), the faults themselves
(tests/support/faults.py) and the photo and mask helpers (tests/support/photos.py) are the tests' own.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from bench import daemon as e2e
from bench.soak_faults import Faults, now
from bench.soak_report import Dropped, check, show
from daemon.config import SHIPPED_CHECKPOINT
from tests.support.daemon import DaemonProcess, write_daemon_config
from tests.support.faults import mount, mounted, unmount
from tests.support.photos import put, unique_jpeg

SITES = {"tower-a": ["L1", "L2", "L3"], "tower-b": ["L1", "L4"], "annex": ["ground"]}
SHARE_FRACTION = 0.25  # photos that arrive through the bind-mounted share
DIRECT_FRACTION = 0.2  # photos written in place (in two halves) rather than renamed into place
OUTPUT_KB_PER_PHOTO = 128  # measured 53 to 78 KB on the tmpfs (two masks + an overlay at 640x640), and a margin
OUTPUT_HEADROOM_MB = 128  # above the daemon's outputs.min_free_mb (100 MB by default)


# --- photos ---------------------------------------------------------------------------------------

class Producer(threading.Thread):
    """Drops `n` unique photos at `rate` per second, into `in/` and into the share's server side `nas/`."""

    def __init__(self, home: Path, sources: list[Path], n: int, rate: float, seed: int, stop: threading.Event):
        super().__init__(name="producer", daemon=True)
        self.home, self.sources, self.n, self.rate, self.stop = home, sources, n, rate, stop
        self.rng = random.Random(f"{seed}:producer")
        self.dropped: list[Dropped] = []
        self.sizes: dict[Path, tuple[int, int]] = {}

    def run(self) -> None:
        start = now()
        for i in range(self.n):
            if self.stop.wait(max(0.0, start + i / self.rate - now())):
                return
            self.dropped.append(self.drop(i))

    def drop(self, i: int) -> Dropped:
        src = self.sources[i % len(self.sources)]
        if src not in self.sizes:
            with Image.open(src) as im:
                self.sizes[src] = im.size
        data = unique_jpeg(src.read_bytes(), f"qa-daemon soak photo {i}")
        site = self.rng.choice(sorted(SITES))
        folder = Path(site, self.rng.choice(SITES[site]))
        share = self.rng.random() < SHARE_FRACTION
        name = f"soak{i:05d}_{src.stem[:20]}.jpg"
        target = self.home / ("nas" if share else "in") / folder / name
        at = e2e.now_utc()
        method = "direct" if self.rng.random() < DIRECT_FRACTION else "rename"
        if method == "direct":  # the daemon may see it half-written: it must wait for the rest
            put(data, target, "in place", pieces=2, pause_s=0.05)
        else:
            put(data, target)
        seen_at = self.home / ("share" if share else "in") / folder / name
        return Dropped(name, str(seen_at), hashlib.sha256(data).hexdigest(), *self.sizes[src], at, method)


# --- the run --------------------------------------------------------------------------------------

def interval(text: str) -> tuple[float, float] | None:
    """'60-150' -> (60, 150); '90' -> (90, 90); 'off' or '0' -> None."""
    if text in ("off", "0"):
        return None
    low, _, high = text.partition("-")
    return float(low), float(high or low)


def setup(home: Path, photos: int, checkpoint: Path, device: str) -> tuple[Path, str | None]:
    """The temporary folder: watch roots in/ and share/ (bound to nas/), outputs/ (a tmpfs), the config.
    The config, and why the mounts could not be made (None when they were)."""
    for folder in ("in", "nas", "share", "outputs"):
        (home / folder).mkdir()
    no_mounts = None if os.geteuid() == 0 else "skipped: needs root (mount)"
    if no_mounts is None:
        try:
            mb = photos * OUTPUT_KB_PER_PHOTO // 1024 + OUTPUT_HEADROOM_MB
            mount("-t", "tmpfs", "-o", f"size={mb}m", "soak-outputs", str(home / "outputs"))
            mount("--bind", str(home / "nas"), str(home / "share"))
        except subprocess.CalledProcessError as exc:
            no_mounts = f"skipped: mount refused ({exc.stderr.strip()})"
            cleanup(home, None, None, keep=True)
    if no_mounts is not None:  # no bind mount: the producer's nas/ is the watched share/ itself
        (home / "share").rmdir()
        (home / "share").symlink_to(home / "nas")
    config = write_daemon_config(home, {
        "model": {"checkpoint": str(checkpoint), "device": device},
        "watch": {"roots": ["in", "share"], "heartbeat_s": 30},
        "store": {"url": "sqlite:///qa.sqlite3"},
        "outputs": {"dir": "outputs", "quarantine": "quarantine"},
        "schedule": {"daily_report": None, "weekly_summary": None, "retrain_check_hours": None}})
    return config, no_mounts


def cleanup(home: Path, daemon: DaemonProcess | None, faults: Faults | None, keep: bool) -> None:
    """Stop the faults, kill the daemon, unmount everything, remove the folder (unless kept)."""
    if faults is not None:
        faults.stop.set()
    if daemon is not None:
        daemon.closing.set()
        with contextlib.suppress(Exception):
            daemon.kill()
    if faults is not None:
        faults.end(timeout=30)  # each undoes its fault (a ballast deleted, the share bound again)
    if daemon is not None:
        with contextlib.suppress(Exception):
            daemon.kill()  # one started while the faults were stopping
    for folder in (home / "share", home / "outputs"):
        with contextlib.suppress(Exception):
            while mounted(folder):
                unmount(folder)
    if not keep:
        shutil.rmtree(home, ignore_errors=True)


def progress(faults: Faults, producer: Producer, db: Path) -> None:
    done = len(e2e.committed(db, {d.name for d in producer.dropped}))
    faults.log("progress", f"dropped {len(producer.dropped)}/{producer.n}, done {done}, "
                           f"daemon {'up' if faults.daemon.running() else 'down'}")


def soak(args: argparse.Namespace) -> dict:
    home = Path(tempfile.mkdtemp(prefix="qa-soak-"))
    daemon = producer = faults = None
    stop = threading.Event()
    try:
        config, no_mounts = setup(home, args.photos, args.checkpoint, args.device)
        db = home / "qa.sqlite3"
        daemon = DaemonProcess(home, config, "daemon-{run}.log", precompiled=True, track_memory=True)
        first = now()
        daemon.start(wait=True)
        print(f"daemon up in {now() - first:.1f} s (first start: bytecode compiled); working in {home}",
              file=sys.stderr, flush=True)

        t0 = now()
        producer = Producer(home, e2e.real_photos(min(args.photos, 1500)), args.photos, args.rate, args.seed, stop)
        faults = Faults(home, daemon, args.seed, t0)
        producer.start()
        drop_s = args.photos / args.rate
        sigterm_at = args.sigterm_at if args.sigterm_at is not None else \
            random.Random(f"{args.seed}:sigterm").uniform(0.3, 0.7) * drop_s
        faults.every("kill", args.kill_every, faults.kill)
        faults.every("db-lock", args.lock_every, faults.db_lock)
        for kind, every, action in (("disk-full", args.disk_full_every, faults.disk_full),
                                    ("unmount", args.unmount_every, faults.unmount)):
            if no_mounts is None:
                faults.every(kind, every, action)
            else:
                faults.skipped[kind] = no_mounts
        faults.once("sigterm", sigterm_at, faults.sigterm)
        for kind, why in faults.skipped.items():
            faults.log(kind, why)

        # supervise until every dropped photo is done (or the time is up)
        last_progress, deadline, timed_out = now(), None, False
        while True:
            time.sleep(1.0)
            with faults.lock:
                if not daemon.running():
                    faults.log("daemon", f"exited by itself with code {daemon.proc.returncode}; restarting")
                    begin = now()
                    daemon.kill()
                    faults.restart()
                    faults.downtime += now() - begin
            if now() - last_progress >= 30:
                progress(faults, producer, db)
                last_progress = now()
            if producer.is_alive():
                continue
            if deadline is None:
                deadline = now() + args.timeout
                faults.log("producer", f"all {len(producer.dropped)} photos dropped; waiting for the last ones")
            if len(e2e.committed(db, {d.name for d in producer.dropped})) == len(producer.dropped):
                break
            if now() > deadline:
                faults.log("error", f"timed out {args.timeout:.0f} s after the last drop")
                timed_out = True
                break
        faults.end()
        with faults.lock:
            if not daemon.running():  # killed just before the faults stopped: a daemon to stop cleanly
                faults.log("daemon", "down at the end (killed last); starting it to stop it cleanly")
                daemon.start(wait=True)
            progress(faults, producer, db)
            begin = now()
            final_exit = daemon.terminate(timeout=120)
            faults.log("daemon", f"SIGTERM at the end: exit code {final_exit} after {now() - begin:.1f} s")

        report = check(db, producer.dropped, daemon, args.mask_sample, args.seed)
        used = shutil.disk_usage(home / "outputs").used if no_mounts is None else 0  # tmpfs: whole pages, directories
        files = [Path(d, f) for d, _, names in os.walk(home / "outputs") for f in names]
        report.update({
            "duplicates": report["false_duplicates"] + report["committed_twice"],
            "final_exit_code": final_exit, "sigterm_exit_code": faults.sigterm_exit,
            "downtime_s": round(faults.downtime, 1), "daemon_runs": len(daemon.logs),
            "startup_s": [round(s, 1) for s in daemon.startups],
            "faults": {k: faults.counts[k] for k in ("kill", "db-lock", "disk-full", "unmount", "sigterm")},
            "skipped": faults.skipped, "timed_out": timed_out,
            "outputs_kb_per_photo": round(used / 1024 / max(1, report["done"]), 1) if used else None,
            "outputs_files": len(files), "outputs_mb": round(sum(f.stat().st_size for f in files) / 2**20, 1),
            "peak_rss_mb": round(daemon.peak_rss / 2**20),
            "photos": args.photos, "rate": args.rate, "seed": args.seed, "checkpoint": str(args.checkpoint),
            "hardware": e2e.hardware(), "events": faults.events,
        })
        report["ok"] = (report["lost"] == 0 and report["duplicates"] == 0 and report["wrong_detections"] == 0
                        and report["bad_masks"] == 0 and final_exit == 0 and faults.sigterm_exit in (0, None))
        return report
    finally:
        handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        stop.set()  # a second Ctrl-C (or `uv run` passing one on) must not cut the clean-up short
        cleanup(home, daemon, faults, args.keep)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if args.keep:
            print(f"kept {home}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=8.0, help="photos dropped per second")
    ap.add_argument("--seed", type=int, default=0, help="seeds the fault schedule and the photos' placement")
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED_CHECKPOINT)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--kill-every", type=interval, default="60-150", help="seconds between SIGKILLs (MIN-MAX, off)")
    ap.add_argument("--lock-every", type=interval, default="45-120", help="seconds between database write locks")
    ap.add_argument("--disk-full-every", type=interval, default="60-150", help="seconds between full outputs disks")
    ap.add_argument("--unmount-every", type=interval, default="60-150", help="seconds between share unmounts")
    ap.add_argument("--sigterm-at", type=float, help="seconds after the first drop (default: random, mid-drops)")
    ap.add_argument("--timeout", type=float, help="seconds to wait after the last drop (default 600 + 1 a photo)")
    ap.add_argument("--mask-sample", type=int, default=0, help="check this many masks at random (default all)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary folder (store, logs; the outputs tmpfs is unmounted)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    # Ctrl-C, and SIGTERM, end the run through its clean-up (also where a shell started it with SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.timeout is None:
        args.timeout = 600 + args.photos
    try:
        report = soak(args)
    except KeyboardInterrupt:
        sys.exit("interrupted: the daemon was killed and everything unmounted")
    if args.json:
        print(json.dumps(report, default=str))
    else:
        show(report)
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
