"""Where files come from and where they go: photo names, the folder layout, quarantine and archive moves.

    is_photo(Path("incoming/tower-a/L3/IMG_1.JPG"))            -> True
    place(Path("incoming/tower-a/L3/IMG_1.jpg"), root, ["site", "location"]) -> ("tower-a", "L3")
    move_into(photo, root, archive)                            -> archive/tower-a/L3/IMG_1.jpg

Every destination is built from the path relative to its watch root, so a
file name can never place a file outside the folder it is moved into.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from model.images import PHOTO_SUFFIXES

UNKNOWN = "unknown"


def is_photo(path: Path) -> bool:
    """A JPEG or PNG name (any case) that is not hidden or an editor's backup. Partial downloads
    ("IMG_1.jpg.part", ".crdownload", ".tmp") end in another suffix, so they are not photos either."""
    name = path.name
    if name.startswith((".", "~")) or name.endswith("~"):
        return False
    return path.suffix.lower() in PHOTO_SUFFIXES


def present(folder: Path) -> bool:
    """True when `folder` is a reachable directory; a stale or failing mount (ESTALE, EIO) is not."""
    try:
        return folder.is_dir()
    except OSError:
        return False


def hidden_dir(name: str) -> bool:
    return name.startswith(".") or name.startswith("~")


def place(path: Path, root: Path, levels: list[str]) -> tuple[str, str]:
    """(site, location) from the folders between `root` and the file, by `watch.layout`'s levels."""
    folders = path.relative_to(root).parts[:-1]
    found = {"site": UNKNOWN, "location": UNKNOWN}
    for level, folder in zip(levels, folders, strict=False):
        if level in found:
            found[level] = folder
    return found["site"], found["location"]


def safe_part(text: str, max_bytes: int = 200) -> str:
    """One path component made of `text`: no separators, control characters or leading dots, and at most
    `max_bytes` of UTF-8 (file systems allow 255), keeping a short extension, so that suffixes added to it
    (`__segment_taping_area.png`, `.error.txt`) still fit."""
    cleaned = re.sub(r"[\x00-\x1f\x7f/\\]", "_", text).strip().lstrip(".")
    if len(cleaned.encode()) > max_bytes:
        stem, dot, ext = cleaned.rpartition(".")
        ext = dot + ext if dot and len(ext.encode()) <= 10 else ""
        cleaned = _cut(stem if ext else cleaned, max_bytes - len(ext.encode())) + ext
    return cleaned or "_"


def _cut(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, never inside a character."""
    return text.encode()[:max_bytes].decode("utf-8", "ignore")


def inside(path: Path, folder: Path) -> bool:
    """True when `path` (resolved, links followed) lies in `folder`."""
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except (ValueError, OSError):
        return False


def free_name(target: Path) -> Path:
    """`target`, or `name-1.ext`, `name-2.ext`... when taken."""
    n, candidate = 0, target
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
    return candidate


def move_into(path: Path, root: Path, dest_root: Path) -> Path:
    """Move `path` to the same place relative to `dest_root` as it had under `root`; the new path."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    target = free_name(dest_root.joinpath(*[safe_part(p) for p in rel.parts]))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(path, target)  # a rename on one file system; copy then delete across file systems
    return target


def quarantine(path: Path, root: Path, folder: Path, error: str) -> Path | None:
    """Move a failed file into `folder` with `<name>.error.txt` beside it; None when the file is gone."""
    if not path.exists():
        return None
    moved = move_into(path, root, folder)
    moved.with_name(moved.name + ".error.txt").write_text(f"{path}\n{error.rstrip()}\n")
    return moved

