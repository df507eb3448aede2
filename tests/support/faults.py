"""Faults a daemon meets unattended, for tests/test_faults.py and bench/soak.py: full disks, mounts that go
away, and another writer holding the store. Mounting needs root."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path


def mount(*args: str) -> None:
    """`mount ARGS...`; CalledProcessError (with mount's message) when refused."""
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def mounted(path: Path) -> bool:
    """Whether `path` is a mount point; unlike os.path.ismount, also for a bind mount within one file system."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4].encode().decode("unicode_escape") == target for line in f)


def unmount(path: Path, attempts: int = 10) -> str:
    """Unmount `path`; a lazy unmount when it stays busy (a file open in it). What was done, in words."""
    import time

    for _ in range(attempts):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return "unmounted"
        time.sleep(0.2)
    subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)
    return "unmounted (lazily: it was busy)"


def cannot_mount(folder: Path) -> str | None:
    """Why mounts cannot be made here (not root, or refused), or None; tries a tiny tmpfs in `folder`."""
    if os.geteuid() != 0:
        return "mounting a tmpfs or a bind mount needs root (CI runs as root)"
    probe = folder / "mount-probe"
    probe.mkdir()
    try:
        mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe))
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        return f"mount failed here ({exc})"
    subprocess.run(["umount", str(probe)], check=True)
    return None


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


@contextlib.contextmanager
def write_lock(db: Path) -> Iterator[None]:
    """Hold SQLite's write lock on `db` (BEGIN EXCLUSIVE), as a backup tool or an analyst's long write does."""
    con = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        con.execute("BEGIN EXCLUSIVE")
        yield
        con.execute("COMMIT")
    finally:
        con.close()
