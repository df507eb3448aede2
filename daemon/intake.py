"""Intake: the checks a file passes before it is recorded as a photo.

A file found by the watcher waits in the `Settler` (daemon/settle.py) until its size and mtime
have held still for `watch.settle_s`, or, with OS events, until its writer has closed it or it was
renamed into place; then `identify()` runs the checklist:

1. still there, a regular file (a link only when it points inside its watch root);
2. not empty;
3. starts like a JPEG or PNG;
4. decodes to the end (JPEG at 1/8 scale, which still reads every byte; PNG chunk CRCs);
5. unchanged while it was read;
6. its sha256, site and location (folder layout), capture time (EXIF, else mtime) and the names
   its mask files get.

Intake decides what a file is; the store's queue records it. `Incomplete` means "maybe still
being written": the file is tried again with backoff and quarantined after `watch.max_attempts`.
`NotAPhoto` is final at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
from datetime import datetime
from pathlib import Path

from PIL import Image
from sqlalchemy.exc import SQLAlchemyError

from daemon.config import Config
from daemon.paths import inside, place, quarantine, safe_part
from daemon.settle import Settler
from daemon.space import Space
from daemon.store import Added, FailureStage, Identified, Store, StoreError
from model.images import displayed_size, exif_time

log = logging.getLogger("qa-daemon")

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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
    return Identified(path=path, sha256=sha, image_ids=image_ids(path, sha), size=after.st_size,
                      mtime_ns=after.st_mtime_ns, site=site,
                      location=location, captured_at=captured or datetime.fromtimestamp(after.st_mtime),
                      captured_from=captured_from, width=width, height=height)


def record(store: Store, f: Identified) -> Added:
    """Queue an identified photo. The same bytes as a known photo are a copy (a duplicate) while that
    photo's file is still where the store last saw it, and the photo moved when it is not."""
    earlier = store.queue.path_of(f.sha256)
    return store.queue.add_photo(f, earlier_gone=earlier is not None and not os.path.lexists(earlier))


def image_ids(path: Path, sha256: str) -> tuple[str, str]:
    """The names a photo's mask files may get, in order of preference: its file name's stem, made safe;
    with the start of its sha256 when another photo of its site already has that name."""
    stem = safe_part(path.stem)
    return stem, f"{stem}-{sha256[:8]}"


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
    return *shown, exif_time(exif)


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
            added = record(self.store, identify(path, root, self.config.watch.levels))
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
            self.store.queue.record_failure(path, FailureStage.intake, reason, attempt, final=True,
                                            quarantined_to=moved)
        except (OSError, SQLAlchemyError) as exc:
            log.error("%s: could not be quarantined or its failure recorded (%s)", path, exc)
            return
        log.warning("%s: quarantined to %s: %s", path, moved, reason)
