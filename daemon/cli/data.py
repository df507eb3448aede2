"""`qa-daemon prep`: the labeled datasets as masks and a leakage-free manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from daemon.cli.options import QuietOption, config_of, err, out


def prep(
    ctx: typer.Context,
    data: Annotated[list[str] | None, typer.Option(
        "--data", "-d", metavar="[NAME=]DIR",
        help="Export folder replacing a configured dataset's root; matched by NAME=, by folder "
             "name, or by order. Repeat for each dataset.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help=r"Prepared folder \[config prep.out].")] = None,
    quiet: QuietOption = False,
) -> None:
    """Prepare the labeled datasets: {0,255} masks per image and task, and a leakage-free manifest.csv.

    Every augmented copy of a photo (Roboflow's `<stem>.rf.<hash>.jpg`) lands in one split.
    Bad files are reported and skipped. Re-running only redoes what changed.

    Example: qa-daemon prep --data ../shared/datasets/cracks.v1i.voc --out /tmp/prep
    """
    from model.prep import MANIFEST, PROBLEMS, prepare

    config = config_of(ctx)
    sources = config.sources(data)
    target = out_dir or config.prep.out
    result = prepare(sources, target, config.prompts.canonical, config.split_policy(), progress=not quiet)

    table = Table(title=f"Prepared {len(result.rows)} image masks in {target}")
    for col in ("task", "split", "images", "stems", "objects", "mean mask area"):
        table.add_column(col, justify="left" if col in ("task", "split") else "right")
    for s in result.summary():
        table.add_row(s["task"], s["split"], str(s["images"]), str(s["stems"]), str(s["objects"]),
                      f"{s['mean_mask_area']:.2%}")
    out.print(table)
    for m in result.moves:
        out.print(f"moved {m.files} files ({m.stems} stems) of {m.dataset} from {m.source_split} "
                  f"to {m.split}: {m.reason}")
    if result.problems:
        for p in result.problems[:20]:
            err.print(f"[yellow]warning[/]: {p}", highlight=False, markup=True)
        more = len(result.problems) - 20
        err.print(f"{len(result.problems)} problems{f' ({more} not shown)' if more > 0 else ''}; "
                  f"all listed in {target / PROBLEMS}")
    out.print(f"manifest: {target / MANIFEST} ({result.decoded} images decoded this run)")
