"""Scoring masks against ground truth: per-image IoU (mIoU), Dice, pooled IoU, and threshold choice.

    acc = Accumulator()
    acc.add(prob_map, gt_mask)               # any number of images
    acc.scores(0.5)                          # {"miou": ..., "dice": ..., "pooled_iou": ..., "images": ...}
    acc.best_threshold()                     # the grid threshold with the highest mIoU

    run = score_models({"model": seg}, samples, prompts, measures=(RAW, MASKS))
    run.accs["model"][prompt][MASKS].scores(0.5)

`score_models` is the one validation loop: training's validation, `qa-daemon eval`
(`evaluate`), `model export`'s card figures and the retrain gate all run it.

An image where ground truth and prediction are both empty scores IoU 1 and Dice 1:
nothing was there and nothing was found.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from rich.progress import track

from model.data import read_mask, read_rgb
from model.labels import rasterize
from model.postprocess import binary_mask, clean
from model.prep import MANIFEST, Source, read_manifest, read_source
from model.segmenter import Segmenter

GRID = tuple(round(t, 2) for t in np.arange(0.1, 0.91, 0.05))

# what `score_models` counts of each probability map
RAW = "raw"  # the probabilities themselves, at every grid threshold
CLEANED = "cleaned"  # at every grid threshold, then the task's clean-up (`task_inference`): masks users would get
MASKS = "masks"  # the mask users get now (`Segmenter.mask`: the model's threshold and clean-up), at 0.5


class Accumulator:
    """Per-image and pooled overlap counts at every threshold of a grid."""

    def __init__(self, grid: tuple[float, ...] = GRID):
        self.grid = np.asarray(grid, np.float32)
        self.inter: list[np.ndarray] = []  # per image, per threshold
        self.pred: list[np.ndarray] = []
        self.gt: list[int] = []

    def add(self, prob: np.ndarray, gt: np.ndarray, clean: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        """Count one image. With `clean` (a {0,255} mask in, a {0,255} mask out: the task's clean-up), the
        counts are those of the cleaned mask at each threshold, as users get it."""
        if prob.shape != gt.shape:
            raise ValueError(f"prediction {prob.shape} and ground truth {gt.shape} differ in size")
        if clean is not None:
            masks = [clean(binary_mask(prob, float(t))) > 0 for t in self.grid]
            self.inter.append(np.array([np.count_nonzero(m & gt) for m in masks]))
            self.pred.append(np.array([np.count_nonzero(m) for m in masks]))
            self.gt.append(int(gt.sum()))
            return
        # one pass: a histogram of probabilities inside and outside the ground truth; pixel > grid[k] for k < bin
        bins = np.searchsorted(self.grid, prob.ravel().astype(np.float32, copy=False), side="right")
        inside = np.bincount(bins[gt.ravel()], minlength=len(self.grid) + 1)
        everywhere = np.bincount(bins, minlength=len(self.grid) + 1)
        above = lambda h: h[::-1].cumsum()[::-1][1:]  # noqa: E731 - pixels with prob > grid[k]
        self.inter.append(above(inside))
        self.pred.append(above(everywhere))
        self.gt.append(int(gt.sum()))

    def __len__(self) -> int:
        return len(self.gt)

    def scores(self, threshold: float) -> dict[str, float]:
        """mIoU, Dice and pooled IoU at the grid threshold nearest `threshold`."""
        if not self.gt:
            return {"images": 0, "miou": float("nan"), "dice": float("nan"), "pooled_iou": float("nan")}
        k = int(np.abs(self.grid - threshold).argmin())
        inter = np.array([i[k] for i in self.inter], np.float64)
        pred = np.array([p[k] for p in self.pred], np.float64)
        gt = np.array(self.gt, np.float64)
        union = pred + gt - inter
        empty = union == 0
        iou = np.where(empty, 1.0, inter / np.maximum(union, 1))
        dice = np.where(empty, 1.0, 2 * inter / np.maximum(pred + gt, 1))
        pooled = inter.sum() / max(union.sum(), 1)
        return {"images": len(gt), "miou": float(iou.mean()), "dice": float(dice.mean()), "pooled_iou": float(pooled)}

    def best_threshold(self) -> float:
        """The grid threshold with the highest mIoU (ties: the one nearest 0.5)."""
        best = max(self.grid, key=lambda t: (round(self.scores(float(t))["miou"], 6), -abs(float(t) - 0.5)))
        return round(float(best), 2)


@dataclass
class PromptResult:
    task: str
    prompt: str
    images: int
    miou: float
    dice: float
    pooled_iou: float
    ms_per_image: float  # the model's time per image for all prompts of the run (one shared image encoding)
    threshold: float

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def labeled_samples(data: Path, task: str, classes: tuple[str, ...],
                    split: str | None = None) -> tuple[list[Path], list, list[str]]:
    """The images of a labeled folder and, per image, its ground truth for `task`; and problems.

    `data` is a prepared folder (its `manifest.csv` splits, which are leakage-free; ground truth
    is the mask file), an export root, or a flat folder of labeled images (ground truth is the
    list of objects).
    """
    if (data / MANIFEST).is_file():
        rows = [r for r in read_manifest(data) if r.task == task and (split is None or r.split == split)]
        return [Path(r.image) for r in rows], [Path(r.mask) for r in rows], []
    images, problems = read_source(Source("eval", data, task, classes))
    if split is not None:
        images = [im for im in images if im.source_split == split]
    return [im.image for im in images], [im.objects for im in images], [str(p) for p in problems]


@dataclass
class Scored:
    """What `score_models` counted."""

    accs: dict[str, dict[str, dict[str, Accumulator]]]  # model name -> prompt -> measure -> counts
    seconds: dict[str, float]  # per model: time in `predict`, all prompts together
    images: int


def score_models(models: Mapping[str, Segmenter], samples: Iterable[tuple[np.ndarray, np.ndarray]],
                 prompts: list[str], batch_size: int = 4, measures: tuple[str, ...] = (RAW,),
                 description: str = "evaluating", total: int | None = None, progress: bool = False) -> Scored:
    """Run each model over (RGB image, bool ground truth) pairs, in batches, under every prompt, and count
    the overlap of each map with the ground truth as each of `measures` (RAW, CLEANED, MASKS).

    Each image is read once, and encoded once per model for all prompts (`Segmenter.predict`).
    """
    accs = {name: {p: {m: Accumulator(grid=(0.5,) if m == MASKS else GRID) for m in measures} for p in prompts}
            for name in models}
    tidy = {}
    if CLEANED in measures:  # the clean-up as a {0,255} -> {0,255} function, per model and prompt
        for name, model in models.items():
            for p in prompts:
                settings = model.task_inference(p)
                tidy[name, p] = partial(clean, min_area=settings.min_area, fill_boxes=settings.fill_boxes)
    seconds = dict.fromkeys(models, 0.0)
    n = 0
    for batch in _batches(track(samples, description, total=total, disable=not progress), batch_size):
        images = [im for im, _ in batch]
        n += len(batch)
        for name, model in models.items():
            start = time.perf_counter()
            probs = model.predict(images, prompts)
            seconds[name] += time.perf_counter() - start
            for (_, gt), prob in zip(batch, probs, strict=True):
                for i, p in enumerate(prompts):
                    counts = accs[name][p]
                    if RAW in counts:
                        counts[RAW].add(prob[i], gt)
                    if CLEANED in counts:
                        counts[CLEANED].add(prob[i], gt, clean=tidy[name, p])
                    if MASKS in counts:
                        counts[MASKS].add(model.mask(prob[i], p) > 0, gt)
    return Scored(accs, seconds, n)


def evaluate(model: Segmenter, samples: Iterable[tuple[np.ndarray, np.ndarray]], prompts: list[str],
             tasks: list[str], batch_size: int = 4, total: int | None = None,
             progress: bool = False) -> tuple[list[PromptResult], dict[str, Accumulator]]:
    """Score `model` on (RGB image, bool ground truth) pairs under each prompt (each of its task).

    Scores are those of the masks users get (`model.mask`: the task's threshold and clean-up);
    the returned accumulators hold the raw probabilities, for threshold curves.
    """
    run = score_models({"model": model}, samples, prompts, batch_size, (RAW, MASKS), "evaluating", total, progress)
    counts = run.accs["model"]
    ms = 1000 * run.seconds["model"] / max(run.images, 1)
    results = []
    for p, task in zip(prompts, tasks, strict=True):
        s = counts[p][MASKS].scores(0.5)
        results.append(PromptResult(task, p, s["images"], s["miou"], s["dice"], s["pooled_iou"], ms,
                                    model.threshold(p)))
    return results, {p: counts[p][RAW] for p in prompts}


def calibration_split(keys: list[tuple[str, str]], seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices of a calibration half and a held-out half of `keys` ((dataset, stem) per image).

    By a seeded hash of the source photo, so every copy of a photo lands in one half and the
    halves stay put when new photos arrive. Settings (thresholds, input size, clean-up) are
    chosen on the calibration half and scored on the other.
    """
    import hashlib

    calibration, held = [], []
    for i, (dataset, stem) in enumerate(keys):
        h = int.from_bytes(hashlib.sha256(f"{seed}/{dataset}/{stem}".encode()).digest()[:8], "big")
        (calibration if h % 2 == 0 else held).append(i)
    return calibration, held


def samples_from_labels(images: list[Path], truths: list) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(RGB image, bool ground truth) pairs; a truth is a mask file or a list of objects."""
    for path, truth in zip(images, truths, strict=True):
        rgb = read_rgb(path)
        yield rgb, (read_mask(truth) if isinstance(truth, Path) else rasterize(truth, rgb.shape[1], rgb.shape[0]) > 0)


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
