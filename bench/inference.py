"""Model-only inference cost: both prompts with one shared image encoding against one full pass per prompt.

    uv run python -m bench.inference [--runs 10] [--threads 2] [--json]

Both backends at their real sizes: the compact model at 640 px (ImageNet encoder,
untrained decoder) and CLIPSeg with the architecture of CIDAS/clipseg-rd64-refined
at 352 px (random weights: timing does not depend on their values). Times are
medians after warm-up, batch of one image, on whatever device `--device` names.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from model.backends import build
from model.device import resolve_device
from model.segmenter import Segmenter
from tests.support.models import write_random_base

PROMPTS = ["segment crack", "segment taping area"]


def time_ms(fn, runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def measure(model: Segmenter, runs: int) -> dict:
    s = model.input_size
    pixels = (torch.rand(1, 3, s, s) * 255).to(model.device)
    model.embed_prompts(PROMPTS)  # prompt embeddings are cached in use; keep them out of the timing
    shared = time_ms(lambda: model.predict_logits(pixels, PROMPTS), runs)
    separate = time_ms(lambda: [model.predict_logits(pixels, [p]) for p in PROMPTS], runs)
    return {"backend": model.backend, "input_size": s, "ms_both_prompts_shared": round(shared, 1),
            "ms_one_pass_per_prompt": round(separate, 1), "shared_encoding_speedup": round(separate / shared, 2),
            "trained_parameters_m": round(sum(v.numel() for v in model.trainable_state().values()) / 1e6, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compact-size", type=int, default=640, help="input side of the compact model")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        base = write_random_base(Path(tmp) / "rd64", "rd64")
        variants = [("compact", {"input_size": args.compact_size}), ("clipseg", {"base": str(base), "input_size": 352})]
        for backend, settings in variants:
            model = build(backend, settings).to(device).eval()
            rows.append(measure(model, args.runs))
            del model
    hardware = {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "device": str(device),
                "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None, "torch": torch.__version__}
    if args.json:
        print(json.dumps({"hardware": hardware, "results": rows}))
        return
    print(f"hardware: {hardware}")
    print("| backend | input | both prompts, shared encoding (ms) | one pass per prompt (ms) | speed-up |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['input_size']} | {r['ms_both_prompts_shared']} | {r['ms_one_pass_per_prompt']} "
              f"| {r['shared_encoding_speedup']}x |")


if __name__ == "__main__":
    main()
