"""Reading photos: the one decoder that `predict`, intake and the daemon's processor share.

    d = decode(path, side=896)   # RGB uint8 with EXIF orientation applied, longest side <= 896
    d.rgb, d.size                # working-resolution pixels; (width, height) of the source as shown

Pillow reads every format the daemon accepts; a JPEG is decoded straight at 1/2, 1/4 or 1/8 scale
when that is still at least `side` (DCT scaling), and 16-bit grey is scaled to 8 bits, not clipped.
Training reads its prepared PNG/JPEG copies with OpenCV (`model/data.py`): those were written by
`prep` already upright and 8-bit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")  # what the daemon, `predict` and the dataset readers take (any case)
ORIENTATION, EXIF_IFD, DATETIME_ORIGINAL = 0x0112, 0x8769, 36867


@dataclass
class Decoded:
    rgb: np.ndarray  # (h, w, 3) uint8 at working resolution, orientation applied
    size: tuple[int, int]  # (width, height) of the source, orientation applied
    ms: float


def decode(path: Path, side: int | None = None) -> Decoded:
    """The photo at working resolution (longest side at most `side`, never upscaled; None: full size)
    and its source size. Raises OSError (Pillow's UnidentifiedImageError among them) for a file that is
    not a readable image, and Image.DecompressionBombError for one with too many pixels."""
    start = time.perf_counter()
    with Image.open(path) as im:
        size = displayed_size(im)
        if side is not None:
            im.draft("RGB", (side, side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale, never below `side`
        rgb = rgb8(ImageOps.exif_transpose(im))
    if side is not None:
        rgb = fit_within(rgb, side)
    return Decoded(np.ascontiguousarray(rgb), size, (time.perf_counter() - start) * 1000)


def displayed_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) as the photo is shown: a quarter-turn EXIF orientation swaps them."""
    w, h = im.size
    return (h, w) if im.getexif().get(ORIENTATION) in (5, 6, 7, 8) else (w, h)


def exif_time(exif: Image.Exif) -> datetime | None:
    """The camera's capture time (DateTimeOriginal, local wall time); None when absent or malformed."""
    raw = exif.get_ifd(EXIF_IFD).get(DATETIME_ORIGINAL)
    if not isinstance(raw, str):
        return None
    try:
        return datetime.strptime(raw.strip("\x00 ").strip(), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def fit_within(image: np.ndarray, side: int, interpolation: int | None = None) -> np.ndarray:
    """`image` scaled down so that its longest side is at most `side` (never up); area averaging unless
    another OpenCV `interpolation` is given."""
    import cv2  # here, so that reading a file name's suffix does not load OpenCV

    longest = max(image.shape[:2])
    if longest <= side:
        return image
    f = side / longest
    size = (max(1, round(image.shape[1] * f)), max(1, round(image.shape[0] * f)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if interpolation is None else interpolation)


def rgb8(im: Image.Image) -> np.ndarray:
    """RGB uint8 of any mode; 16- and 32-bit grey is scaled down, not clipped (Pillow's convert clips)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        grey = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") else max(float(grey.max()), 1.0)
        grey = np.clip(grey * (255.0 / top), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))
