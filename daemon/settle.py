"""Settling: a file found by the watcher waits here until it is complete.

    settler.offer(path, root)                 # the watcher saw it (an event or a rescan)
    settler.offer(path, root, complete=True)  # its writer closed it, or it was renamed into place
    for path, root, attempts in settler.ready(): ...   # intake takes the files that are complete
    settler.snapshot()                        # what `qa-daemon status` shows of the files not taken yet

A file is complete once its size and mtime have held still for `settle_s`; a copy in progress keeps
changing, so it is never taken half-written. When the OS says the writer is done (it closed the file,
or the file was renamed into place: how rsync, Syncthing and upload tools deliver) the file is ready at
once, as long as its size and mtime are still those of that moment; a writer that opens it again
changes them, and the settle clock applies. A file that intake finds incomplete is offered again after
a backoff, and given up on after `watch.max_attempts`. Until taken or given up on, a file is `settling`
(changing, or not yet still for `settle_s`) or `waiting` (intake found it incomplete: empty, truncated, still
being written; it is retried); `snapshot()` lists them so that no file dropped in is invisible.
"""

from __future__ import annotations

import heapq
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SNAPSHOT_FILES = 200  # files listed by `snapshot()`: a copy of 50,000 photos is counted, not listed


@dataclass
class Waiting:
    root: Path
    size: int
    mtime_ns: int
    stable_since: float
    due: float
    attempts: int = 0
    error: str = ""
    complete: tuple[int, int] | None = None  # (size, mtime_ns) when its writer closed it or it was renamed in
    look: bool = False  # a completion was reported since the last look: look at once, whatever `due` says
    seen_at: float = field(default_factory=time.time)  # wall clock, first seen: "waiting since" in status


class Settler:
    """Files seen but not yet taken; thread-safe. A file is ready once unchanged for `settle_s`, or at once
    when reported complete and unchanged since. `clock`: monotonic seconds (the tests drive it)."""

    def __init__(self, settle_s: float, backoff_s: float, max_attempts: int, give_up_after_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic):
        self.settle_s, self.backoff_s, self.max_attempts = settle_s, backoff_s, max_attempts
        self.give_up_after_s = give_up_after_s  # a stalled copy may resume: never give up on a file sooner
        self.clock = clock
        self._waiting: dict[Path, Waiting] = {}
        self._lock = threading.Lock()
        self.version = 0  # moves whenever `snapshot()` would change: the heartbeat publishes only then

    def __len__(self) -> int:
        return len(self._waiting)

    def offer(self, path: Path, root: Path, complete: bool = False) -> None:
        """A file event or rescan saw `path`; start watching it settle. `complete`: the OS reported its writer
        done (closed, or renamed into place), so it is ready as soon as it is seen unchanged since."""
        now, done = self.clock(), None
        if complete:
            try:
                st = os.stat(path)  # what the writer left; outside the lock: a share may be slow to answer
                done = (st.st_size, st.st_mtime_ns)
            except OSError:
                pass  # gone already: ready() forgets it
        with self._lock:
            w = self._waiting.get(path)
            if w is None:
                w = self._waiting[path] = Waiting(root, -1, -1, now, now)
                self.version += 1
            if done is not None:
                w.complete, w.look = done, True

    def ready(self) -> list[tuple[Path, Path, int]]:
        """(path, root, attempts so far) of the files that are complete."""
        now, out = self.clock(), []
        with self._lock:
            items = [(p, w) for p, w in self._waiting.items() if w.due <= now or w.look]
            for _, w in items:
                w.look = False  # a completion reported from here on is looked at by the next call
        for path, w in items:
            try:
                st = os.stat(path)
            except OSError:
                self.forget(path)  # gone (moved away or deleted) before it settled
                continue
            seen = (st.st_size, st.st_mtime_ns)
            with self._lock:  # offer() may mark it complete meanwhile
                changed = seen != (w.size, w.mtime_ns)
                if changed:
                    # still changing (or first look): the clock starts again, and so do the attempts
                    if w.attempts:  # from waiting back to settling
                        self.version += 1
                    w.size, w.mtime_ns, w.stable_since, w.due, w.attempts = *seen, now, now + self.settle_s, 0
                if seen == w.complete and w.attempts == 0:
                    out.append((path, w.root, w.attempts))  # as its writer left it; a retry keeps its backoff
                elif changed or w.due > now:
                    continue  # settling; or looked at early for a completion it no longer matches
                elif now - w.stable_since >= self.settle_s:
                    out.append((path, w.root, w.attempts))
                else:
                    w.due = w.stable_since + self.settle_s
        return out

    def retry(self, path: Path, error: str) -> bool:
        """Try `path` again after a backoff; True (give up) after `max_attempts` failures and
        `give_up_after_s` seconds without a change."""
        with self._lock:
            w = self._waiting.get(path)
            if w is None:
                return False
            w.attempts += 1
            w.error = error
            self.version += 1
            now = self.clock()
            w.due = now + self.backoff_s * 2 ** (w.attempts - 1)
            return w.attempts >= self.max_attempts and now - w.stable_since >= self.give_up_after_s

    def postpone(self, path: Path) -> None:
        """Try again after a backoff without counting an attempt: the trouble was not the file's."""
        with self._lock:
            if path in self._waiting:
                self._waiting[path].due = self.clock() + max(self.backoff_s, 1.0)

    def forget(self, path: Path) -> None:
        with self._lock:
            if self._waiting.pop(path, None) is not None:
                self.version += 1

    def snapshot(self, limit: int = SNAPSHOT_FILES) -> dict[str, Any]:
        """The files not taken yet, as `qa-daemon status` shows them: the count `settling` (still changing, or
        not yet still for `settle_s`) and `waiting` (intake found them incomplete and retries), and up to
        `limit` of them, waiting ones first, then the longest seen, each with its state, attempts, last error
        and when it was first seen (seconds since the epoch)."""
        with self._lock:
            files = [(p, w.attempts, w.error, w.seen_at) for p, w in self._waiting.items()]
        waiting = sum(1 for f in files if f[1])
        shown = heapq.nsmallest(limit, files, key=lambda f: (not f[1], f[3]))
        return {"settling": len(files) - waiting, "waiting": waiting, "files": [
            {"path": str(p), "state": "waiting" if attempts else "settling", "attempts": attempts, "error": error,
             "since": seen_at} for p, attempts, error, seen_at in shown]}
