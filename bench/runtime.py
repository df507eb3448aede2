"""The inference runtimes side by side, on a trained checkpoint (the shipped one by default):

    uv run python -m bench.runtime [--photos 100] [--runs 20] [--json]

- eager: PyTorch fp32, what `model.runtime: eager` runs;
- onnx: the compiled graph of model/runtime.py, what `auto` runs on a CPU;
- onnx-int8: the checkpoint's INT8 graphs, where it ships them (`qa-daemon model quantize`), what
  `auto` then runs;
- eager-bf16: PyTorch under bf16 autocast, only on CPUs with native bf16 (AMX or AVX512-BF16).

For each: the model time of both prompts on one photo at the model's input side (median of `--runs`,
the variants interleaved so that a busy host slows all alike); how far its masks differ from eager
fp32 (IoU per prompt on the first `--photos` validation photos of data/prepared); and validation
mIoU / Dice per task on the whole leakage-free split (`qa-daemon prep`), as users' masks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench import daemon as e2e
from model import SHIPPED_CHECKPOINT
from model.checkpoint import load_checkpoint
from model.data import read_mask, read_rgb
from model.device import native_bf16
from model.evaluate import MASKS, score_models
from model.images import fit_within
from model.prep import read_manifest
from model.segmenter import Segmenter

PROMPTS = {"crack": "segment crack", "taping": "segment taping area"}


def bf16_autocast(model: Segmenter):
    def run(pixels: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model.prompt_logits(pixels, emb).float()

    return run


def model_ms(variants: dict[str, Segmenter], runs: int) -> dict[str, float]:
    side = next(iter(variants.values())).input_size
    pixels = torch.rand(1, 3, side, side) * 255
    prompts = list(PROMPTS.values())
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(runs + 3):  # three warm-up rounds
        for name, model in variants.items():
            start = time.perf_counter()
            model.predict_logits(pixels, prompts)
            if r >= 3:
                samples[name].append((time.perf_counter() - start) * 1000)
    return {name: round(statistics.median(s), 1) for name, s in samples.items()}


def agreement(variants: dict[str, Segmenter], rows: list, reference: str = "eager") -> dict:
    """Per variant and prompt: mean and lowest IoU of its masks against the reference's, per photo."""
    ious: dict[str, dict[str, list[float]]] = {n: {p: [] for p in PROMPTS.values()} for n in variants}
    for row in rows:
        rgb = fit_within(read_rgb(Path(row.image)), 2 * variants[reference].largest_input_size)
        masks = {}
        for name, model in variants.items():
            probs = model.predict([rgb], list(PROMPTS.values()))[0]
            masks[name] = [model.mask(p, prompt) > 0 for p, prompt in zip(probs, PROMPTS.values(), strict=True)]
        for name in variants:
            for prompt, a, b in zip(PROMPTS.values(), masks[reference], masks[name], strict=True):
                union = np.count_nonzero(a | b)
                ious[name][prompt].append(1.0 if union == 0 else np.count_nonzero(a & b) / union)
    return {name: {prompt: {"mean_iou": round(float(np.mean(v)), 4), "min_iou": round(float(np.min(v)), 4)}
                   for prompt, v in by_prompt.items()} for name, by_prompt in ious.items()}


def validation(variants: dict[str, Segmenter], rows: list, progress: bool) -> dict:
    out: dict[str, dict] = {name: {} for name in variants}
    for task, prompt in PROMPTS.items():
        task_rows = [r for r in rows if r.task == task]
        samples = ((read_rgb(Path(r.image)), read_mask(Path(r.mask))) for r in task_rows)
        run = score_models(variants, samples, [prompt], 4, (MASKS,), f"validation {task}", len(task_rows), progress)
        for name in variants:
            s = run.accs[name][prompt][MASKS].scores(0.5)
            out[name][task] = {"miou": round(s["miou"], 4), "dice": round(s["dice"], 4), "images": s["images"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED_CHECKPOINT)
    ap.add_argument("--prepared", type=Path, default=e2e.REPO / "data" / "prepared")
    ap.add_argument("--photos", type=int, default=100, help="validation photos for the mask agreement")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = read_manifest(args.prepared)
    valid = [r for r in rows if r.split == "valid" and r.task in PROMPTS]
    picked = [valid[i] for i in np.linspace(0, len(valid) - 1, min(args.photos, len(valid))).astype(int)]
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        variants = {"eager": load_checkpoint(args.checkpoint, "cpu")[0]}
        started = time.perf_counter()
        variants["onnx"] = load_checkpoint(args.checkpoint, "cpu", "onnx", Path(tmp) / "cache")[0]
        compile_s = time.perf_counter() - started
        auto = load_checkpoint(args.checkpoint, "cpu", "auto", Path(tmp) / "cache")[0]
        variants.setdefault(auto.runtime, auto)
        if native_bf16():
            variants["eager-bf16"] = load_checkpoint(args.checkpoint, "cpu")[0]
            variants["eager-bf16"].compiled = bf16_autocast(variants["eager-bf16"])
        ms = model_ms(variants, args.runs)
        agree = agreement(variants, picked)
        scores = validation(variants, valid, progress=not args.json)
    report = {"hardware": e2e.hardware(), "threads": args.threads, "checkpoint": str(args.checkpoint),
              "input_size": variants["eager"].input_size, "compile_s": round(compile_s, 1),
              "auto_runs": auto.runtime, "agreement_photos": len(picked), "model_ms": ms,
              "compiled_speedup": round(ms["eager"] / ms["onnx"], 2), "agreement_with_eager": agree,
              "validation": scores}
    if args.json:
        print(json.dumps(report))
        return
    print(f"hardware: {report['hardware']}, {args.threads} threads, {args.checkpoint} at input {report['input_size']}")
    print(f"compile (export + session) {report['compile_s']} s; model.runtime auto runs {report['auto_runs']}")
    print("| runtime | model ms (both prompts) | vs eager | crack mask IoU vs eager (mean / min) | "
          "taping mask IoU vs eager (mean / min) | crack mIoU / Dice | taping mIoU / Dice |")
    print("|---|---|---|---|---|---|---|")
    for name in variants:
        a, s = agree[name], scores[name]
        print(f"| {name} | {ms[name]} | {ms['eager'] / ms[name]:.2f}x | "
              f"{a[PROMPTS['crack']]['mean_iou']} / {a[PROMPTS['crack']]['min_iou']} | "
              f"{a[PROMPTS['taping']]['mean_iou']} / {a[PROMPTS['taping']]['min_iou']} | "
              f"{s['crack']['miou']} / {s['crack']['dice']} | {s['taping']['miou']} / {s['taping']['dice']} |")


if __name__ == "__main__":
    main()
