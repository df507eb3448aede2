"""Room to write results: intake and processing pause while the outputs disk is full, and resume by themselves.

    space = Space(config.outputs.dir, config.outputs.min_free_mb, on_change)
    if space.ok(): ...take work...          # cheap: one statvfs, at most every `check_s`
    space.full("No space left on device")   # a write failed: pause now

A pause, and its end, are told to `on_change(why or None, message)`: the daemon records the pause once
in the store's failures (stage `outputs`) and shows it in `qa-daemon status` (daemon/app.py). The
photos wait where they are (in the watch folder or the queue) and none of their attempts is used up.
It ends when free space is back above `outputs.min_free_mb` and above what was free when a write
failed (so a disk that fails below the limit, a quota, is not hammered), or after `probe_s`, to try.
"""

from __future__ import annotations

import errno
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("qa-daemon")

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
MB = 2**20


def no_space(exc: BaseException) -> bool:
    """True for the errors of a full disk or an exhausted quota."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


class Space:
    """Whether there is room in the outputs folder; thread-safe."""

    def __init__(self, folder: Path, min_free_mb: float, on_change: Callable[[str | None, str], None] | None = None,
                 check_s: float = 2.0, probe_s: float = 60.0):
        self.folder, self.min_free, self.on_change = folder, min_free_mb * MB, on_change
        self.check_s, self.probe_s = check_s, probe_s
        self.paused: str | None = None  # why, while paused
        self._since = self._checked = 0.0
        self._free_at_failure = -1
        self._lock = threading.Lock()

    def ok(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._checked < self.check_s:
                return self.paused is None
            self._checked = now
            free = self._free()
            if self.paused is None:
                if free is not None and free < self.min_free:
                    self._pause(f"the outputs disk has {free / MB:.0f} MB free, below outputs.min_free_mb "
                                f"({self.min_free / MB:.0f} MB)")
            elif free is not None and free >= self.min_free and (
                    free > self._free_at_failure + MB or now - self._since >= self.probe_s):
                message = f"{free / MB:.0f} MB free again; intake and processing resume after {now - self._since:.0f} s"
                log.info("%s: %s", self.folder, message)
                self.paused = None
                self._tell(message)
            return self.paused is None

    def full(self, error: str) -> None:
        """A write to the outputs failed for lack of space: pause now."""
        with self._lock:
            if self.paused is None:
                free = self._free()
                self._free_at_failure = free if free is not None else -1
                self._pause(f"writing to the outputs failed: {error}")
            self._checked = time.monotonic()

    def _pause(self, why: str) -> None:
        self.paused, self._since = why, time.monotonic()
        message = f"{why}; intake and processing are paused until space is freed (no photo is lost)"
        log.error("%s: %s", self.folder, message)
        self._tell(message)

    def _tell(self, message: str) -> None:
        if self.on_change is not None:
            try:
                self.on_change(self.paused, message)
            except Exception as exc:  # noqa: BLE001 - the store may share the full disk; the log has it
                log.warning("the pause could not be recorded in the store (%s)", exc)

    def _free(self) -> int | None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            return shutil.disk_usage(self.folder).free
        except OSError:
            return None
