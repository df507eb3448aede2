"""What every label reader yields, and how labels become masks.

Readers (`model/voc.py`, `model/yolo.py`, `model/coco.py`) turn an export into
`LabeledImage` records plus `Problem`s; `rasterize` turns a record's objects
into a {0,255} mask of the image's size. A reader never raises for one bad
file: it records a `Problem` and goes on, so the rest of a dataset is still used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

SPLITS = ("train", "valid", "test")

Point = tuple[float, float]


@dataclass(frozen=True)
class LabeledObject:
    """One labeled object: its class name, a polygon (pixels) when there is one, else a box."""

    name: str
    polygon: tuple[Point, ...] | None = None
    box: tuple[float, float, float, float] | None = None  # xmin, ymin, xmax, ymax in pixels


@dataclass
class LabeledImage:
    """One image and its objects, as read from an export."""

    image: Path
    label_file: Path
    source_split: str  # the export's folder ("train", "valid", "test"), "" for a flat folder
    width: int | None  # as the label file states it; the image itself is the authority
    height: int | None
    objects: list[LabeledObject] = field(default_factory=list)


@dataclass(frozen=True)
class Problem:
    """A file that was skipped or partly used, and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def source_stem(image: Path) -> str:
    """The source photo a Roboflow file was made from: `<stem>.rf.<hash>.jpg` -> `<stem>`.

    Augmented copies share it, so splits must keep every copy of a stem together.
    """
    name = image.name
    return name.split(".rf.")[0] if ".rf." in name else image.stem


def image_split_dirs(root: Path) -> list[tuple[str, Path]]:
    """The split folders of an export root, or the root itself as one flat folder ("")."""
    found = [(s, root / s) for s in SPLITS if (root / s).is_dir()]
    return found or [("", root)]


def check_point(x: float, y: float, where: str) -> str | None:
    """Why a coordinate cannot be used, or None when it can (negatives are clipped later)."""
    if not (math.isfinite(x) and math.isfinite(y)):
        return f"{where} has a non-finite coordinate ({x}, {y}); object skipped"
    return None


def rasterize(objects: list[LabeledObject], width: int, height: int) -> np.ndarray:
    """A uint8 mask of shape (height, width), 255 inside any object and 0 elsewhere.

    Polygons are filled with sub-pixel precision; boxes are clipped to the image
    (exports let them reach one pixel past the edge).
    """
    mask = np.zeros((height, width), np.uint8)
    shift = 4  # cv2 fixed-point: coordinates in 1/16 pixel keep thin cracks' shape
    for obj in objects:
        if obj.polygon is not None:
            pts = np.round(np.asarray(obj.polygon, np.float64) * (1 << shift)).astype(np.int64)
            # a closed polygon's pixel centres: shift by half a pixel as cv2 fills pixel corners
            pts -= 1 << (shift - 1)
            cv2.fillPoly(mask, [pts.astype(np.int32)], 255, lineType=cv2.LINE_8, shift=shift)
        elif obj.box is not None:
            x0, y0, x1, y1 = obj.box
            c0, r0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
            c1, r1 = min(width, int(math.ceil(x1))), min(height, int(math.ceil(y1)))
            if c1 > c0 and r1 > r0:
                mask[r0:r1, c0:c1] = 255
    return mask
