"""`qa-daemon predict`: masks of single photos or folders, without the daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daemon.cli.options import CheckpointOption, DeviceOption, config_of, err, out


def predict(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Images or folders of images.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Where masks are written.")],
    prompt: Annotated[list[str] | None, typer.Option(help=r"Prompt(s) \[both canonical prompts].")] = None,
    overlay: Annotated[bool, typer.Option(help="Also write `{image_id}__overlay.jpg`.")] = False,
    checkpoint: CheckpointOption = None,
    device: DeviceOption = None,
) -> None:
    """Write `{image_id}__{prompt}.png` masks ({0,255}, the source's size) for each image.

    The prompt's spaces become underscores: IMG_0001__segment_crack.png. Each image is encoded
    once for all prompts. Unreadable files are reported and skipped.

    Example: qa-daemon predict site/IMG_0001.jpg --out out/ --overlay
    """
    from rich.progress import track

    from model.checkpoint import load_checkpoint, read_card
    from model.masks import export_masks, find_images
    from model.prompts import resolve_prompts, teach

    config = config_of(ctx)
    ckpt = checkpoint or config.model.checkpoint
    images, problems = find_images(paths)
    prompts = prompt or list(config.prompts.canonical.values())
    resolved = resolve_prompts(prompts, read_card(ckpt).prompts, config.prompts.by_task)
    model, _ = load_checkpoint(ckpt, device or config.model.device, config.model.runtime,
                               config.model.compiled_cache)
    teach(model, resolved)  # a paraphrase runs as its task's canonical prompt, masks keep its words
    written = 0
    exported = export_masks(model, images, out_dir, prompts, batch_size=config.model.batch_size,
                            with_overlay=overlay, problems=problems)
    for _ in track(exported, description="predicting", total=len(images), console=err):
        written += 1
    for p in problems:
        err.print(f"warning: {p}", highlight=False, markup=False)
    out.print(f"{written} images, {written * len(prompts)} masks written to {out_dir}"
              + (f"; {len(problems)} skipped" if problems else ""))
    if not written and problems:
        raise typer.Exit(1)
