"""Visual examples for a model report: image | ground truth | prediction, one PNG per example.

    uv run python -m model.examples --checkpoint model/weights/compact-v2 --prepared data/prepared --out model/

Picks, per task, the validation images at the 25th and 75th percentile of IoU
(a typical harder and a typical easier case, not the best ones), and writes
`example_<task>_<n>.png` with the prediction's IoU in the file's panel title.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from model.checkpoint import load_checkpoint
from model.data import read_mask, read_rgb
from model.masks import overlay, write_png
from model.prep import read_manifest
from model.segmenter import Segmenter


def panel(rgb: np.ndarray, gt: np.ndarray, pred: np.ndarray, title: str, height: int = 320) -> np.ndarray:
    """image | ground truth | prediction side by side, BGR, with a title bar."""
    tiles = [rgb, overlay(rgb, [gt.astype(np.uint8) * 255]), overlay(rgb, [pred])]
    w = round(rgb.shape[1] * height / rgb.shape[0])
    row = np.concatenate([cv2.resize(t, (w, height), interpolation=cv2.INTER_AREA) for t in tiles], axis=1)
    bar = np.full((28, row.shape[1], 3), 255, np.uint8)
    labels = ["image", "ground truth", f"prediction  {title}"]
    for i, text in enumerate(labels):
        cv2.putText(bar, text, (i * w + 8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return cv2.cvtColor(np.concatenate([bar, row], axis=0), cv2.COLOR_RGB2BGR)


def write_examples(model: Segmenter, prepared: Path, out: Path, per_task: int = 2) -> list[Path]:
    written = []
    valid = [r for r in read_manifest(prepared) if r.split == "valid" and r.mask_area > 0]
    for task, prompts in model.prompts.items():
        rows = [r for r in valid if r.task == task]
        scored = []
        for r in rows[::3]:  # every third image is plenty to find typical cases
            rgb, gt = read_rgb(r.image), read_mask(r.mask)
            pred = model.mask(model.predict([rgb], [prompts[0]])[0][0], prompts[0])
            inter, union = np.logical_and(gt, pred > 0).sum(), np.logical_or(gt, pred > 0).sum()
            scored.append((inter / max(union, 1), rgb, gt, pred))
        scored.sort(key=lambda x: x[0])
        for n, q in enumerate(np.linspace(0.25, 0.75, per_task)):
            iou, rgb, gt, pred = scored[int(q * (len(scored) - 1))]
            path = out / f"example_{task}_{n + 1}.png"
            write_png(path, panel(rgb, gt, pred, f'"{prompts[0]}"  IoU {iou:.2f}'))
            written.append(path)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--prepared", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    model, _ = load_checkpoint(args.checkpoint)
    for path in write_examples(model, args.prepared, args.out):
        print(path)


if __name__ == "__main__":
    main()
