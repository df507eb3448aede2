"""The soak's fault injector (bench/soak.py): each kind of fault on its own seeded schedule, logged."""

from __future__ import annotations

import random
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.support.daemon import DaemonError, DaemonProcess
from tests.support.faults import fill, mount, mounted, unmount, write_lock

HOLD_S = {"db-lock": (5, 15), "disk-full": (10, 20), "unmount": (8, 12)}


def now() -> float:
    return time.monotonic()


# --- faults ---------------------------------------------------------------------------------------

class Faults:
    """The fault injector: one thread per kind of fault, each on its own seeded schedule; a log of events."""

    def __init__(self, home: Path, daemon: DaemonProcess, seed: int, t0: float):
        self.home, self.daemon, self.seed, self.t0 = home, daemon, seed, t0
        self.lock = threading.RLock()  # held to change the daemon's state: one fault, or the supervisor, at a time
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
        """Start the daemon again, retrying a start that fails; the caller holds the lock."""
        for attempt in range(1, 6):
            if self.stop.is_set():  # the run is over; the end (or the clean-up) takes it from here
                return
            try:
                self.daemon.start(wait=True)
                self.log("daemon", f"up again (pid {self.daemon.proc.pid}, {self.daemon.logs[-1].name}, "
                                   f"start-up {self.daemon.startups[-1]:.1f} s)")
                return
            except DaemonError as exc:
                self.log("error", f"start {attempt} failed: {exc}")
        raise RuntimeError("the daemon did not start 5 times in a row")

    def kill(self, _rng: random.Random) -> None:
        with self.lock:
            begin = now()
            pid = self.daemon.proc.pid
            self.daemon.kill()
            self.log("kill", f"SIGKILL daemon pid {pid}")
            self.restart()
            self.downtime += now() - begin

    def sigterm(self) -> None:
        with self.lock:
            begin = now()
            pid = self.daemon.proc.pid
            self.log("sigterm", f"SIGTERM daemon pid {pid}")
            self.sigterm_exit = self.daemon.terminate(timeout=120)
            self.log("sigterm", f"daemon exited with code {self.sigterm_exit} after {now() - begin:.1f} s")
            self.restart()
            self.downtime += now() - begin

    def db_lock(self, rng: random.Random) -> None:
        hold = rng.uniform(*HOLD_S["db-lock"])
        begin = now()
        with write_lock(self.db):
            self.log("db-lock", f"write lock taken (waited {now() - begin:.1f} s), held {hold:.1f} s")
            self.stop.wait(hold)
        self.log("db-lock", "released")

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


