"""`qa-daemon backup`: a consistent copy of the SQLite store, taken while the daemon runs; `qa-daemon scrub`:
every result's files checked on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daemon.cli.options import JsonOption, QuietOption, StoreOption, config_of, open_store, out


def backup(
    ctx: typer.Context,
    to: Annotated[Path, typer.Option("--out", "-o", help="The backup file to write.")],
    store: StoreOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Copy the SQLite store to one file, safely while the daemon writes, and check the copy.

    The copy is the store as it was when the backup began; it is verified with `PRAGMA
    integrity_check` before it takes the name --out. Restore: stop the daemon, put the file in
    place of the store (docs/store.md). For PostgreSQL use `pg_dump`.

    Example: qa-daemon backup --out /backups/qa-2026-11-30.sqlite3
    """
    from daemon.store.backup import backup as copy  # SQLAlchemy: not for `--help`

    b = copy(config_of(ctx, store).store.url, to, force=force)
    out.print(f"backed up to {b.path}: {b.photos} photos ({b.done} done), {b.detections} detections, "
              f"schema {b.schema}, integrity ok, {b.bytes / 2**20:.1f} MB in {b.seconds:.1f} s",
              highlight=False, markup=False, soft_wrap=True)


def scrub(
    ctx: typer.Context,
    fix: Annotated[bool, typer.Option("--fix", help="Queue damaged photos again from their sources; record the "
                                      "ones whose source is gone as lost. Without it: report only.")] = False,
    days: Annotated[float | None, typer.Option("--days", min=0, help="Only results written in the last DAYS "
                                               "days. \\[default: all]")] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Check that every processed photo's masks and overlay exist and read whole; with --fix, repair.

    A photo whose results are missing, cut short or corrupted is queued again when its source is
    still there (a running daemon re-makes it within a second), and recorded `lost`, with the
    reason, when the source is gone. What retention deleted on purpose is skipped. The daemon
    runs the same check at start (`schedule.scrub_startup_days`) and weekly (`schedule.scrub`).

    Example: qa-daemon scrub --fix
    """
    import json
    from datetime import timedelta

    from rich.progress import Progress

    from daemon.scrub import scrub as check  # SQLAlchemy and Pillow: not for `--help`
    from daemon.store import worker_name
    from daemon.store.schema import utcnow

    config = config_of(ctx, store)
    since = utcnow() - timedelta(days=days) if days is not None else None
    with open_store(config) as st, Progress(disable=quiet or as_json, console=out, transient=True) as bar:
        task = bar.add_task("checking results", total=st.queue.results_count(since))
        slot = f"cli {utcnow().isoformat(timespec='seconds')}"
        st.runs.claim("scrub", slot, worker_name())
        found = check(st, fix=fix, since=since, progress=lambda n: bar.advance(task, n))
        st.runs.finish("scrub", slot, found.summary())
    if as_json:
        print(json.dumps({"checked": found.checked, "remade": found.remade, "lost": found.lost,
                          "seconds": round(found.seconds, 2), "fixed": fix,
                          "damaged": [{"photo_id": d.photo_id, "source": str(d.source), "reason": d.reason,
                                       "action": d.action} for d in found.damaged]}))
        return
    for d in found.damaged:
        out.print(f"  {d.source}: {d.reason.removeprefix('scrub: ')} [{d.action}]", highlight=False, markup=False,
                  soft_wrap=True)
    out.print(found.summary(), highlight=False, markup=False)
