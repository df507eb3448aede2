"""Finishing a photo after the model: `Processor._finish`, on real photos at 640x640 and at 4000x3000.

    uv run python -m bench.finishing [--photos 12] [--large 6] [--runs 5] [--against REV] [--json]

Finishing is everything the daemon does to a photo between the model and the store: each prompt's mask
at working resolution, scaled to the source's size and written as a PNG, the overlay JPEG, and the
measures. The shipped model's probabilities for each photo are computed once, beforehand, so the
figures are finishing alone. 640x640: real photos from ../shared/datasets (cracks and drywall
alternating); 4000x3000: JPEGs made from other real ones (`bench.daemon.make_large`), decoded to the
working resolution as the daemon does. Results go to a temporary folder.

- `finish_ms_640`, `finish_ms_12mp`: median of `Processor._finish` over every photo and run;
- `--against REV`: the same work as the code at git revision REV did it (its daemon/process.py,
  model/masks.py, model/postprocess.py and daemon/measure.py, read from git), interleaved with today's
  photo by photo in one process, so that both see the same load from whatever else runs on the machine:
  `finish_speedup_*` (REV's median over today's) is the figure to read on a shared machine;
- the steps of `_finish` timed one by one (masks at working resolution, scaling to full size, mask
  PNGs, measures, overlay), and the mask PNGs' size, for each variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import types
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import torch

import daemon.measure
import daemon.process
import model.masks
import model.postprocess
from bench.daemon import REPO, hardware, make_large, real_photos
from daemon.config import TASKS, Config, OutputsConfig
from model import SHIPPED_CHECKPOINT
from model.checkpoint import load_checkpoint
from model.images import Decoded, decode

MODULES = {"daemon/process.py": daemon.process, "model/masks.py": model.masks,
           "model/postprocess.py": model.postprocess, "daemon/measure.py": daemon.measure}


class MaskedBy:
    """The model, its masks made by another revision's post-processing (`Segmenter.mask` uses today's)."""

    def __init__(self, segmenter, postprocess: types.ModuleType):
        self.segmenter, self.postprocess = segmenter, postprocess

    def mask(self, prob: np.ndarray, prompt: str) -> np.ndarray:
        s = self.segmenter
        return self.postprocess.to_mask(prob, s.threshold(prompt), s.task_inference(prompt))

    def __getattr__(self, name: str):
        return getattr(self.segmenter, name)


def at_revision(rev: str) -> dict[str, types.ModuleType]:
    """MODULES as they were at git revision `rev`, using each other (and today's code for the rest)."""
    loaded = {}
    for path, today in MODULES.items():
        source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout
        module = types.ModuleType(f"{today.__name__}_at_{rev}")
        sys.modules[module.__name__] = module  # dataclasses look their module up while the class is made
        exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)  # noqa: S102 - our own code, from git
        loaded[today.__name__] = module
    for module in loaded.values():  # `from model.masks import ...` bound today's functions: rebind them
        for name, value in list(vars(module).items()):
            origin = loaded.get(getattr(value, "__module__", None))
            if origin is not None and hasattr(origin, name):
                setattr(module, name, getattr(origin, name))
    return loaded


def scaler(masks: types.ModuleType, postprocess: types.ModuleType):
    """How a revision scales a working-resolution mask to the source's size."""
    if hasattr(masks, "at_size"):
        return masks.at_size

    def inline(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:  # _finish before at_size existed
        if mask.shape[:2] == size[::-1]:
            return mask
        return postprocess.binary_mask(cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR), 127)
    return inline


def variant(name: str, modules: dict[str, types.ModuleType], segmenter, out: Path) -> SimpleNamespace:
    config = Config(outputs=OutputsConfig(dir=out / name))
    masked = segmenter if modules["model.postprocess"] is model.postprocess else \
        MaskedBy(segmenter, modules["model.postprocess"])
    processor = SimpleNamespace(config=config, model=masked,  # what _finish reads of its Processor
                                prompts={t: config.prompts.for_task(t).canonical for t in TASKS})
    return SimpleNamespace(name=name, processor=processor, finish=modules["daemon.process"].Processor._finish,
                           masks=modules["model.masks"], measure=modules["daemon.measure"].measure,
                           scale=scaler(modules["model.masks"], modules["model.postprocess"]), out=out / name)


def job(image_id: str) -> SimpleNamespace:
    """What _finish reads of a claimed job: results go to <outputs>/bench/2026-11-30/."""
    return SimpleNamespace(site="bench", captured_at=datetime(2026, 11, 30), image_id=image_id)


