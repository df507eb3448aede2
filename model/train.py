"""Fine-tune a prompted segmentation model on a prepared dataset. One loop for every backend.

    uv run qa-daemon prep --out data/prepared
    uv run qa-daemon train --backend compact --epochs 20 --out runs/compact
    uv run qa-daemon train --out runs/compact --resume          # continue after a stop
    uv run qa-daemon train --backend clipseg --out runs/clipseg   # needs the CLIPSeg base
    uv run qa-daemon train --set ema_decay=0 --set lovasz_from=1  # switch recipe pieces off

The run folder holds `last/` (weights, EMA weights, card, optimizer and RNG state:
what --resume reads), `best/` (the checkpoint with the best validation mIoU, its
per-task thresholds chosen on validation; the EMA weights when EMA is on) and
`log.csv` (one line per evaluation). A resumed run continues the same schedule:
the learning rate, loss phase and data order depend only on the step.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.data import DataLoader

from model.backends import build
from model.checkpoint import Card, load_checkpoint, save_checkpoint
from model.data import Augment, ImageCache, SegmentationSet, balanced_sampler
from model.device import native_bf16, resolve_device
from model.errors import CheckpointError, DataError
from model.evaluate import RAW, samples_from_labels, score_models
from model.losses import bce_dice, bce_lovasz
from model.prep import read_manifest
from model.runstate import EMA, EMA_WEIGHTS, get_rng, load_optimizer, save_optimizer, set_rng
from model.segmenter import Segmenter


@dataclass
class TrainSettings:
    prepared: Path  # folder written by `qa-daemon prep` (manifest.csv + masks)
    out: Path  # run folder: last/, best/, log.csv
    prompts: dict[str, list[str]]  # per task: canonical prompt first, then synonyms
    backend: str = "compact"  # "compact" or "clipseg"
    model: dict = field(default_factory=dict)  # backend settings, e.g. {"input_size": 448, "output_stride": 2}
    init: Path | None = None  # start from this checkpoint's weights (those that fit) instead of pretrained parts
    resume: bool = False  # continue from out/last (weights, EMA, optimizer, RNG, step, best score)
    epochs: int = 20
    steps_per_epoch: int | None = None  # default: one pass over the training images
    batch_size: int = 8
    lr: float = 1e-4  # peak learning rate (AdamW); pretrained CLIP layers, when tuned, get a fraction of it
    weight_decay: float = 1e-4
    warmup_steps: int = 100  # linear warm-up to lr ...
    min_lr_ratio: float = 0.1  # ... then cosine decay to lr * min_lr_ratio at the last step
    augment: Augment = field(default_factory=Augment)  # crops, scales, flips, colour (model/data.py)
    negative_prob: float = 0.2  # share of samples shown the other task's prompt and an empty mask
    dice_weight: float = 1.0  # main phase: loss = BCE + dice_weight * soft Dice
    lovasz_from: float = 1.0  # share of the steps after which the loss is BCE + per-image Lovasz hinge (1: never)
    aux_weight: float = 0.4  # deep supervision: weight of each auxiliary head's loss (model setting deep_supervision)
    ema_decay: float = 0.0  # exponential moving average of the weights, validated and kept as best (0: off)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda; mixed precision on CUDA
    cpu_bf16: str = "auto"  # auto: bf16 autocast on a CPU with native bf16 when a short measurement finds it faster
    threads: int | None = None  # torch threads on a CPU; default: every core this process may use
    num_workers: int = 0  # data-loading processes; 0 on a 2-core machine (augmenting a crop costs ~2 ms)
    eval_every: int = 1  # epochs between validations
    time_limit_min: float | None = None  # stop (resumably) after the first epoch that ends past this many minutes
    max_val_images: int | None = None  # per task; None: the whole valid split
    command: str = ""  # recorded in the checkpoint card
    progress: bool = True


RUN_SETTINGS = "run.json"


def train(s: TrainSettings) -> Path:
    """Run training; returns the folder of the best checkpoint. To continue a run, pass `resume_settings(out)`."""
    # --- setup ------------------------------------------------------------------------------
    random.seed(s.seed)
    np.random.seed(s.seed)
    torch.manual_seed(s.seed)
    device = resolve_device(s.device)
    if device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(s.threads or cores or 1)
    cv2.setNumThreads(1)  # crops are small; OpenCV's own pool would fight torch for the cores
    rows = read_manifest(s.prepared)
    train_rows = [r for r in rows if r.split == "train" and r.task in s.prompts]
    val_rows = [r for r in rows if r.split == "valid" and r.task in s.prompts]
    if not train_rows or not val_rows:
        raise DataError(f"{s.prepared}: needs train and valid rows for {sorted(s.prompts)}; "
                        f"found {len(train_rows)} train and {len(val_rows)} valid; run `qa-daemon prep`")
    val_tasks = {r.task for r in val_rows}  # a task without validation images keeps threshold 0.5
    if s.max_val_images:
        val_rows = [r for t in s.prompts for r in [r for r in val_rows if r.task == t][: s.max_val_images]]
    last, best = s.out / "last", s.out / "best"
    state = {"step": 0, "epoch": 0, "best_score": -1.0}
    if s.resume:
        model, card = load_checkpoint(last, device)
        state = json.loads((last / "state.json").read_text())
    else:
        model = build(s.backend, s.model).to(device)
        if s.init is not None:
            _init_from(model, s.init, device)
    model.prompts = s.prompts
    steps_per_epoch = s.steps_per_epoch or max(1, len(train_rows) // s.batch_size)
    total_steps = s.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.param_groups(s.lr), weight_decay=s.weight_decay)
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    ema = EMA(model, s.ema_decay) if s.ema_decay > 0 else None
    if s.resume:
        load_optimizer(optimizer, last)
        if ema is not None and (last / EMA_WEIGHTS).is_file():
            ema.load(last / EMA_WEIGHTS)
        set_rng(state.get("rng"))
    amp = device.type == "cuda"
    amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and s.cpu_bf16 != "off":
        amp = s.cpu_bf16 == "on" or (s.cpu_bf16 == "auto" and _cpu_bf16_faster(model, s))
        amp_dtype = torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
    data_info = _data_info(rows)

    # --- batches ----------------------------------------------------------------------------
    cache = ImageCache(s.prepared, train_rows, progress=s.progress)
    train_set = SegmentationSet(train_rows, s.prompts, s.augment, train=True, negative_prob=s.negative_prob,
                                cache=cache)

    def epoch_loader(epoch: int) -> DataLoader:
        sampler = balanced_sampler(train_rows, steps_per_epoch * s.batch_size, seed=s.seed * 1000 + epoch)
        return DataLoader(train_set, batch_size=s.batch_size, sampler=sampler, num_workers=s.num_workers,
                          drop_last=True, persistent_workers=False, pin_memory=device.type == "cuda",
                          worker_init_fn=_seed_worker, generator=torch.Generator().manual_seed(s.seed * 1000 + epoch))

    # --- evaluation -------------------------------------------------------------------------
    def validate() -> dict:
        """Per task: mIoU, Dice and pooled IoU at the best threshold on the valid split."""
        model.eval()
        out = {}
        for task, prompts in s.prompts.items():
            if task not in val_tasks:
                continue
            task_rows = [r for r in val_rows if r.task == task]
            samples = samples_from_labels([Path(r.image) for r in task_rows], [Path(r.mask) for r in task_rows])
            acc = score_models({"model": model}, samples, [prompts[0]], s.batch_size).accs["model"][prompts[0]][RAW]
            t = acc.best_threshold()
            out[task] = {"prompt": prompts[0], "threshold": t, **acc.scores(t)}
        model.train()
        return out

    # --- learning-rate schedule and loss phase ----------------------------------------------
    def lr_factor(step: int) -> float:
        if step < s.warmup_steps:
            return (step + 1) / s.warmup_steps
        progress = (step - s.warmup_steps) / max(1, total_steps - s.warmup_steps)
        return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    lovasz_step = round(s.lovasz_from * total_steps)

    def loss_of(levels: list[torch.Tensor], masks: torch.Tensor, step: int) -> torch.Tensor:
        main = levels[0].float()
        loss = bce_lovasz(main, masks) if step >= lovasz_step else bce_dice(main, masks, s.dice_weight)
        for aux in levels[1:]:  # deep supervision: coarse heads against the same mask
            aux = F.interpolate(aux.float(), size=masks.shape[-2:], mode="bilinear", align_corners=False)
            loss = loss + s.aux_weight * bce_dice(aux, masks, s.dice_weight)
        return loss

    def save(folder: Path, metrics: dict, dtype=torch.float32) -> None:
        thresholds = {t: m["threshold"] for t, m in metrics.items()}
        model.thresholds = thresholds or model.thresholds
        card = Card(backend=model.backend, settings=model.settings, thresholds=model.thresholds,
                    prompts=s.prompts, data=data_info, metrics=metrics, seed=s.seed, command=s.command,
                    step=state["step"], epoch=state["epoch"], best_score=state["best_score"])
        save_checkpoint(model, folder, card, dtype)

    # --- the loop ---------------------------------------------------------------------------
    model.train()
    log_path = s.out / "log.csv"
    s.out.mkdir(parents=True, exist_ok=True)
    if not s.resume:
        (s.out / RUN_SETTINGS).write_text(json.dumps(asdict(s), indent=2, default=str) + "\n")
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TextColumn("eta"),
               TimeRemainingColumn()]
    started, first_step = time.time(), state["step"]
    with Progress(*columns, disable=not s.progress) as bar:
        job = bar.add_task("train", total=total_steps, completed=state["step"], loss=float("nan"))
        bar.console.print(f"{total_steps} steps of {s.batch_size} on {device}"
                          f"{' with bf16 autocast' if amp and device.type == 'cpu' else ''}; "
                          f"Lovasz phase from step {lovasz_step}; EMA {s.ema_decay or 'off'}")
        while state["epoch"] < s.epochs:
            epoch_start, losses = time.time(), []
            for images, masks, prompts, _tasks in epoch_loader(state["epoch"]):
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * lr_factor(state["step"])
                images, masks = images.to(device, non_blocking=True).float(), masks.to(device, non_blocking=True)
                model.embed_prompts(list(prompts))  # cached in full precision, outside autocast
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                    levels = model.forward_levels(images, list(prompts))
                loss = loss_of(levels, masks, state["step"])
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                if ema is not None:
                    ema.update(model)
                state["step"] += 1
                losses.append(loss.item())
                bar.update(job, advance=1, loss=float(np.mean(losses[-50:])))
                if s.progress and not bar.console.is_terminal and state["step"] % 50 == 0:
                    # a log file gets no live bar: a line every 50 steps instead
                    rate = (time.time() - started) / max(1, state["step"] - first_step)
                    bar.console.print(f"step {state['step']}/{total_steps} loss {np.mean(losses[-50:]):.4f} "
                                      f"{rate:.2f} s/step eta {rate * (total_steps - state['step']) / 60:.0f} min")
            loop_seconds = time.time() - epoch_start  # training alone, before validation
            state["epoch"] += 1
            # --- stop conditions, checkpoints -------------------------------------------------
            out_of_time = s.time_limit_min is not None and time.time() - started >= 60 * s.time_limit_min
            if state["epoch"] % s.eval_every and state["epoch"] < s.epochs and not out_of_time:
                continue
            with ema.applied(model) if ema is not None else nullcontext():
                metrics = validate()
                score = float(np.mean([m["miou"] for m in metrics.values()]))
                improved = score > state["best_score"]
                if improved:
                    state["best_score"] = score
                    save(best, metrics)
            save(last, metrics)
            save_optimizer(optimizer, last)
            if ema is not None:
                ema.save(last / EMA_WEIGHTS)
            (last / "state.json").write_text(json.dumps({**state, "rng": get_rng()}))
            _log(log_path, {"epoch": state["epoch"], "step": state["step"], "loss": float(np.mean(losses or [0])),
                            "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.time() - epoch_start, 1),
                            "train_images_per_s": round(len(losses) * s.batch_size / max(loop_seconds, 1e-9), 2),
                            **{f"{t}_{k}": m[k] for t, m in metrics.items() for k in ("miou", "dice", "threshold")},
                            "best": improved})
            bar.console.print(f"epoch {state['epoch']}: loss {np.mean(losses or [0]):.4f}  " + "  ".join(
                f"{t} mIoU {m['miou']:.3f} Dice {m['dice']:.3f} @ {m['threshold']:.2f}" for t, m in metrics.items())
                + ("  (best)" if improved else ""))
            if out_of_time and state["epoch"] < s.epochs:
                bar.console.print(f"time limit of {s.time_limit_min:g} min reached after epoch {state['epoch']}; "
                                  f"continue with: qa-daemon train --out {s.out} --resume")
                break
    return best


def resume_settings(out: Path, **changes) -> TrainSettings:
    """The settings the run in `out` was started with, so its recipe and schedule go on unchanged,
    with `changes` (this session's device, threads, progress; more epochs to extend it) and resume on."""
    path = out / RUN_SETTINGS
    if not path.is_file() or not (out / "last" / "state.json").is_file():
        raise DataError(f"--resume: {out} holds no run to continue (no {RUN_SETTINGS} or last/); "
                        "drop --resume or fix --out")
    raw = json.loads(path.read_text())
    raw["augment"] = Augment(**{k: (tuple(v) if k == "aspect" else v) for k, v in raw["augment"].items()})
    raw["augment"].scale = {t: tuple(v) for t, v in raw["augment"].scale.items()}
    for key in ("prepared", "init"):
        raw[key] = Path(raw[key]) if raw[key] is not None else None
    # a time limit belongs to the session that set it
    return TrainSettings(**{**raw, "out": out, "time_limit_min": None, **changes, "resume": True})


def _init_from(model: Segmenter, folder: Path, device: torch.device) -> None:
    """Copy the weights of a checkpoint that fit `model` (same name and shape); new parts keep their init.

    Encoder weights are copied only between the same encoder: Lite0's trained blocks dropped into the
    first blocks of a deeper Lite1 would break the pretrained Lite1 around them."""
    source, _ = load_checkpoint(folder, device)
    theirs = source.trainable_state()
    ours = model.trainable_state()
    same_encoder = source.settings.get("encoder") == model.settings.get("encoder")
    fitting = [k for k, v in ours.items() if k in theirs and theirs[k].shape == v.shape
               and (same_encoder or not k.startswith("encoder."))]
    if not fitting:
        raise CheckpointError(f"--init {folder}: none of its weights fit a {model.backend} model with these settings")
    with torch.no_grad():
        for k in fitting:
            ours[k].copy_(theirs[k])
    model.inference = dict(source.inference)  # a retrain keeps its base's input sizes and clean-up


def _cpu_bf16_faster(model: Segmenter, s: TrainSettings) -> bool:
    """Whether bf16 autocast trains faster than fp32 on this CPU: a few timed steps of each.

    Only CPUs with native bf16 can gain.
    """
    if not native_bf16():
        return False
    size = s.augment.crop_size
    pixels = torch.rand(s.batch_size, 3, size, size) * 255
    target = (torch.rand(s.batch_size, 1, size, size) > 0.95).float()
    prompts = [next(iter(s.prompts.values()))[0]] * s.batch_size
    saved = {k: v.detach().clone() for k, v in model.trainable_state().items()}

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model.forward_levels(pixels, prompts)
        bce_dice(out[0].float(), target).backward()
        return time.perf_counter() - start

    for bf16 in (False, True, False, True):  # the first passes of each set up its kernels
        step(bf16)
    timings = {False: math.inf, True: math.inf}
    for _ in range(3):  # alternate, so a busy moment on a shared host hits both
        for bf16 in (False, True):
            timings[bf16] = min(timings[bf16], step(bf16))
    model.zero_grad(set_to_none=True)
    with torch.no_grad():  # the timing passes moved batch-norm statistics
        for k, v in model.trainable_state().items():
            v.copy_(saved[k])
    return timings[True] < 0.9 * timings[False]


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def _data_info(rows) -> dict:
    counts: dict[str, dict] = {}
    for r in rows:
        c = counts.setdefault(f"{r.task}/{r.split}", {"images": 0, "stems": set()})
        c["images"] += 1
        c["stems"].add((r.dataset, r.stem))
    return {"datasets": sorted({r.dataset for r in rows}),
            "splits": {k: {"images": v["images"], "stems": len(v["stems"])} for k, v in sorted(counts.items())}}


def _log(path: Path, record: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(record))
        if new:
            writer.writeheader()
        writer.writerow(record)
