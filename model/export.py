"""A training run in, a checkpoint to ship out: inference settings chosen on data, fp16 weights, a measured card.

    card = export(Path("runs/v2"), Path("model/weights/compact-v2"), Path("data/prepared"))

On the calibration half of the prepared validation split (`calibration_split`) it
chooses the input side (among `sizes`; one for all tasks, by their mean mIoU, unless
`per_task_sizes`) and, per task, the threshold, the removal of small components and
the filling of components to their boxes, by mIoU of the masks users get. It then
writes the weights in half precision, loads them back through the ordinary loader,
and measures the card's metrics with `evaluate` (the code `qa-daemon eval` runs) at
exactly the shipped settings: on the whole validation split and on the held-out half
that chose nothing.
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from rich.progress import track

from model.checkpoint import CARD, Card, load_checkpoint, read_card, save_checkpoint
from model.data import read_mask, read_rgb
from model.errors import DataError
from model.evaluate import Accumulator, calibration_split, evaluate, samples_from_labels
from model.files import write_atomic
from model.postprocess import TaskInference, clean
from model.prep import read_manifest
from model.segmenter import Segmenter

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.2, 0.81, 0.05))
MIN_AREAS = (0.0, 0.0002, 0.001, 0.004)  # share of the image


def run_checkpoint(run: Path) -> Path:
    """The checkpoint folder of a run folder (its best/), or the folder itself when it is a checkpoint."""
    return run / "best" if (run / "best" / CARD).is_file() else run


def choose(model: Segmenter, images: list[np.ndarray], truths: list[np.ndarray], prompt: str, size: int,
           tta: bool = False, fill_choices: tuple[bool, ...] = (False, True)) -> tuple[float, float, TaskInference]:
    """The best (mIoU, threshold, settings) of one prompt at input side `size` on these images."""
    model.set_input_size(size)
    task = model.task_of(prompt) or ""
    model.inference[task] = TaskInference(flip_tta=tta)  # choose on the probabilities that will ship
    probs = [model.predict([im], [prompt])[0][0] for im in images]
    grid = THRESHOLDS
    best = (-1.0, 0.5, TaskInference(input_size=size, flip_tta=tta))
    for min_area, fill in itertools.product(MIN_AREAS, fill_choices):
        acc = Accumulator(grid)
        for prob, gt in zip(probs, truths, strict=True):
            acc.add(prob, gt, clean=functools.partial(clean, min_area=min_area, fill_boxes=fill))
        for threshold in grid:
            score = acc.scores(threshold)["miou"]
            if score > best[0] + 1e-9:
                best = (score, float(threshold),
                        TaskInference(input_size=size, min_area=min_area, fill_boxes=fill, flip_tta=tta))
    return best


def export(run: Path, out: Path, prepared: Path, sizes: list[int] | None = None, tta: bool = False,
           batch_size: int = 4, progress: bool = True, per_task_sizes: bool = False) -> Card:
    """Write `out` (fp16 weights + card) from `run`; returns the card with its measured metrics."""
    source = run_checkpoint(run)
    model, card = load_checkpoint(source)
    rows = [r for r in read_manifest(prepared) if r.split == "valid" and r.task in model.prompts]
    if not rows:
        raise DataError(f"{prepared}: no validation rows for {sorted(model.prompts)}; run `qa-daemon prep`")
    sizes = sizes or [model.input_size]
    results: dict[str, dict[int, tuple]] = {}
    calibration_images = {}
    for task, prompts in model.prompts.items():
        task_rows = [r for r in rows if r.task == task]
        cal, _ = calibration_split([(r.dataset, r.stem) for r in task_rows])
        cal_rows = [task_rows[i] for i in cal] or task_rows  # a split too small to halve: choose on all of it
        images = [read_rgb(r.image) for r in track(cal_rows, f"{task}: reading", disable=not progress)]
        truths = [read_mask(r.mask) for r in cal_rows]
        results[task] = {size: choose(model, images, truths, prompts[0], size, tta) for size in sizes}
        calibration_images[task] = len(cal_rows)
    # one side for every task unless asked otherwise: tasks at one side share the image encoding,
    # so two sides cost nearly two encodings
    shared = max(sizes, key=lambda k: float(np.mean([r[k][0] for r in results.values()])))
    chosen: dict[str, dict] = {}
    for task, by_size in results.items():
        size = max(by_size, key=lambda k: by_size[k][0]) if per_task_sizes else shared
        _, threshold, settings = by_size[size]
        model.thresholds[task] = threshold
        chosen[task] = {"settings": settings, "threshold": threshold, "calibration_images": calibration_images[task],
                        "calibration_miou_by_size": {str(k): round(v[0], 4) for k, v in by_size.items()}}
    model.inference = {t: c["settings"] for t, c in chosen.items()}
    shipped = Card(**{**asdict(card), "thresholds": dict(model.thresholds),
                      "inference": {t: i.as_dict() for t, i in model.inference.items()}})
    save_checkpoint(model, out, shipped, torch.float16)

    # the card's figures: the exported files, loaded back as every user loads them
    shipped_model, _ = load_checkpoint(out)
    metrics: dict = {"measured_on": f"{prepared} valid split (whole, and the held-out half that chose nothing)"}
    for task, prompts in shipped_model.prompts.items():
        task_rows = [r for r in rows if r.task == task]
        _, held = calibration_split([(r.dataset, r.stem) for r in task_rows])
        whole, _ = evaluate(shipped_model, samples_from_labels([Path(r.image) for r in task_rows],
                                                               [Path(r.mask) for r in task_rows]),
                            [prompts[0]], [task], batch_size=batch_size, total=len(task_rows), progress=progress)
        held_rows = [task_rows[i] for i in held]
        half, _ = evaluate(shipped_model, samples_from_labels([Path(r.image) for r in held_rows],
                                                              [Path(r.mask) for r in held_rows]),
                           [prompts[0]], [task], batch_size=batch_size)
        metrics[task] = {**whole[0].as_dict(), "held_out": half[0].as_dict(),
                         "chosen_on_calibration": {k: v for k, v in chosen[task].items() if k != "settings"}}
    final = Card(**{**asdict(read_card(out)), "metrics": metrics})
    # the card alone changes; the weights stay as written
    write_atomic(out / CARD, json.dumps(asdict(final), indent=2, default=str) + "\n")
    return final
