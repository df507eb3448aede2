"""Whether a SQLite store sits on a network filesystem, where SQLite's locking and WAL are unsafe.

SQLite's file locks and its WAL shared memory assume one kernel sees every writer; NFS, SMB/CIFS,
sshfs and other FUSE or network filesystems break that, and a store there can be corrupted
(https://www.sqlite.org/useovernet.html).

The filesystem is asked of the kernel with statfs(2) on the store's folder: its `f_type` is the
filesystem's magic number (linux/magic.h). Unlike looking the path up in /proc/self/mountinfo, this
needs no mount-table parsing (escaped names, bind mounts, nested mounts, symlinks): the kernel answers
for that very path. Its one blind spot: every FUSE filesystem has the same number, so a local FUSE
filesystem counts as network too (`store.allow_network_fs` lets it through).
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

# f_type of the filesystems SQLite must not be trusted on (statfs(2), linux/magic.h)
NETWORK_FS = {
    0x6969: "NFS",
    0x517B: "SMB",
    0xFF534D42: "SMB/CIFS",
    0xFE534D42: "SMB2",
    0x65735546: "FUSE (sshfs, rclone and the like)",
    0x01021997: "9p (a VM or WSL share)",
    0x00C36400: "Ceph",
    0x5346414F: "AFS",
    0x6B414653: "AFS",
    0x73757245: "Coda",
    0x564C: "NCP",
}


def filesystem_magic(folder: Path) -> int | None:
    """The statfs(2) `f_type` of the filesystem holding `folder`; None where it cannot be asked (not
    Linux, or the folder does not exist)."""
    if not sys.platform.startswith("linux"):
        return None  # other systems lay out struct statfs differently
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(256)  # struct statfs: 120 bytes on 64-bit Linux, `f_type` first
    if libc.statfs(os.fsencode(folder), buf) != 0:
        return None
    return ctypes.c_ulong.from_buffer(buf).value & 0xFFFFFFFF  # a 32-bit magic, whatever the word size


def network_fs(folder: Path) -> str | None:
    """The name of the network filesystem holding `folder`, or None for a local one (or an unknown)."""
    magic = filesystem_magic(folder)
    return NETWORK_FS.get(magic) if magic is not None else None