def steps(v: SimpleNamespace, image_id: str, d: Decoded, probs: np.ndarray) -> dict[str, float]:
    """The steps of `_finish` timed one by one (the same calls, without its bookkeeping)."""
    p, times = v.processor, {}
    start = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal start
        times[step] = (time.perf_counter() - start) * 1000
        start = time.perf_counter()

    out_dir = v.out / "steps"
    out_dir.mkdir(parents=True, exist_ok=True)
    masks = [p.model.mask(prob, prompt) for prob, prompt in zip(probs, p.prompts.values(), strict=True)]
    lap("masks")
    fulls = [v.scale(m, d.size) for m in masks]
    lap("full_size")
    v.masks.write_masks(out_dir, image_id, list(p.prompts.values()), fulls)
    lap("mask_pngs")
    for task, prob, work, full in zip(p.prompts, probs, masks, fulls, strict=True):
        v.measure(work > 0, prob, d.size[0] / d.rgb.shape[1], task, None, p.config.measure.severity,
                  p.config.measure.min_component_px, int(np.count_nonzero(full)))
    lap("measures")
    v.masks.write_overlay(out_dir / f"{image_id}__overlay.jpg", d.rgb, masks, p.config.outputs.overlay_max_side)
    lap("overlay")
    return times


def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 1)


def run(photos: int, large: int, runs: int, against: str | None, checkpoint: Path = SHIPPED_CHECKPOINT) -> dict:
    segmenter, _ = load_checkpoint(checkpoint, "cpu")
    side = 2 * segmenter.largest_input_size
    prompts = [Config().prompts.for_task(t).canonical for t in TASKS]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sets = {"640": real_photos(photos), "12mp": make_large(real_photos(large, skip=photos), tmp / "large")}
        inputs = {size: [(d, segmenter.predict([d.rgb], prompts)[0]) for d in (decode(p, side) for p in paths)]
                  for size, paths in sets.items()}
        variants = [variant("today", {m.__name__: m for m in MODULES.values()}, segmenter, tmp)]
        if against:
            against = subprocess.run(["git", "rev-parse", "--short", against], cwd=REPO, capture_output=True,
                                     text=True, check=True).stdout.strip()
            variants.insert(0, variant(f"at_{against}", at_revision(against), segmenter, tmp))
        finish = {v.name: {size: [] for size in inputs} for v in variants}
        parts = {v.name: {size: [] for size in inputs} for v in variants}
        for r in range(runs + 1):  # run 0 warms up
            for size, items in inputs.items():
                for i, (d, probs) in enumerate(items):
                    for v in variants if (r + i) % 2 else variants[::-1]:  # alternate who goes first
                        start = time.perf_counter()
                        v.finish(v.processor, job(f"{size}_{i:03d}"), d, probs, 0.0)
                        ms = (time.perf_counter() - start) * 1000
                        part = steps(v, f"{size}_{i:03d}", d, probs)
                        if r:
                            finish[v.name][size].append(ms)
                            parts[v.name][size].append(part)
        report = {"hardware": hardware(), "photos": {"640": photos, "12mp": large}, "runs": runs,
                  "torch_threads": torch.get_num_threads(), "variants": {}}
        for v in variants:
            report["variants"][v.name] = {size: {
                "finish_ms": median(finish[v.name][size]),
                "steps_ms": {k: median([p[k] for p in parts[v.name][size]]) for k in parts[v.name][size][0]},
                "mask_pngs_kb_per_photo": round(sum(f.stat().st_size for f in (v.out / "bench").rglob(
                    f"{size}_*__segment_*.png")) / 1024 / len(inputs[size]), 1),
            } for size in inputs}
        if against:  # what each variant wrote, decoded
            written = [sorted((v.out / "bench").rglob("*__segment_*.png")) for v in variants]
            report["masks_identical"] = len(written[0]) == len(written[1]) and all(
                np.array_equal(cv2.imread(str(a), cv2.IMREAD_UNCHANGED), cv2.imread(str(b), cv2.IMREAD_UNCHANGED))
                for a, b in zip(*written, strict=True))
    today = report["variants"]["today"]
    report["finish_ms_640"], report["finish_ms_12mp"] = today["640"]["finish_ms"], today["12mp"]["finish_ms"]
    if against:
        before = report["variants"][f"at_{against}"]
        report["against"] = against
        for size in ("640", "12mp"):
            report[f"finish_ms_{size}_before"] = before[size]["finish_ms"]
            report[f"finish_speedup_{size}"] = round(before[size]["finish_ms"] / today[size]["finish_ms"], 2)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=12, help="real 640x640 photos")
    ap.add_argument("--large", type=int, default=6, help="4000x3000 photos made from other real ones")
    ap.add_argument("--runs", type=int, default=5, help="passes over the photos, after one to warm up")
    ap.add_argument("--against", metavar="REV", help="also time the code at this git revision, interleaved")
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED_CHECKPOINT)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    report = run(args.photos, args.large, args.runs, args.against, args.checkpoint)
    if args.json:
        print(json.dumps(report))
        return
    print(f"hardware: {report['hardware']}; {args.photos} photos at 640x640, {args.large} at 4000x3000, "
          f"{args.runs} runs; medians")
    for key in ("finish_ms_640", "finish_ms_12mp", "finish_ms_640_before", "finish_ms_12mp_before",
                "finish_speedup_640", "finish_speedup_12mp", "masks_identical"):
        if key in report:
            print(f"  {key:<24} {report[key]}")
    print(json.dumps(report["variants"], indent=2))


if __name__ == "__main__":
    main()
