"""Fine-tune a prompted segmentation model on a prepared dataset. One loop for every backend.

    uv run qa-daemon prep --out data/prepared
    uv run qa-daemon train --backend compact --epochs 20 --out runs/compact
    uv run qa-daemon train --out runs/compact --resume          # continue after a stop
    uv run qa-daemon train --backend clipseg --out runs/clipseg   # needs the CLIPSeg base

The run folder holds `last/` (weights, card, optimizer state: what --resume reads),
`best/` (the checkpoint with the best validation mIoU, its per-task thresholds
chosen on validation) and `log.csv` (one line per evaluation).
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from model.data import SegmentationSet, balanced_sampler, read_mask, read_rgb
from model.errors import DataError
from model.evaluate import Accumulator
from model.prep import read_manifest
from model.segmenter import Card, build, load_checkpoint, resolve_device, save_checkpoint


@dataclass
class TrainSettings:
    prepared: Path  # folder written by `qa-daemon prep` (manifest.csv + masks)
    out: Path  # run folder: last/, best/, log.csv
    prompts: dict[str, list[str]]  # per task: canonical prompt first, then synonyms
    backend: str = "compact"  # "compact" or "clipseg"
    model: dict = field(default_factory=dict)  # backend settings, e.g. {"input_size": 640}
    init: Path | None = None  # start from this checkpoint's weights instead of pretrained parts
    resume: bool = False  # continue from out/last (weights, optimizer, step, best score)
    epochs: int = 20
    steps_per_epoch: int | None = None  # default: one pass over the training images
    batch_size: int = 8
    lr: float = 1e-4  # AdamW; pretrained CLIP layers, when tuned, get a fraction of it
    weight_decay: float = 1e-4
    warmup_steps: int = 100  # linear warm-up, then cosine decay to lr / 10
    crop_size: int = 384  # training crops; inference runs at the model's full input size
    crop_scale: tuple[float, float] = (0.2, 0.7)  # crop area as a share of the image
    negative_prob: float = 0.2  # share of samples shown the other task's prompt and an empty mask
    dice_weight: float = 1.0  # loss = BCE + dice_weight * soft Dice
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda; mixed precision on CUDA
    num_workers: int = 2
    eval_every: int = 1  # epochs between validations
    max_val_images: int | None = None  # per task; None: the whole valid split
    command: str = ""  # recorded in the checkpoint card
    progress: bool = True


def train(s: TrainSettings) -> Path:
    """Run training; returns the folder of the best checkpoint."""
    # --- setup ------------------------------------------------------------------------------
    random.seed(s.seed)
    np.random.seed(s.seed)
    torch.manual_seed(s.seed)
    device = resolve_device(s.device)
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
    elif s.init is not None:
        model, card = load_checkpoint(s.init, device)
    else:
        model = build(s.backend, s.model).to(device)
    model.prompts = s.prompts
    steps_per_epoch = s.steps_per_epoch or max(1, len(train_rows) // s.batch_size)
    total_steps = s.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.param_groups(s.lr), weight_decay=s.weight_decay)
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    if s.resume:
        _load_optimizer(optimizer, last)
    amp = device.type == "cuda"
    amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
    data_info = _data_info(rows)

    # --- batches ----------------------------------------------------------------------------
    train_set = SegmentationSet(train_rows, s.prompts, s.crop_size, train=True,
                                negative_prob=s.negative_prob, crop_scale=s.crop_scale)

    def epoch_loader(epoch: int) -> DataLoader:
        sampler = balanced_sampler(train_rows, steps_per_epoch * s.batch_size, seed=s.seed * 1000 + epoch)
        return DataLoader(train_set, batch_size=s.batch_size, sampler=sampler, num_workers=s.num_workers,
                          drop_last=True, persistent_workers=False, pin_memory=device.type == "cuda",
                          generator=torch.Generator().manual_seed(s.seed * 1000 + epoch))

    # --- evaluation -------------------------------------------------------------------------
    def validate() -> dict:
        """Per task: mIoU, Dice and pooled IoU at the best threshold on the valid split."""
        model.eval()
        out = {}
        for task, prompts in s.prompts.items():
            if task not in val_tasks:
                continue
            acc = Accumulator()
            task_rows = [r for r in val_rows if r.task == task]
            for i in range(0, len(task_rows), s.batch_size):
                chunk = task_rows[i: i + s.batch_size]
                probs = model.predict([read_rgb(r.image) for r in chunk], [prompts[0]])
                for r, p in zip(chunk, probs, strict=True):
                    acc.add(p[0], read_mask(r.mask))
            t = acc.best_threshold()
            out[task] = {"prompt": prompts[0], "threshold": t, **acc.scores(t)}
        model.train()
        return out

    # --- learning-rate schedule -----------------------------------------------------------
    def lr_factor(step: int) -> float:
        if step < s.warmup_steps:
            return (step + 1) / s.warmup_steps
        progress = (step - s.warmup_steps) / max(1, total_steps - s.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

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
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TextColumn("eta"),
               TimeRemainingColumn()]
    started, first_step = time.time(), state["step"]
    with Progress(*columns, disable=not s.progress) as bar:
        job = bar.add_task("train", total=total_steps, completed=state["step"], loss=float("nan"))
        while state["epoch"] < s.epochs:
            epoch_start, losses = time.time(), []
            for images, masks, prompts, _tasks in epoch_loader(state["epoch"]):
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * lr_factor(state["step"])
                images, masks = images.to(device, non_blocking=True).float(), masks.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                    logits = model(images, list(prompts))
                loss = _loss(logits.float(), masks, s.dice_weight)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                state["step"] += 1
                losses.append(loss.item())
                bar.update(job, advance=1, loss=float(np.mean(losses[-50:])))
                if s.progress and not bar.console.is_terminal and state["step"] % 50 == 0:
                    # a log file gets no live bar: a line every 50 steps instead
                    rate = (time.time() - started) / max(1, state["step"] - first_step)
                    bar.console.print(f"step {state['step']}/{total_steps} loss {np.mean(losses[-50:]):.4f} "
                                      f"{rate:.2f} s/step eta {rate * (total_steps - state['step']) / 60:.0f} min")
            state["epoch"] += 1
            # --- stop conditions, checkpoints -------------------------------------------------
            if state["epoch"] % s.eval_every and state["epoch"] < s.epochs:
                continue
            metrics = validate()
            score = float(np.mean([m["miou"] for m in metrics.values()]))
            improved = score > state["best_score"]
            if improved:
                state["best_score"] = score
                save(best, metrics)
            save(last, metrics)
            _save_optimizer(optimizer, last)
            (last / "state.json").write_text(json.dumps(state))
            _log(log_path, {"epoch": state["epoch"], "step": state["step"], "loss": float(np.mean(losses or [0])),
                            "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.time() - epoch_start, 1),
                            **{f"{t}_{k}": m[k] for t, m in metrics.items() for k in ("miou", "dice", "threshold")},
                            "best": improved})
            bar.console.print(f"epoch {state['epoch']}: loss {np.mean(losses or [0]):.4f}  " + "  ".join(
                f"{t} mIoU {m['miou']:.3f} Dice {m['dice']:.3f} @ {m['threshold']:.2f}" for t, m in metrics.items())
                + ("  (best)" if improved else ""))
    return best


def _loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float) -> torch.Tensor:
    """BCE plus soft Dice per image (smoothed, so an empty target asks for an empty prediction)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    dice = 1 - (2 * (prob * t).sum(1) + 1) / (prob.sum(1) + t.sum(1) + 1)
    return bce + dice_weight * dice.mean()


def _data_info(rows) -> dict:
    counts: dict[str, dict] = {}
    for r in rows:
        c = counts.setdefault(f"{r.task}/{r.split}", {"images": 0, "stems": set()})
        c["images"] += 1
        c["stems"].add((r.dataset, r.stem))
    return {"datasets": sorted({r.dataset for r in rows}),
            "splits": {k: {"images": v["images"], "stems": len(v["stems"])} for k, v in sorted(counts.items())}}


def _save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Optimizer moments as safetensors, its scalars as JSON: resumable without pickle."""
    sd = optimizer.state_dict()
    tensors = {f"{i}.{k}": v.detach().cpu().contiguous() for i, st in sd["state"].items()
               for k, v in st.items() if torch.is_tensor(v)}
    save_file(tensors, str(folder / "optimizer.safetensors"))
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    (folder / "optimizer.json").write_text(json.dumps({"param_groups": groups}))


def _load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    tensors = load_file(str(folder / "optimizer.safetensors"))
    groups = json.loads((folder / "optimizer.json").read_text())["param_groups"]
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _log(path: Path, record: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(record))
        if new:
            writer.writeheader()
        writer.writerow(record)


