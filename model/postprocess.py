"""From a probability map to the mask users get: threshold, then per-task clean-up.

    settings = TaskInference(input_size=448, min_area=0.0005, fill_boxes=True)
    mask = to_mask(prob, threshold=0.5, settings=settings)      # uint8 {0, 255}

Each piece is chosen per task on the calibration half of the validation split
by `qa-daemon model export` and stored in the checkpoint card, so `predict`,
`eval` and the daemon apply the same steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class TaskInference:
    """How one task's prompts are run and turned into masks."""

    input_size: int | None = None  # model input side for this task; None: the model's input_size
    min_area: float = 0.0  # components smaller than this share of the image are dropped
    fill_boxes: bool = False  # each component becomes its bounding box (labels that are boxes, e.g. taping)
    flip_tta: bool = False  # average with the horizontally flipped image's prediction (twice the model time)

    def as_dict(self) -> dict:
        return asdict(self)


def binary_mask(prob: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 {0, 255} mask of the pixels whose probability is above `threshold`."""
    return np.where(prob > threshold, np.uint8(255), np.uint8(0))


def components(on: np.ndarray) -> tuple[int, np.ndarray | None, np.ndarray, tuple[int, int]]:
    """The 8-connected components of a uint8 mask, labelled inside its bounding box only: (count with the
    background, labels of the box, stats relative to the box, the box's top-left (x, y)). Every component lies
    in the box, and OpenCV's per-pixel statistics cost about 3 ms over a whole 896 px mask, mostly background."""
    x, y, w, h = cv2.boundingRect(on)
    if not w:
        return 1, None, np.zeros((1, 5), np.int32), (0, 0)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(on[y: y + h, x: x + w], connectivity=8)
    return n, labels, stats, (x, y)


def clean(mask: np.ndarray, min_area: float = 0.0, fill_boxes: bool = False) -> np.ndarray:
    """Drop components under `min_area` (share of the image) and optionally fill each to its box; {0, 255}."""
    if not min_area and not fill_boxes:
        return mask
    n, labels, stats, (x0, y0) = components((mask > 0).astype(np.uint8))
    if n <= 1:
        return mask
    keep = stats[1:, cv2.CC_STAT_AREA] >= min_area * mask.size
    out = np.zeros(mask.shape, np.uint8)
    if not fill_boxes:
        h, w = labels.shape
        out[y0: y0 + h, x0: x0 + w] = np.where(np.concatenate([[False], keep])[labels], np.uint8(255), np.uint8(0))
        return out
    for (x, y, bw, bh, _), k in zip(stats[1:], keep, strict=True):
        if k:
            out[y0 + y: y0 + y + bh, x0 + x: x0 + x + bw] = 255
    return out


def to_mask(prob: np.ndarray, threshold: float, settings: TaskInference) -> np.ndarray:
    return clean(binary_mask(prob, threshold), settings.min_area, settings.fill_boxes)
