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
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import yaml
from PIL import Image
from rich.console import Console
from rich.table import Table

from bench import daemon as e2e
from daemon.config import SHIPPED_CHECKPOINT

SITES = {"tower-a": ["L1", "L2", "L3"], "tower-b": ["L1", "L4"], "annex": ["ground"]}
SHARE_FRACTION = 0.25  # photos that arrive through the bind-mounted share
DIRECT_FRACTION = 0.2  # photos written in place (in two halves) rather than renamed into place
OUTPUT_KB_PER_PHOTO = 128  # measured 53 to 78 KB on the tmpfs (two masks + an overlay at 640x640), and a margin
OUTPUT_HEADROOM_MB = 128  # above the daemon's outputs.min_free_mb (100 MB by default)
HOLD_S = {"db-lock": (5, 15), "disk-full": (10, 20), "unmount": (8, 12)}
COMMIT_LINE = re.compile(r" INFO +(.+?)  site=")  # the per-photo line: "<name>  site=<site>/<location>  ..."


def now() -> float:
    return time.monotonic()


# --- photos ---------------------------------------------------------------------------------------

def unique_jpeg(data: bytes, text: str) -> bytes:
    """The same JPEG with a comment segment (COM, FF FE) right after the SOI marker: other bytes, same pixels."""
    body = text.encode()
    return data[:2] + b"\xff\xfe" + (len(body) + 2).to_bytes(2, "big") + body + data[2:]


