"""Mask files and overlays: the one result writer behind `predict` and the daemon.

A mask file is a single-channel PNG, values {0, 255}, the source image's size,
named `{image_id}__{prompt}.png` with the prompt's spaces as underscores
(`IMG_0001__segment_crack.png`). Characters that cannot sit in a file name
safely (such as the `/` of "segment joint/tape") become `-`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from model.errors import DataError
from model.files import write_atomic
from model.images import PHOTO_SUFFIXES, decode, fit_within
from model.segmenter import Segmenter

OVERLAY_QUALITY = 85  # JPEG quality of overlays: they are for looking at, the masks are the record

# level 1: photos (the example panels) compress almost as well as at the default level, and faster
IMAGE_PNG = (cv2.IMWRITE_PNG_COMPRESSION, 1)
# a binary mask is long runs of 0 and 255: row filters only cost time there (libpng tries them all on every
# row) and zlib's run-length strategy finds the runs; the same pixels, a 12-megapixel mask about 5x faster
# and 4x smaller than IMAGE_PNG (bench/finishing.py)
MASK_PNG = (cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE,
            cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE)

# one colour per prompt slot (RGB): red for the first (cracks), blue for the second (taping), then others
COLOURS = [(230, 40, 40), (40, 110, 240), (250, 200, 0), (40, 200, 90)]


def mask_name(image_id: str, prompt: str) -> str:
    """`{image_id}__{prompt with spaces as underscores}.png`, safe as one file name."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", prompt.strip().replace(" ", "_"))
    return f"{image_id}__{safe}.png"


def write_png(path: Path, image: np.ndarray, options: tuple[int, ...] = IMAGE_PNG) -> None:
    """Write a PNG atomically: a reader never sees half a file."""
    if image.ndim == 2 and not cv2.countNonZero(image):
        data = blank_png(image.shape, image.dtype.str, options)
    else:
        data = encode_png(image, options)
    if data is None:
        raise DataError(f"{path}: PNG encoding failed")
    write_atomic(path, data)


def encode_png(image: np.ndarray, options: tuple[int, ...]) -> bytes | None:
    ok, data = cv2.imencode(".png", image, list(options))
    return data.tobytes() if ok else None


@functools.lru_cache(maxsize=8)
def blank_png(shape: tuple[int, int], dtype: str, options: tuple[int, ...]) -> bytes | None:
    """The PNG of an all-zero image, encoded once per size: photos from one camera share their size, and
    many masks are empty (half of them on the bench's real photos); 12 megapixels take about 16 ms."""
    return encode_png(np.zeros(shape, dtype), options)


def write_masks(out_dir: Path, image_id: str, prompts: list[str], masks: list[np.ndarray]) -> list[Path]:
    """Each prompt's mask as `{image_id}__{prompt}.png` in `out_dir`, written atomically; their paths."""
    paths = [out_dir / mask_name(image_id, p) for p in prompts]
    for path, mask in zip(paths, masks, strict=True):
        write_png(path, mask, MASK_PNG)
    return paths


