"""`qa-daemon model list`, `promote` and `rollback`: the model versions in the store."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from daemon.cli.options import StoreOption, config_of, open_store, out

if TYPE_CHECKING:
    from daemon.store import ModelVersion, Store


def model_list(
    ctx: typer.Context,
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every model version the store knows, with its status and validation metrics.

    Example: qa-daemon model list
    """
    import json

    with open_store(config_of(ctx, store)) as st:
        versions = st.models.versions()
    rows = [{"id": v.id, "name": v.name, "status": v.status, "active": v.active, "backend": v.backend,
             "registered": v.registered_at.isoformat(timespec="seconds"),
             "promoted": v.promoted_at.isoformat(timespec="seconds") if v.promoted_at else None,
             "metrics": json.loads(v.metrics or "{}"), "path": v.path} for v in versions]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title="model versions")
    for col in ("id", "name", "status", "registered", "promoted", "gate mIoU (vs active)", "path"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["id"]), r["name"], r["status"] + (" *" if r["active"] else ""), r["registered"],
                      r["promoted"] or "", _gate_cell(r["metrics"]), r["path"])
    out.print(table)


def _gate_cell(metrics: dict) -> str:
    """A version's retrain scores in a few words: `crack 0.612 vs 0.580 (cal 100 / gate 100)` per task."""
    if "gate" not in metrics:  # registered at start-up, or by a retrain before the calibrated gate
        return " ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, int | float))
    if not metrics["gate"]:
        return "not scored (no gate images)"
    cal, n = metrics.get("calibration_images", {}), metrics.get("gate_images", {})
    return "; ".join(f"{t} {g['candidate']:.3f} vs {g['active']:.3f} (cal {cal.get(t, 0)} / gate {n.get(t, 0)})"
                     for t, g in metrics["gate"].items())


def model_promote(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Version id or name (see `qa-daemon model list`).")],
    store: StoreOption = None,
) -> None:
    """Make a version the active one; a running daemon switches to it between batches.

    Example: qa-daemon model promote 3
    """
    _change_active(ctx, store, lambda st: st.models.promote(version))


def model_rollback(ctx: typer.Context, store: StoreOption = None) -> None:
    """Make the version promoted before the active one active again.

    Example: qa-daemon model rollback
    """
    _change_active(ctx, store, lambda st: st.models.rollback(), "rolled back; ")


def _change_active(ctx: typer.Context, store: str | None, change: Callable[[Store], ModelVersion],
                   what: str = "") -> None:
    with open_store(config_of(ctx, store)) as st:
        mv = change(st)
    out.print(f"{what}active model: {mv.name} (version {mv.id}, {mv.path})")
