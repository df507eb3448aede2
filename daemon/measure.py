"""Defect measurements of one mask: area, pieces, length; for cracks also width and severity.

    m = measure(mask, prob, scale=4.46, task="crack", mm_per_pixel=0.2, severity=config.measure.severity,
                min_component_px=16, area_px=123456)
    m["length_px"], m["max_width_mm"], m["severity"]

Masks are measured at the working resolution the photo was decoded at (about
twice the model's input side) and the figures scaled to source pixels by
`scale` (source pixels per working pixel), so a 12-megapixel photo costs the
same as a small one. Widths finer than `scale` source pixels cannot be resolved;
the model itself sees the photo at its input size.

- length: the mask's skeleton, each step counted 1 (straight) or sqrt(2) (diagonal), thinned one
  component at a time inside its own bounding box (`crack_lines`: 34 -> 16 ms median on 200 real crack
  masks at 896 px, identical figures);
- max width: twice the largest distance from the skeleton to the mask's edge, minus one
  (a one-pixel line is one pixel wide);
- severity: the class of the max width in mm (config `measure.severity`), only where the
  site's `mm_per_pixel` is known;
- taping: length as for cracks (the taped joints' centre lines; its components are the taped
  segments), thinned on the mask reduced to TAPING_SIDE px (`taping_length`); no width or severity,
  a strip of tape is as wide as its roll.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from skimage.morphology import skeletonize

from daemon.config import SeverityConfig
from model.postprocess import components

# Taped joints are bands tens of pixels wide, and thinning costs as many passes as a band is wide: a photo all
# tape took 380 ms at 896 px and 11 ms at 256 px; three 35-40 px joints 35 ms and 3 ms. Lengths agree within
# 5% on drawn shapes, 1% on the labeled joints of 12 real photos (tests/test_measurements.py).
TAPING_SIDE = 256


def skeleton_length(skeleton: np.ndarray) -> float:
    """Length in pixels of a one-pixel-wide skeleton: 8-connected steps, diagonals counted sqrt(2)."""
    s = skeleton.astype(bool)
    straight = np.count_nonzero(s[:, 1:] & s[:, :-1]) + np.count_nonzero(s[1:, :] & s[:-1, :])
    diagonal = np.count_nonzero(s[1:, 1:] & s[:-1, :-1]) + np.count_nonzero(s[1:, :-1] & s[:-1, 1:])
    # a diagonal step is also seen as an L of two straight ones when the corner pixel is set; count it once
    corners = (np.count_nonzero(s[1:, 1:] & s[:-1, :-1] & (s[:-1, 1:] | s[1:, :-1]))
               + np.count_nonzero(s[1:, :-1] & s[:-1, 1:] & (s[:-1, :-1] | s[1:, 1:])))
    return float(straight + np.sqrt(2) * (diagonal - corners))


def crack_lines(labels: np.ndarray, stats: np.ndarray) -> tuple[float, float]:
    """(total skeleton length, widest point) over the components of a labelled mask, in working pixels.

    Each component is thinned and distance-transformed inside its own bounding box (padded by one
    background pixel), not over the whole photo: a crack mask is mostly background, and 8-connected
    components never touch, so thinning and the distance to the nearest background pixel come out the
    same as on the whole mask, at a fraction of the pixels."""
    length, width = 0.0, 0.0
    for i in range(1, len(stats)):
        x, y, w, h = stats[i, :4]
        part = np.pad(labels[y: y + h, x: x + w] == i, 1)
        skeleton = skeletonize(part)
        dist = cv2.distanceTransform(part.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        length += skeleton_length(skeleton)
        if skeleton.any():
            width = max(width, 2.0 * float(dist[skeleton].max()) - 1.0)
    return length, width


def taping_length(mask: np.ndarray) -> float:
    """Skeleton length of a taping mask in its own pixels, thinned at most TAPING_SIDE px on its longest side.

    The mask is reduced by area and any pixel at least a quarter taped is kept, so a strip thinner
    than the reduction is still measured."""
    h, w = mask.shape
    k = max(h, w) / TAPING_SIDE
    if k > 1:
        mask = cv2.resize(mask.astype(np.uint8) * 255, (max(1, round(w / k)), max(1, round(h / k))),
                          interpolation=cv2.INTER_AREA) >= 64
    _, labels, stats, _ = components(mask.astype(np.uint8))
    return crack_lines(labels, stats)[0] * max(k, 1.0)


def measure(mask: np.ndarray, prob: np.ndarray, scale: float, task: str, mm_per_pixel: float | None,
            severity: SeverityConfig, min_component_px: int, area_px: int) -> dict[str, Any]:
    """The detection columns of one (photo, prompt): see `daemon.store.Detection`.

    `mask` (bool) and `prob` are at working resolution; `area_px` is counted on the
    full-size mask that was written, so it matches the file exactly.
    """
    total = mask.size * scale * scale
    out: dict[str, Any] = {"area_px": int(area_px), "area_pct": 100.0 * area_px / total if total else 0.0,
                           "mean_confidence": float(prob[mask].mean()) if mask.any() else None,
                           "length_px": None, "max_width_px": None, "length_mm": None, "max_width_mm": None,
                           "severity": None, "coverage_pct": None}
    n, labels, stats, _ = components(mask.astype(np.uint8))
    out["components"] = int(np.count_nonzero(stats[1:, cv2.CC_STAT_AREA] * scale * scale >= min_component_px))
    if task == "taping":
        out["coverage_pct"] = out["area_pct"]
        out["length_px"] = taping_length(mask) * scale
        out["length_mm"] = out["length_px"] * mm_per_pixel if mm_per_pixel is not None else None
    if task != "crack":
        return out
    length, width = crack_lines(labels, stats)
    out["length_px"], out["max_width_px"] = length * scale, (max(1.0, width) if n > 1 else 0.0) * scale
    if mm_per_pixel is not None:
        out["length_mm"] = out["length_px"] * mm_per_pixel
        out["max_width_mm"] = out["max_width_px"] * mm_per_pixel
        out["severity"] = severity.classify(out["max_width_mm"]) if mask.any() else None
    return out
