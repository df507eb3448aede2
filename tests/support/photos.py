"""Photo makers for the tests and benchmarks: synthetic JPEG/PNG files, real photos made unique, the
ways copiers deliver files into a watched folder, and the check every mask on disk must pass."""

from __future__ import annotations

import io
import os
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112
EXIF_IFD, DATE_TIME_ORIGINAL = 0x8769, 36867


def photo_bytes(size: tuple[int, int] = (64, 48), *, seed: int = 0, colour: tuple[int, int, int] | None = None,
                fmt: str = "JPEG", exif_time: str | None = None, orientation: int | None = None) -> bytes:
    """A `size` (width, height) photo: random pixels from `seed`, or one `colour`; with EXIF when asked
    (`exif_time` as "YYYY:MM:DD HH:MM:SS", an `orientation` tag)."""
    if colour is None:
        pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), np.uint8)
        im = Image.fromarray(pixels)
    else:
        im = Image.new("RGB", size, colour)
    exif = Image.Exif()
    if exif_time:
        exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] = exif_time
    if orientation:
        exif[EXIF_ORIENTATION] = orientation
    buf = io.BytesIO()
    im.save(buf, fmt, **({"exif": exif.tobytes()} if exif_time or orientation else {}))
    return buf.getvalue()


def write_photo(path: Path, size: tuple[int, int] = (64, 48), *, seed: int | None = None, **kwargs) -> Path:
    """`photo_bytes` written to `path` (folders made; PNG for a .png name, else JPEG). Without a `seed`, the
    pixels follow from the name and width: two files of one name and size are the same photo."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if seed is None:
        seed = zlib.crc32(path.name.encode()) + size[0]
    fmt = kwargs.pop("fmt", "PNG" if path.suffix.lower() == ".png" else "JPEG")
    path.write_bytes(photo_bytes(size, seed=seed, fmt=fmt, **kwargs))
    return path


def unique_jpeg(data: bytes, text: str) -> bytes:
    """The same JPEG with a comment segment (COM, FF FE) right after the SOI marker: other bytes, same pixels."""
    body = text.encode()
    return data[:2] + b"\xff\xfe" + (len(body) + 2).to_bytes(2, "big") + body + data[2:]


def drop(files: list[Path], folder: Path) -> None:
    """Copy `files` into `folder`, as a user dragging photos into a share."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, folder / f.name)


def put(data: bytes, path: Path, how: str = "rename", pieces: int = 0, pause_s: float = 0.0) -> Path:
    """Deliver a photo the ways copiers do: "rename" writes it under a hidden temporary name and renames it in
    (it appears complete, at once); "in place" writes it where it ends up, in `pieces` parts (16 KiB each
    when 0) with `pause_s` between them, so that a watcher may see it half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "rename":
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_bytes(data)
        tmp.rename(path)
        return path
    step = -(-len(data) // pieces) if pieces else 16384
    with path.open("wb") as f:
        for i in range(0, len(data), step):
            if i and pause_s:
                time.sleep(pause_s)
            f.write(data[i: i + step])
            f.flush()
    return path


def bad_mask(path: str | Path, width: int, height: int) -> str | None:
    """Why the mask at `path` is not a single-channel {0, 255} PNG of width x height, or None."""
    import cv2

    if not os.path.exists(path):
        return "missing"
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return "not a PNG"
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None or m.ndim != 2 or m.dtype != np.uint8:
        return f"not single-channel 8-bit ({None if m is None else (m.shape, m.dtype)})"
    if m.shape != (height, width):
        return f"{m.shape[1]}x{m.shape[0]}, source {width}x{height}"
    if ((m != 0) & (m != 255)).any():
        return "values other than 0 and 255"
    return None
