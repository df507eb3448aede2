"""Model time of checkpoints side by side, and the cost of each encoder: figures for model/REPORT.md.

    uv run python -m bench.models --checkpoint model/weights/compact-v1 --checkpoint model/weights/compact-v2
    uv run python -m bench.models --encoders          # Lite0/1/2 x output stride 4/2 (needs --extra encoders)

Checkpoints: both canonical prompts on one real 640x640 photo through `predict` (each
task at its card's input size, probabilities back at the photo's size), timed in turns
(A, B, A, B ...) so that a busy moment on a shared host hits every checkpoint alike;
the ratio to the first checkpoint is the figure to quote. Encoders: model-only time
of both prompts at one input side, and training seconds per step (batch 8, 320 px
crops, forward, loss and AdamW step), so their accuracy can be compared at equal CPU time.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.inference import time_ms
from model.backends import build
from model.checkpoint import load_checkpoint
from model.data import read_rgb
from model.losses import bce_dice

PROMPTS = ["segment crack", "segment taping area"]
PHOTO = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cracks.v1i.voc" / "valid"


def photo() -> np.ndarray:
    found = sorted(PHOTO.glob("*.jpg"))[:1]
    return read_rgb(found[0]) if found else np.random.default_rng(0).integers(0, 255, (640, 640, 3), np.uint8)


def checkpoints(paths: list[Path], runs: int) -> list[dict]:
    rgb = photo()
    models = [load_checkpoint(p)[0] for p in paths]
    for m in models:
        for _ in range(3):  # first passes set up each input shape's kernels
            m.predict([rgb], PROMPTS)
    samples: list[list[float]] = [[] for _ in models]
    for _ in range(runs):
        for m, s in zip(models, samples, strict=True):
            start = time.perf_counter()
            m.predict([rgb], PROMPTS)
            s.append((time.perf_counter() - start) * 1000)
    first = statistics.median(samples[0])
    return [{"checkpoint": str(p), "input_sizes": {t: (m.task_inference(PROMPTS[i]).input_size or m.input_size)
                                                   for i, t in enumerate(("crack", "taping"))},
             "ms_both_prompts_640": round(statistics.median(s), 1), "ratio": round(statistics.median(s) / first, 3)}
            for p, m, s in zip(paths, models, samples, strict=True)]


def encoders(size: int, runs: int) -> list[dict]:
    rows = []
    for n in (0, 1, 2):
        for stride in (4, 2):
            try:
                model = build("compact", {"encoder": f"tf_efficientnet_lite{n}", "output_stride": stride,
                                          "deep_supervision": True, "input_size": size})
            except Exception as exc:  # a missing optional package: say so in the table
                rows.append({"encoder": f"lite{n}", "output_stride": stride, "error": str(exc)})
                continue
            model.eval()
            pixels = torch.rand(1, 3, size, size) * 255
            model.embed_prompts(PROMPTS)
            infer = time_ms(lambda m=model, px=pixels: m.predict_logits(px, PROMPTS), runs)
            model.train()
            opt = torch.optim.AdamW(model.param_groups(1e-4))
            batch, target = torch.rand(8, 3, 320, 320) * 255, (torch.rand(8, 1, 320, 320) > 0.9).float()

            def step(m=model, o=opt, b=batch, t=target) -> None:
                loss = bce_dice(m.forward_levels(b, PROMPTS * 4)[0], t)
                o.zero_grad()
                loss.backward()
                o.step()

            train_s = time_ms(step, max(3, runs // 3), warmup=2) / 1000
            rows.append({"encoder": f"lite{n}", "output_stride": stride, "input_size": size,
                         "ms_both_prompts": round(infer, 1), "train_s_per_step": round(train_s, 3),
                         "trained_parameters_m": round(sum(v.numel() for v in model.trainable_state().values())
                                                       / 1e6, 2)})
            del model, opt
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, action="append", default=[])
    ap.add_argument("--encoders", action="store_true", help="also time Lite0/1/2 at --size")
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    report = {"hardware": {"cpu": _cpu_name(), "threads": args.threads, "torch": torch.__version__}}
    with torch.inference_mode():
        if args.checkpoint:
            report["checkpoints"] = checkpoints(args.checkpoint, args.runs)
    if args.encoders:
        report["encoders"] = encoders(args.size, args.runs)
    print(json.dumps(report, indent=2))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
