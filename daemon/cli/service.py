"""`qa-daemon run` and `status`: the daemon itself, and what it is doing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from daemon.cli.options import JsonOption, StoreOption, config_of, out


def run(
    ctx: typer.Context,
    watch: Annotated[list[Path] | None, typer.Option(
        "--watch", "-w", help=r"Folder to watch; repeat for several \[config watch.roots].")] = None,
    store: StoreOption = None,
    outputs: Annotated[Path | None, typer.Option(
        help=r"Where masks and overlays go \[config outputs.dir].")] = None,
    polling: Annotated[bool | None, typer.Option(
        "--polling/--events", help=r"Poll the folders (network shares) or use OS events \[config watch.polling].",
        show_default=False)] = None,
) -> None:
    """Run the daemon: watch the incoming folders, segment every new photo with both prompts, store the results.

    Photos go in `<root>/<site>/<location>/` (watch.layout). Each is taken once it has stopped
    changing and decodes fully, identified by its content (a duplicate under another name is
    recorded, not processed again), segmented, measured and recorded in the store; masks and an
    overlay go to `<outputs>/<site>/<capture date>/`. Files that keep failing go to the quarantine
    folder with a `.error.txt`. Stop with Ctrl-C or SIGTERM: the photos in hand are finished.

    Example: qa-daemon run --watch ~/site-photos
    """
    from daemon.app import App, log_to_stderr

    config = config_of(ctx).with_overrides(store=store, watch=watch, polling=polling, outputs=outputs)
    log_to_stderr()
    code = App(config).run()
    if code:
        raise typer.Exit(code)


TABLE_FILES = 20  # files not taken yet listed under the table; --json lists more


def status(ctx: typer.Context, store: StoreOption = None, as_json: JsonOption = False) -> None:
    """Show whether the daemon runs, its queue (processed, pending, failed, duplicates), the model, recent failures.

    Files seen but not taken yet are counted and listed too: `settling` (still being copied, or not yet
    unchanged for watch.settle_s) and `waiting` (empty, truncated or not decoding yet: retried, and
    quarantined after watch.max_attempts and watch.incomplete_after_s).

    Example: qa-daemon status --json
    """
    import json

    from daemon.status import status as daemon_status

    state = daemon_status(config_of(ctx, store))
    if as_json:
        print(json.dumps(state))
        return
    table = Table(title=f"qa-daemon: {'running' if state['running'] else 'not running'}", show_header=False)
    for key in ("paused", "processed", "processed_today", "pending", "settling", "waiting", "failed", "missing",
                "lost", "duplicates", "model", "store"):
        if key not in ("paused", "lost") or state[key]:
            table.add_row(key.replace("_", " "), str(state[key]))
    if state["last_scrub"]:
        table.add_row("last scrub", f"{state['last_scrub']['at'][:16].replace('T', ' ')} UTC: "
                                    f"{state['last_scrub']['outcome']}")
    out.print(table)
    print_not_taken(state)
    if state["recent_failures"]:  # under a heading of their own, apart from the table's border
        out.print("\nrecent failures:", highlight=False)
    for f in state["recent_failures"]:
        out.print(f"  {f['at']}  {f['path']}: {f['error']}" + (f" -> {f['quarantined_to']}" if f["quarantined_to"]
                                                              else ""), highlight=False, markup=False, soft_wrap=True)


def print_not_taken(state: dict) -> None:
    """The files seen but not taken yet, under a heading of their own below the table: waiting ones (and why)
    first."""
    files = state["waiting_files"]
    if files:
        out.print("\nfiles not taken yet:", highlight=False)
    for f in files[:TABLE_FILES]:
        since = f["since"][:19].replace("T", " ")
        why = (f"waiting: {f['error']} ({f['attempts']} attempt{'s' * (f['attempts'] > 1)}, since {since})"
               if f["state"] == "waiting" else f"settling (since {since})")
        out.print(f"  {f['path']}: {why}", highlight=False, markup=False, soft_wrap=True)
    more = state["settling"] + state["waiting"] - min(len(files), TABLE_FILES)
    if files and more > 0:
        out.print(f"  ... and {more} more ({len(files)} listed by `qa-daemon status --json`)", highlight=False,
                  markup=False)