@dataclass
class Dropped:
    name: str
    path: str  # where the daemon sees it
    sha256: str
    width: int
    height: int
    at: datetime  # naive UTC, like the store's timestamps
    method: str  # rename or direct


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
        target.parent.mkdir(parents=True, exist_ok=True)
        at = e2e.now_utc()
        if self.rng.random() < DIRECT_FRACTION:
            method = "direct"
            with open(target, "wb") as f:  # the daemon may see it half-written: it must wait for the rest
                f.write(data[: len(data) // 2])
                f.flush()
                time.sleep(0.05)
                f.write(data[len(data) // 2:])
        else:
            method = "rename"
            tmp = target.with_name(f".{name}.part")
            tmp.write_bytes(data)
            tmp.rename(target)
        seen_at = self.home / ("share" if share else "in") / folder / name
        return Dropped(name, str(seen_at), hashlib.sha256(data).hexdigest(), *self.sizes[src], at, method)


# --- the daemon under test ------------------------------------------------------------------------

class Daemon:
    """The daemon process: started, killed, stopped and restarted; one log file per run. Hold `lock` to
    change its state."""

    def __init__(self, home: Path, config: Path):
        self.home, self.config = home, config
        self.env = {**os.environ, "PYTHONPATH": str(e2e.REPO), "PYTHONPYCACHEPREFIX": str(home / "pycache")}
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)  # a daemon is installed with precompiled bytecode
        self.lock = threading.RLock()
        self.closing = threading.Event()  # the run is over: no more starts
        self.proc: subprocess.Popen | None = None
        self.logs: list[Path] = []
        self.memory: e2e.Memory | None = None
        self.peak_rss = 0
        self.startups: list[float] = []

    def start(self, timeout: float = 300) -> None:
        """Start a daemon and wait for its "qa-daemon started" line; RuntimeError when it exits first."""
        if self.closing.is_set():
            raise RuntimeError("not started: the run is being cleaned up")
        log = self.home / f"daemon-{len(self.logs) + 1}.log"
        self.logs.append(log)
        begin = now()
        with log.open("w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "daemon", "-c", str(self.config), "run"],
                                         cwd=self.home, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        self.memory = e2e.Memory(self.proc.pid)
        self.memory.start()
        while "qa-daemon started" not in log.read_text(errors="replace"):
            if self.proc.poll() is not None or now() - begin > timeout or self.closing.is_set():
                self.kill()
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"the daemon did not start ({log.name}): {' | '.join(tail)}")
            time.sleep(0.2)
        self.startups.append(now() - begin)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self._reap()

    def terminate(self, timeout: float = 120) -> int:
        """SIGTERM and the exit code (SIGKILL after `timeout` s: -9)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self._reap()

    def _reap(self) -> int | None:
        code = self.proc.wait() if self.proc is not None else None
        if self.memory is not None:
            self.memory.stop.set()
            self.peak_rss = max(self.peak_rss, self.memory.peak)
        return code


# --- faults ---------------------------------------------------------------------------------------

def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def mounted(path: Path) -> bool:
    """Whether `path` is a mount point; unlike os.path.ismount, also for a bind mount within one file system."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4].encode().decode("unicode_escape") == target for line in f)


def unmount(path: Path) -> str:
    """Unmount `path`; a lazy unmount when it stays busy (a file open in it)."""
    for _ in range(10):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return "unmounted"
        time.sleep(0.2)
    subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)
    return "unmounted (lazily: it was busy)"


def fill(path: Path) -> int:
    """Write `path` until the disk is full (ENOSPC); the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        for block in (b"\0" * 2**20, b"\0" * 4096):
            while True:
                try:
                    written += f.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written


class Faults:
    """The fault injector: one thread per kind of fault, each on its own seeded schedule; a log of events."""

    def __init__(self, home: Path, daemon: Daemon, seed: int, t0: float):
        self.home, self.daemon, self.seed, self.t0 = home, daemon, seed, t0
        self.db = home / "qa.sqlite3"
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.events: list[dict] = []
        self.counts: Counter[str] = Counter()
        self.downtime = 0.0
        self.sigterm_exit: int | None = None
        self.skipped: dict[str, str] = {}

    def log(self, kind: str, what: str) -> None:
        t = round(now() - self.t0, 1)
        self.events.append({"t": t, "kind": kind, "event": what})
        print(f"{t:8.1f} s  {kind:<10} {what}", file=sys.stderr, flush=True)

    def every(self, kind: str, interval: tuple[float, float] | None, action: Callable[[random.Random], None]) -> None:
        """Run `action` every `interval` (uniform between its bounds) seconds until stopped."""
        if interval is None:
            self.skipped[kind] = "disabled"
            return

        def loop() -> None:
            rng = random.Random(f"{self.seed}:{kind}")
            while not self.stop.wait(rng.uniform(*interval)):
                self.counts[kind] += 1
                try:
                    action(rng)
                except Exception as exc:  # noqa: BLE001 - an injector failure is reported, the run goes on
                    self.log("error", f"{kind} failed: {exc!r}")

        self.threads.append(threading.Thread(target=loop, name=kind, daemon=True))
        self.threads[-1].start()

    def once(self, kind: str, at: float, action: Callable[[], None]) -> None:
        def run() -> None:
            if not self.stop.wait(max(0.0, self.t0 + at - now())):
                self.counts[kind] += 1
                action()

        self.threads.append(threading.Thread(target=run, name=kind, daemon=True))
        self.threads[-1].start()

    def end(self, timeout: float = 60) -> None:
        """Stop injecting; each fault in progress is undone first (its hold ends early)."""
        self.stop.set()
        for t in self.threads:
            t.join(timeout)

    # the faults themselves
    def restart(self) -> None:
        """Start the daemon again, retrying a start that fails; the caller holds the daemon's lock."""
        for attempt in range(1, 6):
            if self.stop.is_set():  # the run is over; the end (or the clean-up) takes it from here
                return
            try:
                self.daemon.start()
                self.log("daemon", f"up again (pid {self.daemon.proc.pid}, {self.daemon.logs[-1].name}, "
                                   f"start-up {self.daemon.startups[-1]:.1f} s)")
                return
            except RuntimeError as exc:
                self.log("error", f"start {attempt} failed: {exc}")
        raise RuntimeError("the daemon did not start 5 times in a row")

    def kill(self, _rng: random.Random) -> None:
        with self.daemon.lock:
            begin = now()
            pid = self.daemon.proc.pid
            self.daemon.kill()
            self.log("kill", f"SIGKILL daemon pid {pid}")
            self.restart()
            self.downtime += now() - begin

    def sigterm(self) -> None:
        with self.daemon.lock:
            begin = now()
            pid = self.daemon.proc.pid
            self.log("sigterm", f"SIGTERM daemon pid {pid}")
            self.sigterm_exit = self.daemon.terminate()
            self.log("sigterm", f"daemon exited with code {self.sigterm_exit} after {now() - begin:.1f} s")
            self.restart()
            self.downtime += now() - begin

    def db_lock(self, rng: random.Random) -> None:
        hold = rng.uniform(*HOLD_S["db-lock"])
        con = sqlite3.connect(self.db, timeout=30, isolation_level=None)
        try:
            begin = now()
            con.execute("BEGIN EXCLUSIVE")
            self.log("db-lock", f"write lock taken (waited {now() - begin:.1f} s), held {hold:.1f} s")
            self.stop.wait(hold)
            con.execute("COMMIT")
            self.log("db-lock", "released")
        finally:
            con.close()

    def disk_full(self, rng: random.Random) -> None:
        hold = rng.uniform(*HOLD_S["disk-full"])
        ballast = self.home / "outputs" / ".ballast"
        try:
            size = fill(ballast)
            self.log("disk-full", f"outputs full ({size / 2**20:.0f} MB ballast, ENOSPC), held {hold:.1f} s")
            self.stop.wait(hold)
        finally:
            ballast.unlink(missing_ok=True)
            self.log("disk-full", f"ballast deleted, {shutil.disk_usage(ballast.parent).free / 2**20:.0f} MB free")

    def unmount(self, rng: random.Random) -> None:
        hold = rng.uniform(*HOLD_S["unmount"])
        share = self.home / "share"
        try:
            self.log("unmount", f"share/ {unmount(share)}, for {hold:.1f} s")
            self.stop.wait(hold)
        finally:
            if not mounted(share):
                mount("--bind", str(self.home / "nas"), str(share))
                self.log("unmount", "share/ bound again")


# --- the checks -----------------------------------------------------------------------------------

def bad_mask(path: str, width: int, height: int) -> str | None:
    """Why the mask at `path` is not a single-channel {0, 255} PNG of width x height, or None."""
    if not os.path.exists(path):
        return "missing"
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return "not a PNG"
    m = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if m is None or m.ndim != 2 or m.dtype != np.uint8:
        return f"not single-channel 8-bit ({None if m is None else (m.shape, m.dtype)})"
    if m.shape != (height, width):
        return f"{m.shape[1]}x{m.shape[0]}, source {width}x{height}"
    if ((m != 0) & (m != 255)).any():
        return "values other than 0 and 255"
    return None


def general(error: str) -> str:
    """A failure's message without its paths and numbers, to count failures by cause."""
    error = re.sub(r"'[^']*'|/\S+", "<path>", error)
    return re.sub(r"\d+(\.\d+)?", "N", error)[:110]


def check(db: Path, dropped: list[Dropped], logs: list[Path], mask_sample: int, seed: int) -> dict:
    """Every figure of the final report, from the store, the daemon's logs and the mask files."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        photos = {r[0]: r[1:] for r in con.execute(
            "SELECT p.sha256, p.id, j.status, j.attempts, j.last_error, p.processed_at, "
            "(SELECT COUNT(*) FROM detections d WHERE d.photo_id = p.id) "
            "FROM photos p JOIN jobs j ON j.photo_id = p.id")}
        masks = con.execute("SELECT p.sha256, d.mask_path FROM detections d JOIN photos p ON p.id = d.photo_id"
                            ).fetchall()
        duplicate_files = con.execute("SELECT path, photo_id FROM files WHERE duplicate").fetchall()
        final = con.execute("SELECT path, stage, error, quarantined_to FROM failures WHERE final").fetchall()
        retried = Counter(f"{stage}: {general(error)}" for stage, error in
                          con.execute("SELECT stage, error FROM failures WHERE NOT final"))
        not_done = dict(con.execute("SELECT status, COUNT(*) FROM jobs WHERE status != 'done' GROUP BY status"))
    finally:
        con.close()
    ours = {d.sha256: d for d in dropped}
    missing_row = (None, None, 0, None, None, 0)  # id, status, attempts, last error, processed at, detections
    row = {d.sha256: photos.get(d.sha256, missing_row) for d in dropped}
    done = [d for d in dropped if row[d.sha256][1] == "done"]
    lost = [d for d in dropped if row[d.sha256][1] != "done"]
    wrong_detections = [(d.name, row[d.sha256][5]) for d in dropped if d.sha256 in photos and row[d.sha256][5] != 2]

    lines: Counter[str] = Counter()
    for log in logs:
        lines.update(m.group(1) for m in COMMIT_LINE.finditer(log.read_text(errors="replace")))
    twice = {d.name: lines[d.name] for d in dropped if lines[d.name] > 1}
    unlogged = sum(1 for d in done if lines[d.name] == 0)  # killed between its commit and its log line

    ours_masks = [(p, ours[s]) for s, p in masks if s in ours]
    if mask_sample and mask_sample < len(ours_masks):
        ours_masks = random.Random(seed).sample(ours_masks, mask_sample)
    bad = [(p, why) for p, d in ours_masks if (why := bad_mask(p, d.width, d.height))]

    commits = [datetime.fromisoformat(row[d.sha256][4]) for d in done]
    first_drop = min((d.at for d in dropped), default=None)
    wall = (max(commits) - first_drop).total_seconds() if commits and first_drop else 0.0
    return {
        "dropped": len(dropped),
        "recorded": sum(1 for d in dropped if d.sha256 in photos),
        "done": len(done),
        "lost": len(lost),
        "lost_photos": [{**asdict(d), "at": d.at.isoformat(), "status": row[d.sha256][1],
                         "attempts": row[d.sha256][2], "last_error": row[d.sha256][3]} for d in lost[:20]],
        "false_duplicates": len(duplicate_files),
        "false_duplicate_files": [p for p, _ in duplicate_files[:20]],
        "committed_twice": len(twice),
        "committed_twice_names": dict(list(twice.items())[:20]),
        "done_without_log_line": unlogged,
        "wrong_detections": len(wrong_detections),
        "wrong_detection_photos": wrong_detections[:20],
        "final_failures": len(final),
        "final_failure_rows": [list(r) for r in final[:20]],
        "jobs_not_done": not_done,
        "retried_failures": dict(retried.most_common()),
        "masks_checked": len(ours_masks),
        "bad_masks": len(bad),
        "bad_mask_examples": bad[:20],
        "wall_s": round(wall, 1),
        "photos_per_s": round(len(done) / wall, 3) if wall else 0.0,
    }


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
    config = home / "config.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"checkpoint": str(checkpoint), "device": device},
        "watch": {"roots": ["in", "share"], "heartbeat_s": 30},
        "store": {"url": "sqlite:///qa.sqlite3"},
        "outputs": {"dir": "outputs", "quarantine": "quarantine"},
        "schedule": {"daily_report": None, "weekly_summary": None, "retrain_check_hours": None}}))
    return config, no_mounts


def cleanup(home: Path, daemon: Daemon | None, faults: Faults | None, keep: bool) -> None:
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
        daemon = Daemon(home, config)
        first = now()
        daemon.start()
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
            with daemon.lock:
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
        with daemon.lock:
            if not daemon.running():  # killed just before the faults stopped: a daemon to stop cleanly
                faults.log("daemon", "down at the end (killed last); starting it to stop it cleanly")
                daemon.start()
            progress(faults, producer, db)
            begin = now()
            final_exit = daemon.terminate()
            faults.log("daemon", f"SIGTERM at the end: exit code {final_exit} after {now() - begin:.1f} s")

        report = check(db, producer.dropped, daemon.logs, args.mask_sample, args.seed)
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


def show(r: dict) -> None:
    console = Console()

    def verdict(good: bool) -> str:
        return "[green]ok[/green]" if good else "[bold red]FAIL[/bold red]"

    t = Table(title=f"soak: {r['photos']} photos at {r['rate']}/s, seed {r['seed']} ({r['hardware']})")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("")
    skipped = r["skipped"]
    rows = [
        ("photos dropped", r["dropped"], ""),
        ("recorded (sha256 in photos)", r["recorded"], verdict(r["recorded"] == r["dropped"])),
        ("done", r["done"], verdict(r["done"] == r["dropped"])),
        ("lost (dropped - done)", r["lost"], verdict(r["lost"] == 0)),
        ("duplicates", r["duplicates"], verdict(r["duplicates"] == 0)),
        ("  files.duplicate", r["false_duplicates"], ""),
        ("  committed twice (log lines)", r["committed_twice"], ""),
        ("detections != 2", r["wrong_detections"], verdict(r["wrong_detections"] == 0)),
        ("final failures (quarantined)", r["final_failures"], verdict(r["final_failures"] == 0)),
        ("jobs not done", ", ".join(f"{k} {v}" for k, v in r["jobs_not_done"].items()) or "0",
         verdict(not r["jobs_not_done"])),
        ("bad masks / checked", f"{r['bad_masks']} / {r['masks_checked']}", verdict(r["bad_masks"] == 0)),
        ("exit code after SIGTERM", f"{r['sigterm_exit_code']} mid-run, {r['final_exit_code']} at the end",
         verdict(r["final_exit_code"] == 0 and r["sigterm_exit_code"] in (0, None))),
        ("done, no log line (killed)", r["done_without_log_line"], ""),
        ("throughput", f"{r['photos_per_s']} photos/s", ""),
        ("wall, first drop to last commit", f"{r['wall_s']} s", ""),
        ("downtime (stops and restarts)", f"{r['downtime_s']} s, {r['daemon_runs']} daemon runs", ""),
        ("start-ups", ", ".join(f"{s}" for s in r["startup_s"]) + " s", ""),
        *[(f"fault: {kind}", skipped.get(kind, n), "") for kind, n in r["faults"].items()],
        ("outputs", f"{r['outputs_files']} files, {r['outputs_mb']} MB" + (
            f"; {r['outputs_kb_per_photo']} KB/photo on the tmpfs" if r["outputs_kb_per_photo"] else ""), ""),
        ("daemon peak RSS", f"{r['peak_rss_mb']} MB", ""),
    ]
    for name, value, v in rows:
        t.add_row(name, str(value), v)
    console.print(t)
    if r["retried_failures"]:
        console.print("retried (non-final) failures by cause:")
        for cause, n in r["retried_failures"].items():
            console.print(f"  {n:6d}  {cause}", markup=False, highlight=False)
    for key in ("lost_photos", "false_duplicate_files", "committed_twice_names", "wrong_detection_photos",
                "final_failure_rows", "bad_mask_examples"):
        if r[key]:
            console.print(f"[bold]{key.replace('_', ' ')}[/bold] (first {len(r[key])}):")
            for item in r[key]:
                console.print(f"  {item}", markup=False, highlight=False)
    console.print("[bold green]PASS[/bold green]" if r["ok"] else "[bold red]FAIL[/bold red]")


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
