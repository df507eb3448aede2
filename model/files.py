"""Writing result files so that no reader (a report, a user, a crash) ever sees half of one.

    write_atomic(path, data)           # a temporary file beside `path`, renamed over it
    with durable():                    # the same writes, on disk before the block ends:
        make_dirs(out_dir)             #   each new folder's entry in its parent is flushed,
        write_atomic(out_dir / m, b)   #   each file is flushed before its rename,
        write_atomic(out_dir / o, c)   #   and each folder written into is flushed once, at the end
    store.commit(...)                  # only now record the files: a power cut cannot leave a record
                                       # pointing at a file that is empty or missing

Without `durable`, a rename survives a process crash but not a power cut or a kernel crash: the
data and the folder entry may still be in the page cache.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

# the folders written into inside the current `durable()` block (None outside one). A block rather than a
# flag on every writer: the writers above `write_atomic` (model/masks.py) need not pass it down, and the
# folders are flushed once for all of a photo's files. A context variable, so each thread (the daemon
# finishes photos in a pool) has its own block.
_written: ContextVar[dict[Path, None] | None] = ContextVar("durable_folders", default=None)


@contextlib.contextmanager
def durable(enabled: bool = True) -> Iterator[None]:
    """Inside the block, `write_atomic` flushes each file to disk before renaming it, and `make_dirs`
    flushes each folder it creates into its parent; when the block ends without an error, each folder
    written into is flushed once (one flush per folder however many files went there), so the renames
    are on disk too. `enabled=False` is a plain block (config `outputs.fsync: false`)."""
    if not enabled:
        yield
        return
    folders: dict[Path, None] = {}  # ordered: the folders are flushed in the order they were first written
    token = _written.set(folders)
    try:
        yield
    finally:
        _written.reset(token)
    for folder in folders:
        sync_folder(folder)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary file beside it, removed again when the write fails
    (a full disk must not fill up further with halves). Inside `durable()`, flushed to disk first."""
    folders = _written.get()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            if folders is not None:  # the bytes first: a rename that reaches the disk before them is an empty file
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; results are meant to be shared and served
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if folders is not None:
        folders[path.parent] = None


def make_dirs(folder: Path) -> None:
    """`folder.mkdir(parents=True, exist_ok=True)`; inside `durable()`, each folder it creates is flushed
    into its parent at once (a new day's folder must not vanish with the files it holds)."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(exist_ok=True)  # another thread may make the same folder meanwhile
        if _written.get() is not None:
            sync_folder(created.parent)


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries (the names renamed or created in it) to disk. A no-op on Windows,
    which cannot open a folder for this and commits renames with their files."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_file(path: Path) -> None:
    """Flush a file's bytes to disk (a file written by another library, such as a SQLite backup)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
