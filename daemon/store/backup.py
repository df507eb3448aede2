"""A consistent copy of a SQLite store, taken while the daemon writes to it.

    result = backup("sqlite:///qa-daemon.sqlite3", Path("qa-2026-11-30.sqlite3"))
    print(result.photos, result.detections)

SQLite's online backup API copies the store page by page, a step of `pages_per_step` at a time. The
copy holds one read transaction on the store from the first page to the last: in WAL mode a reader
never blocks the daemon's writes, and the copy is the store as it was when the backup began. (Without
that snapshot, SQLite restarts a backup each time another connection commits, which under a busy
daemon can mean never finishing.) The copy is written beside `out`, checked with `PRAGMA
integrity_check`, flushed to disk and only then renamed to `out`, so `out` is never half a backup.

PostgreSQL has its own tools for this (`pg_dump`, docs/store.md).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from daemon.store.engine import StoreError, redact, sqlite_path
from model.files import sync_file, sync_folder


@dataclass
class Backup:
    """What a backup wrote, read back from the copy."""

    path: Path
    photos: int
    done: int  # photos whose results are stored
    detections: int
    schema: str | None  # the Alembic revision of the copy
    bytes: int
    seconds: float


def backup(url: str, out: Path, force: bool = False, pages_per_step: int = 1024,
           progress: Callable[[int, int], None] | None = None) -> Backup:
    """Copy the SQLite store at `url` to the file `out` and verify the copy; `force` replaces an
    existing `out`. `progress(remaining, total)` (pages) is called after each step."""
    source = _source(url)
    if out.is_dir():
        raise StoreError(f"{out} is a folder; --out names the backup file, e.g. {out / 'qa-backup.sqlite3'}")
    if out.exists() and not force:
        raise StoreError(f"{out} exists already; choose another file, or pass --force to replace it")
    if not out.parent.is_dir():
        raise StoreError(f"{out.parent} does not exist; create the folder first")
    start = time.perf_counter()
    tmp = None
    try:
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
        os.close(fd)
        tmp = Path(name)
        _copy(source, tmp, pages_per_step, progress)
        counts = verify(tmp)
        os.chmod(tmp, source.stat().st_mode & 0o777)  # mkstemp makes it 0600: the store's readers may read it
        sync_file(tmp)
        os.replace(tmp, out)
        sync_folder(out.parent)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        if isinstance(exc, OSError):  # a full disk, a read-only folder: the user's to fix
            raise StoreError(f"{out}: the backup could not be written ({exc}); free space or choose another "
                             "folder") from None
        raise
    return Backup(out, *counts, bytes=out.stat().st_size, seconds=time.perf_counter() - start)


def _source(url: str) -> Path:
    """The store's SQLite file, or an error that says what to do instead."""
    try:
        u = make_url(url)
    except ArgumentError:
        raise StoreError(f"store.url is not a database URL (it begins {url.split(':', 1)[0][:20]!r})") from None
    if u.get_backend_name() == "postgresql":
        raise StoreError(f"{redact(url)} is a PostgreSQL store: back it up with the server's tools, e.g. "
                         "`pg_dump --format=custom --file=qa.dump DATABASE` (docs/store.md)")
    path = sqlite_path(url)
    if path is None:
        raise StoreError(f"{redact(url)}: backup copies SQLite store files; this store is not one")
    if not path.is_file():
        raise StoreError(f"store.url: {path} does not exist; check the path, or pass --store")
    return path


def _copy(source: Path, target: Path, pages_per_step: int, progress: Callable[[int, int], None] | None) -> None:
    src = sqlite3.connect(source, timeout=30, isolation_level=None)
    dst = sqlite3.connect(target, isolation_level=None)
    try:
        src.execute("BEGIN")  # the snapshot: held across every step (see the module's docstring)
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a read begins the transaction for real
        src.backup(dst, pages=pages_per_step, progress=(lambda _status, left, total: progress(left, total))
                   if progress else None)
        src.execute("COMMIT")
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file; the daemon turns WAL on again
    except sqlite3.Error as exc:
        raise StoreError(f"{source}: the backup failed ({exc})") from None
    finally:
        dst.close()
        src.close()


def verify(path: Path) -> tuple[int, int, int, str | None]:
    """Open a backup, check it page by page (`PRAGMA integrity_check`) and count what it holds:
    (photos, done photos, detections, schema revision)."""
    con = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        problems = [row[0] for row in con.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise StoreError(f"{path}: the copy failed its integrity check ({'; '.join(problems[:3])}); "
                             "the store itself may be damaged: run `sqlite3 STORE 'PRAGMA integrity_check'`")
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "photos" not in tables:
            raise StoreError(f"{path}: the copy holds no qa-daemon tables; is --store a qa-daemon store?")

        def count(sql: str) -> int:
            return con.execute(sql).fetchone()[0]

        schema = con.execute("SELECT version_num FROM alembic_version").fetchone() \
            if "alembic_version" in tables else None
        return (count("SELECT count(*) FROM photos"), count("SELECT count(*) FROM jobs WHERE status = 'done'"),
                count("SELECT count(*) FROM detections"), schema[0] if schema else None)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: the copy cannot be read ({exc})") from None
    finally:
        con.close()
