"""The benchmark suite: every speed figure of qa-daemon, measured on the machine it runs on.

    uv run python -m bench [--quick] [--json]

1. end to end: a real `qa-daemon run` with the shipped model; a burst of real 640x640 photos, a burst
   of 4000x3000 photos, and 640x640 photos sent one per second (bench/daemon.py); then the 640x640
   burst again through a daemon with `model.runtime: eager`, for the compiled path's speed-up;
2. model only: both prompts on one photo, eager PyTorch against the compiled graph (bench/runtime.py),
   and one shared image encoding against one full pass per prompt; finishing a photo (masks,
   overlay, measures) at 640x640 and at 12 MP (bench/finishing.py);
3. decoding a 4000x3000 JPEG to the working resolution, with and without draft mode;
4. training throughput: the real training loop with config.yaml's recipe on the prepared data;
5. the daemon's peak resident memory;
6. `qa-daemon status` on a store of 500 processed photos, a fresh process each time;
7. start-up: launch of `qa-daemon run` to its first photo processed, a photo already waiting (bench/daemon.py).

`--json` prints one object: photos_per_s_640, photos_per_s_640_eager, compiled_speedup,
photos_per_s_4000x3000, p95_latency_s_640 (steady 1 photo/s), model_ms (per runtime), finish_ms_640,
finish_ms_12mp, shared_encoding_speedup, draft_decode_speedup, train_images_per_s, peak_rss_mb, status_s,
startup_s, hardware, and the details. Needs ../shared/datasets for real photos.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import daemon as e2e
from bench import finishing
from bench.inference import measure as model_only
from bench.runtime import model_ms as runtime_ms
from model import SHIPPED_CHECKPOINT
from model.checkpoint import load_checkpoint
from model.images import decode, fit_within


def draft_decode(runs: int, side: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        [big] = e2e.make_large(e2e.real_photos(1), Path(tmp))
        timings = {}  # full: every pixel decoded, then resized down; draft: JPEG DCT scaling
        for name, fn in (("full_ms", lambda: fit_within(decode(big).rgb, side)),
                         ("draft_ms", lambda: decode(big, side))):
            fn()
            samples = []
            for _ in range(runs):
                start = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - start) * 1000)
            timings[name] = round(statistics.median(samples), 1)
    return {**timings, "side": side, "draft_decode_speedup": round(timings["full_ms"] / timings["draft_ms"], 2)}


def train_throughput(steps: int, prepared: Path) -> dict:
    """Images per second of the real training loop and recipe (config.yaml's `train:`, the shipped
    architecture) on the prepared data: one epoch of `steps`, validation on two images per task excluded."""
    import csv

    from daemon.config import load_config
    from model.train import train

    if not (prepared / "manifest.csv").is_file():
        return {"skipped": f"{prepared}: no prepared data; run `qa-daemon prep` first"}
    config = load_config(e2e.REPO / "config.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        settings = config.train_settings(prepared=prepared, out=Path(tmp) / "run", epochs=1, steps_per_epoch=steps,
                                         max_val_images=2, progress=False)
        with contextlib.redirect_stdout(sys.stderr):  # the loop's epoch lines; stdout carries --json
            train(settings)
        with (Path(tmp) / "run" / "log.csv").open() as fh:
            row = next(csv.DictReader(fh))
    return {"batch": settings.batch_size, "crop": settings.augment.crop_size, "steps": steps,
            "architecture": settings.model, "train_images_per_s": float(row["train_images_per_s"])}


def status_time(runs: int, photos: int = 500) -> dict:
    """Wall time of `qa-daemon status` (a fresh process, as a user runs it) on a store holding `photos`
    processed photos; the median of `runs`."""
    from daemon.store import Store
    from tests.support.store import fill

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'qa.sqlite3'}"
        store = Store.open(url)
        fill(store, Path(tmp), [("tower-a", "2026-11-24", 1.0, "fine")] * photos)
        store.close()
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "daemon", "status", "--store", url], check=True,
                           capture_output=True)
            samples.append(time.perf_counter() - start)
    return {"status_s": round(statistics.median(samples), 2), "photos_in_store": photos, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer photos and runs: a smoke test of the suite")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED_CHECKPOINT)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--prepared", type=Path, default=e2e.REPO / "data" / "prepared",
                    help="prepared data for the training figure (qa-daemon prep)")
    args = ap.parse_args()
    n = {"photos": 12, "large": 4, "steady": 5, "runs": 3, "train": 6, "startups": 2} if args.quick else \
        {"photos": 60, "large": 20, "steady": 30, "runs": 10, "train": 40, "startups": 5}

    model, _ = load_checkpoint(args.checkpoint, args.device)
    inference = model_only(model, n["runs"])
    decoding = draft_decode(n["runs"], 2 * model.input_size)
    with tempfile.TemporaryDirectory() as tmp:  # eager, the fp32 graph and what auto runs, interleaved in one loop
        runtimes = {"eager": model}
        for choice in ("onnx", "auto"):
            compiled, _ = load_checkpoint(args.checkpoint, args.device, choice, Path(tmp))
            runtimes.setdefault(compiled.runtime, compiled)
        inference["model_ms"] = runtime_ms(runtimes, 2 * n["runs"])
        del model, compiled, runtimes
    finish = finishing.run(*((4, 2, 2) if args.quick else (12, 6, 5)), None, args.checkpoint)
    training = train_throughput(n["train"], args.prepared)
    status = status_time(n["runs"])
    daemon = e2e.run(n["photos"], n["large"], n["steady"], args.checkpoint, args.device, 8, n["startups"])
    eager = e2e.run(n["photos"], 0, 0, args.checkpoint, args.device, 8, 0, runtime="eager")
    b = daemon["bursts"]
    report = {
        "photos_per_s_640": b["640x640"]["photos_per_s"],
        "photos_per_s_640_eager": eager["bursts"]["640x640"]["photos_per_s"],
        "compiled_speedup": round(b["640x640"]["photos_per_s"] / eager["bursts"]["640x640"]["photos_per_s"], 2),
        "photos_per_s_4000x3000": b["4000x3000"]["photos_per_s"],
        "p95_latency_s_640": b["steady_640x640"]["p95_latency_s"],
        "model_ms": inference["model_ms"],
        "finish_ms_640": finish["finish_ms_640"], "finish_ms_12mp": finish["finish_ms_12mp"],
        "shared_encoding_speedup": inference["shared_encoding_speedup"],
        "draft_decode_speedup": decoding["draft_decode_speedup"],
        "train_images_per_s": training.get("train_images_per_s"),
        "peak_rss_mb": daemon["peak_rss_mb"],
        "status_s": status["status_s"],
        "startup_s": daemon["startup"]["startup_s"],
        "hardware": e2e.hardware(), "device": args.device, "torch_threads": torch.get_num_threads(),
        "quick": args.quick, "details": {"daemon": daemon, "daemon_eager": eager, "inference": inference,
                                         "finishing": finish, "decode": decoding, "training": training,
                                         "status": status},
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"hardware: {report['hardware']}, device {args.device}, {report['torch_threads']} torch threads")
    for key in ("photos_per_s_640", "photos_per_s_640_eager", "compiled_speedup", "photos_per_s_4000x3000",
                "p95_latency_s_640", "model_ms", "finish_ms_640", "finish_ms_12mp", "shared_encoding_speedup",
                "draft_decode_speedup", "train_images_per_s", "peak_rss_mb", "status_s", "startup_s"):
        print(f"  {key:<26} {report[key]}")
    print(json.dumps(report["details"], indent=2))


if __name__ == "__main__":
    main()
