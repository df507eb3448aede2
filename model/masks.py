"""Mask files and overlays: the one result writer behind `predict` and the daemon.

A mask file is a single-channel PNG, values {0, 255}, the source image's size,
named `{image_id}__{prompt}.png` with the prompt's spaces as underscores
(`IMG_0001__segment_crack.png`). Characters that cannot sit in a file name
safely (such as the `/` of "segment joint/tape") become `-`.
"""

from __future__ import annotations

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

# one colour per prompt slot (RGB): red for the first (cracks), blue for the second (taping), then others
COLOURS = [(230, 40, 40), (40, 110, 240), (250, 200, 0), (40, 200, 90)]


def mask_name(image_id: str, prompt: str) -> str:
    """`{image_id}__{prompt with spaces as underscores}.png`, safe as one file name."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", prompt.strip().replace(" ", "_"))
    return f"{image_id}__{safe}.png"


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a PNG atomically: a reader never sees half a file."""
    # level 1: binary masks compress almost as well as at the default level, and 12-megapixel ones 20% faster
    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise DataError(f"{path}: PNG encoding failed")
    write_atomic(path, data.tobytes())


def write_masks(out_dir: Path, image_id: str, prompts: list[str], masks: list[np.ndarray]) -> list[Path]:
    """Each prompt's mask as `{image_id}__{prompt}.png` in `out_dir`, written atomically; their paths."""
    paths = [out_dir / mask_name(image_id, p) for p in prompts]
    for path, mask in zip(paths, masks, strict=True):
        write_png(path, mask)
    return paths


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
    """The photo with each mask tinted in its colour and outlined, RGB uint8."""
    out = rgb.astype(np.float32)
    for mask, colour in zip(masks, COLOURS, strict=False):
        on = mask > 0
        out[on] = (1 - alpha) * out[on] + alpha * np.array(colour, np.float32)
    out = out.astype(np.uint8)
    thickness = max(1, round(max(rgb.shape[:2]) / 500))
    for mask, colour in zip(masks, COLOURS, strict=False):
        contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, colour, thickness)
    return out


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


def export_masks(model: Segmenter, images: list[Path], out: Path, prompts: list[str], with_overlay: bool = False,
                 batch_size: int = 4, problems: list[str] | None = None) -> Iterator[Exported]:
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
