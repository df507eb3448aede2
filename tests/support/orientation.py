"""Photos whose EXIF orientation shows, and a stand-in model that finds where they are red: masks can then be
checked against where viewers show the red corner (Pillow's `ImageOps.exif_transpose`), so a rotation the wrong
way round fails, not only a wrong size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

EXIF_ORIENTATION = 0x0112


def red_corner_photo(path: Path, orientation: int) -> Path:
    """A 120x80 JPEG whose stored pixels are red in the top-left 40x20 corner, tagged with an EXIF `orientation`:
    no two of the eight orientations show the red corner in the same place."""
    rgb = np.zeros((80, 120, 3), np.uint8)
    rgb[:20, :40, 0] = 255
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, "JPEG", quality=100, subsampling=0, exif=exif.tobytes())
    return path


def sees_red(pixels, prompts):
    """A stand-in model's `predict_logits`: every prompt finds the red pixels of (B, 3, S, S) pixels in [0, 255]."""
    red = (pixels[:, 0] > 127).float() * 20 - 10
    return red[:, None].expand(-1, len(prompts), -1, -1).clone()


def displayed_red(path: Path) -> np.ndarray:
    """Where the photo is red as viewers show it: Pillow's own reading of its EXIF orientation."""
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))[..., 0] > 127


def misplaced(mask_path: Path, photo: Path) -> float:
    """The share of the mask's pixels that disagree with where the photo shows red (1.0: not the same shape)."""
    import cv2

    mask, expected = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED), displayed_red(photo)
    if mask is None or mask.shape != expected.shape:
        return 1.0
    return float(((mask > 0) != expected).mean())