def at_size(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A {0, 255} mask made at working resolution, at (width, height) `size`: bilinear, then above 127.

    The same pixels as `binary_mask(cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR), 127)`, without
    its full-size copies: an empty mask is zeros (bilinear zeros are zeros), and the threshold runs in
    place. Resizing only the mask's bounding box into zeros saved nothing measurable on real masks, and
    is not the same by construction: a box that does not start at the top-left corner gets interpolation
    weights that differ in their last bit (bench/README.md, "Finishing")."""
    w, h = size
    if mask.shape[:2] == (h, w):
        return mask
    if not cv2.countNonZero(mask):
        return np.zeros((h, w), np.uint8)
    out = cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR)
    return cv2.threshold(out, 127, 255, cv2.THRESH_BINARY, dst=out)[1]  # "> 127", as binary_mask


def write_overlay(path: Path, rgb: np.ndarray, masks: list[np.ndarray], max_side: int | None = None) -> Path:
    """The photo with its masks drawn on it, as a JPEG written atomically; at most `max_side` pixels on
    its longest side. The masks may be at any size: they are fitted to the photo."""
    if max_side is not None:
        rgb = fit_within(rgb, max_side)
    h, w = rgb.shape[:2]
    masks = [m if m.shape[:2] == (h, w) else cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in masks]
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(overlay(rgb, masks), cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, OVERLAY_QUALITY])
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    write_atomic(path, data.tobytes())
    return path


def overlay(rgb: np.ndarray, masks: list[np.ndarray], alpha: float = 0.45) -> np.ndarray:
    """The photo with each mask tinted in its colour and outlined, RGB uint8.

    A tinted pixel is its value blended in float32 with the colour of every mask over it, in turn, then
    truncated: a function of the value and of which masks cover it. So each such combination is one
    lookup table, applied inside the masks' common bounding box only: the same pixels as blending the
    whole photo in float32, at a third of the time."""
    out = rgb.copy()
    # a mask without a colour is not drawn; any nonzero value is in the mask
    masks = [m if m.dtype == np.uint8 else (m > 0).astype(np.uint8) for m in masks[:len(COLOURS)]]
    boxes = [cv2.boundingRect(m) for m in masks]  # (0, 0, 0, 0) for an empty mask
    drawn = [b for b in boxes if b[2]]
    if drawn:
        x0, y0 = min(b[0] for b in drawn), min(b[1] for b in drawn)
        x1, y1 = max(b[0] + b[2] for b in drawn), max(b[1] + b[3] for b in drawn)
        region = out[y0:y1, x0:x1]
        cover = np.zeros(region.shape[:2], np.uint8)  # bit i set: mask i covers the pixel
        for i, (mask, box) in enumerate(zip(masks, boxes, strict=True)):
            if box[2]:
                cover |= (mask[y0:y1, x0:x1] > 0).view(np.uint8) << i
        for combination in range(1, 1 << len(masks)):
            where = cover == combination
            if where.any():
                colours = [c for i, c in enumerate(COLOURS) if combination >> i & 1]
                np.copyto(region, cv2.LUT(region, tint_table(colours, alpha)), where=where[..., None])
    thickness = max(1, round(max(rgb.shape[:2]) / 500))
    for mask, colour in zip(masks, COLOURS, strict=False):
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)  # nonzero is inside
        cv2.drawContours(out, contours, -1, colour, thickness)
    return out


def tint_table(colours: list[tuple[int, int, int]], alpha: float) -> np.ndarray:
    """(256, 1, 3) uint8 lookup table for `cv2.LUT`: every value blended with `colours` in turn, in
    float32, truncated once at the end."""
    value = np.repeat(np.arange(256, dtype=np.float32)[:, None], 3, axis=1)
    for colour in colours:
        value = (1 - alpha) * value + alpha * np.array(colour, np.float32)
    return value.astype(np.uint8)[:, None, :]


def find_images(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Image files named or inside the folders named; and what was not an image."""
    found, problems = [], []
    for p in paths:
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in PHOTO_SUFFIXES
                            and not f.name.startswith("."))
        elif p.is_file():
            found.append(p)
        else:
            problems.append(f"{p}: no such file or folder; skipped")
    return found, problems


@dataclass
class Exported:
    image: Path
    masks: list[Path]
    overlay: Path | None
    mask_area: list[float]  # share of the image in each prompt's mask


def export_masks(model: Segmenter, images: list[Path], out: Path, prompts: list[str], *, batch_size: int,
                 with_overlay: bool = False, problems: list[str] | None = None) -> Iterator[Exported]:
    """Segment each image under every prompt (one image encoding each) and write mask PNGs.

    Unreadable files are appended to `problems` and skipped.
    """
    out.mkdir(parents=True, exist_ok=True)
    problems = problems if problems is not None else []
    for start in range(0, len(images), batch_size):
        batch = []
        for path in images[start: start + batch_size]:
            try:
                batch.append((path, decode(path).rgb))
            except (OSError, Image.DecompressionBombError):  # "cannot identify image file" is an OSError
                problems.append(f"{path}: not a readable image; skipped")
        if not batch:
            continue
        probs = model.predict([rgb for _, rgb in batch], prompts)
        for (path, rgb), prob in zip(batch, probs, strict=True):
            masks = [model.mask(prob[i], p) for i, p in enumerate(prompts)]
            files = write_masks(out, path.stem, prompts, masks)
            over = write_overlay(out / f"{path.stem}__overlay.jpg", rgb, masks) if with_overlay else None
            yield Exported(path, files, over, [float((m > 0).mean()) for m in masks])
