"""`qa-daemon retrain`: a candidate model from the active one, promoted only if not worse."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from daemon.cli.options import StoreOption, config_of, open_store, out


def retrain(
    ctx: typer.Context,
    steps: Annotated[int | None, typer.Option(help=r"Fine-tuning steps \[config retrain.steps].")] = None,
    store: StoreOption = None,
    request: Annotated[int | None, typer.Option(help="The retrain request this run answers (set by the daemon).",
                                                hidden=True)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Retrain from the active model with the base datasets plus the labeled inbox; promote only if not worse.

    Candidate and active model are scored the same way: each at the threshold it does best at on
    one half of the validation photos (calibration), by mIoU on the other half (gate). The candidate
    is promoted when no task's gate mIoU drops by more than retrain.max_regression. Every version
    stays in the store (`qa-daemon model list`); a running daemon switches to a promoted one between batches.

    Example: qa-daemon retrain --steps 400
    """
    from daemon.app import log_to_stderr
    from daemon.retrain import retrain as run_retrain

    log_to_stderr()  # the daemon's logging: its own lines, not Alembic's set-up chatter
    config = config_of(ctx, store)
    with open_store(config, create=True) as st:
        outcome = run_retrain(config, st, steps=steps, request=request, progress=not quiet)
    table = Table(title=f"candidate {outcome.candidate.parent.name}: "
                        f"{'promoted' if outcome.promoted else 'not promoted'}")
    for col in ("task", "candidate mIoU", "active mIoU", "thresholds", "images (calibration / gate)"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for task, sc in outcome.scores.items():
        table.add_row(task, f"{sc['candidate']:.3f}", f"{sc['active']:.3f}",
                      f"{sc['threshold_candidate']:.2f} / {sc['threshold_active']:.2f}",
                      f"{sc['calibration_images']} / {sc['gate_images']}")
    out.print(table)
    out.print(outcome.reason)
