"""Intake: the checks a file passes before it is recorded as a photo, and the wait for it to settle.

A file found by the watcher waits in the `Settler` until its size and mtime have
held still for `watch.settle_s`; then `identify()` runs the checklist:

1. still there, a regular file (a link only when it points inside its watch root);
2. not empty;
3. starts like a JPEG or PNG;
4. decodes to the end (JPEG at 1/8 scale, which still reads every byte; PNG chunk CRCs);
5. unchanged while it was read;
6. its sha256, site and location (folder layout) and capture time (EXIF, else mtime).

`Incomplete` means "maybe still being written": the file is tried again with
backoff and quarantined after `watch.max_attempts`. `NotAPhoto` is final at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PIL import Image
from sqlalchemy.exc import SQLAlchemyError

from daemon.config import Config
from daemon.paths import inside, place, quarantine
from daemon.space import Space
from daemon.store import Identified, Store, StoreError

log = logging.getLogger("qa-daemon")

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXIF_IFD, DATETIME_ORIGINAL = 0x8769, 36867


class Incomplete(Exception):
    """The file may still be being written; try again later."""


class NotAPhoto(Exception):
    """The file will never be a usable photo."""


def identify(path: Path, root: Path, levels: list[str]) -> Identified:
    """Run the intake checklist on `path` (under watch root `root`); raises Incomplete or NotAPhoto."""
    before = _regular_file(path, root)
    if before.st_size == 0:
        raise Incomplete("empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except PermissionError as exc:
        raise Incomplete(f"cannot be read ({exc.strerror}); check its permissions") from None
    if not (head.startswith(JPEG_MAGIC) or head.startswith(PNG_MAGIC)):
        if JPEG_MAGIC.startswith(head) or PNG_MAGIC.startswith(head):
            raise Incomplete(f"only {len(head)} bytes so far")
        if not head.strip(b"\0"):  # some copiers allocate the whole file first, then fill it in
            raise Incomplete("starts with zero bytes (space reserved, still being written?)")
        raise NotAPhoto(f"not a JPEG or PNG image (it starts with {head!r})")
    width, height, captured = _decode_fully(path, head.startswith(JPEG_MAGIC))
    with open(path, "rb") as f:
        sha = hashlib.file_digest(f, "sha256").hexdigest()
    after = os.stat(path)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise Incomplete("the file changed while it was being read")
    site, location = place(path, root, levels)
    captured_from = "exif" if captured else "mtime"
    return Identified(path=path, sha256=sha, size=after.st_size, mtime_ns=after.st_mtime_ns, site=site,
                      location=location, captured_at=captured or datetime.fromtimestamp(after.st_mtime),
                      captured_from=captured_from, width=width, height=height)


def _regular_file(path: Path, root: Path) -> os.stat_result:
    try:
        st = os.lstat(path)
        if not inside(path, root):  # the file, or a folder on its way, is a link
            raise NotAPhoto("a link pointing outside the watch root (or inside a linked folder); not followed")
        if stat.S_ISLNK(st.st_mode):
            st = os.stat(path)
    except FileNotFoundError:
        raise Incomplete("the file disappeared") from None
    if not stat.S_ISREG(st.st_mode):
        raise NotAPhoto("not a regular file")
    return st


def _decode_fully(path: Path, jpeg: bool) -> tuple[int, int, datetime | None]:
    """(width, height) as displayed (EXIF orientation applied) and the EXIF capture time."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            shown = displayed_size(im)
            if jpeg:
                im.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                im.load()
            exif = im.getexif()  # for a PNG this reads the file, so verify() needs a fresh open below
        if not jpeg:
            with Image.open(path) as im:
                im.verify()
    except Image.DecompressionBombError as exc:
        raise NotAPhoto(f"too many pixels to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise Incomplete(f"does not decode to the end ({exc})") from None
    return *shown, _exif_time(exif)


def displayed_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) as the photo is shown: a quarter-turn EXIF orientation swaps them."""
    w, h = im.size
    return (h, w) if im.getexif().get(0x0112) in (5, 6, 7, 8) else (w, h)


def _exif_time(exif: Image.Exif) -> datetime | None:
    raw = exif.get_ifd(EXIF_IFD).get(DATETIME_ORIGINAL)
    if not isinstance(raw, str):
        return None
    try:
        return datetime.strptime(raw.strip("\x00 ").strip(), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


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


class IntakeWorker(threading.Thread):
    """Takes settled files: checks them, records each new photo with its pending job, quarantines the rest."""

    def __init__(self, config: Config, stop_event: threading.Event, store: Store, settler: Settler,
                 on_added: threading.Event, space: Space):
        super().__init__(name="intake", daemon=True)
        self.config, self.stop_event, self.store, self.settler = config, stop_event, store, settler
        self.on_added, self.space = on_added, space  # on_added: set whenever a photo is queued, to wake the processor

    def run(self) -> None:
        while not self.stop_event.wait(0.2):
            if not self.space.ok():  # the outputs disk is full: new files wait where they are
                continue
            for path, root, attempts in self.settler.ready():
                if self.stop_event.is_set():
                    return
                try:
                    self.take(path, root, attempts)
                except Exception as exc:  # noqa: BLE001 - a bug on one file must not stop intake
                    log.exception("%s: unexpected error during intake", path)
                    if self.settler.retry(path, repr(exc)):
                        self.reject(path, root, f"unexpected error: {exc!r}", attempts + 1)

    def take(self, path: Path, root: Path, attempts: int) -> None:
        try:
            added = self.store.add_photo(identify(path, root, self.config.watch.levels))
        except Incomplete as exc:
            if self.settler.retry(path, str(exc)):
                self.reject(path, root, f"{exc} (after {attempts + 1} attempts)", attempts + 1)
            else:
                log.info("%s: not complete yet (%s); will look again", path, exc)
            return
        except NotAPhoto as exc:
            self.reject(path, root, str(exc), attempts + 1)
            return
        except (OSError, SQLAlchemyError, StoreError) as exc:  # disk or database trouble, not the file's fault
            log.warning("%s: cannot be taken now (%s); will try again", path, exc)
            self.settler.postpone(path)
            return
        self.settler.forget(path)
        if added.kind == "duplicate":
            log.info("%s: duplicate of photo %d (same content); not processed again", path, added.photo_id)
        elif added.kind == "new":
            self.on_added.set()

    def reject(self, path: Path, root: Path, reason: str, attempt: int) -> None:
        """Move the file to quarantine and record why; the daemon goes on."""
        self.settler.forget(path)
        try:
            moved = quarantine(path, root, self.config.outputs.quarantine, reason)
            self.store.record_failure(path, "intake", reason, attempt, final=True, quarantined_to=moved)
        except (OSError, SQLAlchemyError) as exc:
            log.error("%s: could not be quarantined or its failure recorded (%s)", path, exc)
            return
        log.warning("%s: quarantined to %s: %s", path, moved, reason)
