"""The scrub: every done photo's masks and overlay checked on disk, and what is damaged re-made or reported.

    found = scrub(store, fix=True)                    # all done photos
    found = scrub(store, fix=True, since=two_days_ago)  # a quick pass over recent results (at start-up)
    found.checked, found.remade, found.lost, found.damaged

A result file can change after the fact: a user or a sync tool deletes or truncates it, a disk fills, a
power cut loses a write. Each file must exist and read whole: a PNG mask's chunks all pass their CRC
through IEND (so a cut or a flipped byte anywhere shows); the overlay JPEG, which has no checksums,
decodes through its whole entropy-coded stream (at 1/8 scale, which still reads every byte). With `fix`, a photo with a
damaged file is queued again when its source is still there (same size as when it arrived), and
recorded `lost` with the reason when the source is gone. Without `fix` nothing changes: the findings
are only reported. Photos whose results retention deleted on purpose are not checked
(`photos.outputs_removed_at`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from daemon.store import Store
from daemon.store.records import ResultFiles

log = logging.getLogger("qa-daemon")

BATCH = 500  # photos read from the store at a time


@dataclass
class Damaged:
    photo_id: int
    source: Path
    reason: str  # every damaged file, e.g. "crack mask missing: /outputs/.../x__segment_crack.png"
    action: str  # remade, lost, or found (not fixed)


@dataclass
class Scrubbed:
    checked: int = 0
    remade: int = 0
    lost: int = 0
    damaged: list[Damaged] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        found = f"{len(self.damaged)} with missing or damaged results"
        fixed = f" ({self.remade} queued again, {self.lost} lost)" if self.remade or self.lost else (
            " (not fixed: run with --fix)" if self.damaged else "")
        return f"{self.checked} photos checked in {self.seconds:.1f} s: {found}{fixed}"


def logged(found: Scrubbed) -> str:
    """Each damaged photo as a log warning (the daemon's scrubs); the one-line summary."""
    for d in found.damaged:
        log.warning("%s: %s (%s)", d.source, d.reason, {"found": "not fixed", "remade": "queued again",
                                                        "lost": "its source is gone: lost"}[d.action])
    return found.summary()


def file_problem(path: Path) -> str | None:
    """Why `path` is not a readable result file ('missing', 'unreadable: ...'), or None when it decodes."""
    try:
        with Image.open(path) as im:
            if im.format == "PNG":
                im.verify()  # every chunk's CRC through IEND: a cut or a flipped byte anywhere shows
            else:
                im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
    except FileNotFoundError:
        return "missing"
    except UnidentifiedImageError:  # its message repeats the path
        return "unreadable (not an image any more)"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return f"unreadable ({exc})"
    return None


def problems(r: ResultFiles) -> list[str]:
    """What is wrong with one photo's result files; empty when all exist and decode."""
    found = [(p, file_problem(p)) for p in (*r.masks, *([r.overlay] if r.overlay else []))]
    return [f"{p.name} {why}" for p, why in found if why is not None]


def source_present(r: ResultFiles) -> bool:
    """The photo's file is still where the store last saw it, at the size it arrived with."""
    try:
        return os.stat(r.source).st_size == r.source_bytes
    except OSError:
        return False


def scrub(store: Store, fix: bool, since: datetime | None = None,
          progress: Callable[[int], None] | None = None) -> Scrubbed:
    """Check the results of every done photo (processed since `since`, naive UTC); with `fix`, re-queue or
    mark lost. `progress(n)` after each batch of n photos."""
    start, out, after = time.perf_counter(), Scrubbed(), 0
    while batch := store.queue.results(after_id=after, limit=BATCH, since=since):
        for r in batch:
            wrong = problems(r)
            if wrong:
                reason = "scrub: " + "; ".join(wrong)
                if not fix:
                    action = "found"
                elif source_present(r):
                    store.queue.remake(r.photo_id, reason)
                    action, out.remade = "remade", out.remade + 1
                else:
                    store.queue.lose(r.photo_id, reason + f"; its source {r.source} is gone")
                    action, out.lost = "lost", out.lost + 1
                out.damaged.append(Damaged(r.photo_id, r.source, reason, action))
        out.checked += len(batch)
        after = batch[-1].photo_id
        if progress is not None:
            progress(len(batch))
    out.seconds = time.perf_counter() - start
    return out
