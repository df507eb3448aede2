"""`qa-daemon train`, `eval` and `model export`: a checkpoint trained, scored and made shippable."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from daemon.cli.options import (
    CheckpointOption,
    DeviceOption,
    JsonOption,
    PreparedOption,
    QuietOption,
    config_of,
    err,
    out,
)
from daemon.config import ConfigError, existing_folder


class TaskName(StrEnum):
    crack = "crack"
    taping = "taping"


def train(
    ctx: typer.Context,
    prepared: PreparedOption = None,
    backend: Annotated[str | None, typer.Option(help=r"compact or clipseg \[config model.backend].")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help=r"Run folder \[config train.out].")] = None,
    epochs: Annotated[int | None, typer.Option(
        help=r"Epochs \[config train.epochs]; with --resume, more epochs extend the run (its schedule is "
             "stretched).")] = None,
    steps_per_epoch: Annotated[int | None, typer.Option(
        help=r"Steps per epoch \[config train.steps_per_epoch].")] = None,
    batch_size: Annotated[int | None, typer.Option(help=r"Images per step \[config train.batch_size].")] = None,
    lr: Annotated[float | None, typer.Option(help=r"Learning rate \[config train.lr].")] = None,
    crop_size: Annotated[int | None, typer.Option(help=r"Training crop side \[config train.crop_size].")] = None,
    input_size: Annotated[int | None, typer.Option(help=r"Model input side \[config model.input_size].")] = None,
    device: DeviceOption = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    init: Annotated[Path | None, typer.Option(help="Start from this checkpoint's weights.")] = None,
    tune_last_layers: Annotated[int, typer.Option(help="clipseg: also train the last N CLIP layers.")] = 0,
    max_val_images: Annotated[int | None, typer.Option(help="Validate on at most N images per task.")] = None,
    eval_every: Annotated[int | None, typer.Option(
        help=r"Validate every N epochs \[config train.eval_every].")] = None,
    time_limit: Annotated[float | None, typer.Option(
        help="Minutes this session may train; stops after the epoch that passes it (continue with --resume).")] = None,
    num_workers: Annotated[int | None, typer.Option(
        help=r"Data-loading processes \[config train.num_workers].")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE", help="Override a train: key of the config, VALUE in YAML "
        "(e.g. --set ema_decay=0 --set scale.crack=[0.5,1.0] --set architecture.output_stride=4).")] = None,
    quiet: QuietOption = False,
) -> None:
    """Fine-tune a segmentation model on prepared data; keeps the best checkpoint by validation mIoU.

    Prompts are drawn from each task's canonical prompt and synonyms; both tasks are sampled equally.
    The recipe (schedule, crops, EMA, loss phases, architecture) is the config's `train:` section.
    Writes OUT/best (the checkpoint to use), OUT/last (for --resume, which continues the run's own
    recipe and schedule), OUT/run.json and OUT/log.csv.

    Example: qa-daemon train --epochs 10 --out runs/compact --set ema_decay=0.999
    """
    from model.train import resume_settings
    from model.train import train as run_training

    config = config_of(ctx).with_train_overrides(set_ or [])
    if resume:  # the run's own recipe; only how this session runs it (and more epochs) may change
        recipe = {"--set": set_, "--lr": lr, "--batch-size": batch_size, "--crop-size": crop_size,
                  "--input-size": input_size, "--init": init, "--eval-every": eval_every,
                  "--steps-per-epoch": steps_per_epoch, "--max-val-images": max_val_images, "--backend": backend}
        given = [k for k, v in recipe.items() if v]
        if given:
            raise ConfigError(f"--resume continues the run with its own recipe ({out_dir or config.train.out}/"
                              f"run.json); drop {', '.join(given)}, or start a new run with another --out")
        session = {"device": device, "num_workers": num_workers, "epochs": epochs, "progress": not quiet,
                   "time_limit_min": time_limit}
        settings = resume_settings(out_dir or config.train.out, **{k: v for k, v in session.items() if v is not None})
    else:
        settings = config.train_settings(
            prepared=config.require("prep.out", prepared or config.prep.out), out=out_dir, backend=backend,
            input_size=input_size, crop_size=crop_size, tune_last_layers=tune_last_layers, init=init, epochs=epochs,
            steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=lr, device=device, num_workers=num_workers,
            eval_every=eval_every, max_val_images=max_val_images, time_limit_min=time_limit,
            command="qa-daemon " + " ".join(sys.argv[1:]), progress=not quiet)
    best = run_training(settings)
    out.print(f"best checkpoint: {best}")


def evaluate(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option(help="Prepared folder, export root, or flat folder of .jpg + .xml.")],
    task: Annotated[TaskName, typer.Option(help="Which task the labels are.")],
    checkpoint: CheckpointOption = None,
    split: Annotated[str | None, typer.Option(help="Only this split of an export root (train, valid, test).")] = None,
    prompt: Annotated[list[str] | None, typer.Option(help=r"Prompt(s) to score \[task's prompts].")] = None,
    device: DeviceOption = None,
    input_size: Annotated[int | None, typer.Option(
        help=r"Run the model at this input side \[the checkpoint's].")] = None,
    as_json: JsonOption = False,
) -> None:
    """Score a checkpoint per prompt: mIoU, Dice, pooled IoU, milliseconds per image.

    mIoU is the mean of per-image IoU (an image where ground truth and prediction are both empty
    scores 1); pooled IoU counts all pixels of all images together. Masks use the checkpoint's
    per-task threshold.

    With a folder written by `prep`, --split picks its leakage-free split.

    Example: qa-daemon eval --data data/prepared --task crack --split valid --json
    """
    import json

    from model.checkpoint import load_checkpoint, read_card
    from model.evaluate import evaluate as run_eval
    from model.evaluate import labeled_samples, samples_from_labels
    from model.prompts import resolve_prompts, teach

    config = config_of(ctx)
    ckpt = checkpoint or config.model.checkpoint
    classes = tuple(c for d in config.datasets if d.task == task.value for c in d.classes)
    if not classes:
        raise ConfigError(f"{config.source}: datasets: no dataset of task {task.value} names its classes")
    images, objects, problems = labeled_samples(existing_folder(data), task.value, classes, split)
    if not images:
        where = f" in split {split!r}" if split else ""
        raise ConfigError(f"--data {data}: no labeled images of {task.value}{where}; check the folder and --split")
    prompts = prompt or config.prompts.for_task(task.value).all
    resolved = resolve_prompts(prompts, read_card(ckpt).prompts, config.prompts.by_task)
    model, _ = load_checkpoint(ckpt, device or config.model.device, config.model.runtime, config.model.compiled_cache)
    teach(model, resolved)  # a paraphrase runs as its task's canonical prompt, results keep its words
    if input_size:
        model.set_input_size(input_size)
    results, _ = run_eval(model, samples_from_labels(images, objects), prompts, [task.value] * len(prompts),
                          batch_size=config.model.batch_size, total=len(images), progress=not as_json)
    for p in problems[:20]:
        err.print(f"warning: {p}", highlight=False, markup=False)
    if as_json:
        print(json.dumps({"checkpoint": str(ckpt), "data": str(data), "split": split,
                          "results": [r.as_dict() for r in results]}))
        return
    table = Table(title=f"{ckpt} on {data}{f' ({split})' if split else ''}")
    for col in ("prompt", "images", "mIoU", "Dice", "pooled IoU", "threshold", "ms/image"):
        table.add_column(col, justify="left" if col == "prompt" else "right")
    for r in results:
        table.add_row(r.prompt, str(r.images), f"{r.miou:.3f}", f"{r.dice:.3f}", f"{r.pooled_iou:.3f}",
                      f"{r.threshold:.2f}", f"{r.ms_per_image:.0f}")
    out.print(table)


def model_export(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="A training run folder (its best/ is used) or a checkpoint.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint folder to write.")],
    input_size: Annotated[list[int] | None, typer.Option(
        "--input-size", help=r"Input side(s) to choose from per task, on calibration images \[the run's].")] = None,
    prepared: PreparedOption = None,
    tta: Annotated[bool, typer.Option(help="Ship with flip test-time augmentation (twice the model time).")] = False,
    per_task_sizes: Annotated[bool, typer.Option(
        help="Let each task pick its own input side (tasks at different sides cannot share the image "
             "encoding: nearly twice the model time).")] = False,
    quiet: QuietOption = False,
) -> None:
    """Make a shippable checkpoint of a run: settings chosen on data, fp16 weights, a card with measured metrics.

    The input side (among --input-size; one for all tasks unless --per-task-sizes) and, per task,
    threshold, small-component removal and box filling are chosen on the calibration half of the
    validation split; the card's metrics are
    then measured on the exported files with the code `qa-daemon eval` runs, on the whole split
    and on the held-out half.

    Example: qa-daemon model export runs/v2 --out model/weights/compact-v2 --input-size 384 --input-size 448
    """
    from model.checkpoint import read_card
    from model.export import export, run_checkpoint

    config = config_of(ctx)
    read_card(run_checkpoint(run_dir))  # a clear error before any work when there is no checkpoint
    card = export(run_dir, out_dir, config.require("prep.out", prepared or config.prep.out), input_size or None,
                  tta, config.model.batch_size, progress=not quiet, per_task_sizes=per_task_sizes)
    table = Table(title=f"{out_dir} (fp16), measured on the exported files")
    for col in ("task", "input", "threshold", "clean-up", "images", "mIoU", "Dice", "held-out mIoU"):
        table.add_column(col, justify="left" if col in ("task", "clean-up") else "right")
    for task, inf in card.inference.items():
        m = card.metrics[task]
        cleanup = ", ".join(x for x in (f"min area {inf['min_area']:g}" if inf["min_area"] else "",
                                        "boxes" if inf["fill_boxes"] else "", "flip TTA" if inf["flip_tta"] else "")
                            if x) or "none"
        table.add_row(task, str(inf["input_size"]), f"{card.thresholds[task]:.2f}", cleanup, str(m["images"]),
                      f"{m['miou']:.3f}", f"{m['dice']:.3f}",
                      f"{m['held_out']['miou']:.3f} ({m['held_out']['images']})")
    out.print(table)


def model_quantize(
    ctx: typer.Context,
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder to add INT8 graphs to.")],
    prepared: PreparedOption = None,
    calibration: Annotated[int, typer.Option(help="Training images that calibrate the quantization.")] = 64,
    max_drop: Annotated[float, typer.Option(help="Validation mIoU a task may lose; more, and nothing is kept.")]
    = 0.005,
    quiet: QuietOption = False,
) -> None:
    """Add INT8 graphs to a checkpoint for CPU inference, kept only if no task's validation mIoU drops by
    --max-drop or more against the fp32 graph; `model.runtime: auto` then runs them.

    Example: qa-daemon model quantize model/weights/compact-v2
    """
    from model.checkpoint import read_card
    from model.quantize import quantize

    config = config_of(ctx)
    read_card(checkpoint)  # a clear error before any work when there is no checkpoint
    q = quantize(checkpoint, config.require("prep.out", prepared or config.prep.out), calibration, max_drop,
                 config.model.batch_size, progress=not quiet)
    table = Table(title=f"{checkpoint}: validation mIoU, fp32 and INT8 graphs ({q.calibration_images} calibration "
                        "images)")
    for col in ("task", "fp32", "int8", "drop"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for task, drop in q.drops.items():
        table.add_row(task, f"{q.fp32[task]:.4f}", f"{q.int8[task]:.4f}", f"{drop:+.4f}")
    out.print(table)
    if q.kept:
        out.print(f"kept: {', '.join(p.name for p in q.paths)} written; model.runtime auto runs them")
    else:
        out.print(f"not kept: a task lost {max_drop} mIoU or more; the checkpoint runs its fp32 graph")
