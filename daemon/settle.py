"""Settling: a file found by the watcher waits here until its size and mtime hold still.

    settler.offer(path, root)                 # the watcher saw it (an event or a rescan)
    for path, root, attempts in settler.ready(): ...   # intake takes the files that held still

A copy in progress keeps changing, so it is never taken half-written; a file that intake finds
incomplete is offered again after a backoff, and given up on after `watch.max_attempts`.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Waiting:
    root: Path
    size: int
    mtime_ns: int
    stable_since: float
    due: float
    attempts: int = 0
    error: str = ""


class Settler:
    """Files seen but not yet taken; thread-safe. A file is ready once unchanged for `settle_s`."""

    def __init__(self, settle_s: float, backoff_s: float, max_attempts: int, give_up_after_s: float = 0.0):
        self.settle_s, self.backoff_s, self.max_attempts = settle_s, backoff_s, max_attempts
        self.give_up_after_s = give_up_after_s  # a stalled copy may resume: never give up on a file sooner
        self._waiting: dict[Path, Waiting] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._waiting)

    def offer(self, path: Path, root: Path) -> None:
        """A file event or rescan saw `path`; start watching it settle (again, if it changed)."""
        now = time.monotonic()
        with self._lock:
            if path not in self._waiting:
                self._waiting[path] = Waiting(root, -1, -1, now, now)

    def ready(self) -> list[tuple[Path, Path, int]]:
        """(path, root, attempts so far) of the files that have held still for `settle_s`."""
        now, out = time.monotonic(), []
        with self._lock:
            items = [(p, w) for p, w in self._waiting.items() if w.due <= now]
        for path, w in items:
            try:
                st = os.stat(path)
            except OSError:
                self.forget(path)  # gone (moved away or deleted) before it settled
                continue
            if (st.st_size, st.st_mtime_ns) != (w.size, w.mtime_ns):
                # still changing (or first look): the clock starts again, and so do the attempts
                w.size, w.mtime_ns, w.stable_since, w.due, w.attempts = (
                    st.st_size, st.st_mtime_ns, now, now + self.settle_s, 0)
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
            now = time.monotonic()
            w.due = now + self.backoff_s * 2 ** (w.attempts - 1)
            return w.attempts >= self.max_attempts and now - w.stable_since >= self.give_up_after_s

    def postpone(self, path: Path) -> None:
        """Try again after a backoff without counting an attempt: the trouble was not the file's."""
        with self._lock:
            if path in self._waiting:
                self._waiting[path].due = time.monotonic() + max(self.backoff_s, 1.0)

    def forget(self, path: Path) -> None:
        with self._lock:
            self._waiting.pop(path, None)
