"""`qa-daemon report` and `history`: what the store holds, as HTML reports and as trend rows."""

from __future__ import annotations

import sys
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from daemon.cli.options import StoreOption, config_of, open_store, out
from daemon.config import ConfigError


class GroupBy(StrEnum):
    day = "day"
    week = "week"
    month = "month"


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def report(
    ctx: typer.Context,
    day: Annotated[str | None, typer.Option("--date", help=r"Day to report, YYYY-MM-DD \[today].")] = None,
    site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", "-o", help=r"Folder \[config schedule.reports_dir].")] = None,
    self_contained: Annotated[bool, typer.Option(help="Inline thumbnails so the file can be mailed.")] = False,
    weekly: Annotated[bool, typer.Option(help="The week (Monday to Sunday) that holds --date.")] = False,
    store: StoreOption = None,
) -> None:
    """Render the HTML QA report of a day (photos by capture day), and the index of all reports.

    Example: qa-daemon report --date 2026-11-24 --site tower-a --self-contained
    """
    from daemon.days import week_start
    from daemon.summary import write_report

    config = config_of(ctx, store)
    start = _day(day, "--date") or date.today()
    end = start
    if weekly:
        start = week_start(start)
        end = start + timedelta(days=6)
    with open_store(config) as st:
        path = write_report(st, "weekly" if weekly else "daily", start, end, out_dir or config.schedule.reports_dir,
                            site=site, self_contained=self_contained)
    out.print(f"report: {path}")


def history(
    ctx: typer.Context,
    site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
    since: Annotated[str | None, typer.Option(help="From this capture day, YYYY-MM-DD.")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this capture day, YYYY-MM-DD.")] = None,
    group_by: Annotated[GroupBy, typer.Option(help="Row per day, week or month.")] = GroupBy.day,
    prompt: Annotated[str | None, typer.Option(help="Only this prompt's figures (or a synonym).")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
    store: StoreOption = None,
) -> None:
    """Trend rows from the results store: photos, share with cracks, mean crack %, crack length, severity.

    Rows are per period and site, by capture day. The same figures are in the SQL view
    daily_site_summary for any SQL tool (docs/store.md: "Querying the history with SQL").

    Example: qa-daemon history --site tower-a --group-by week --format csv
    """
    import csv
    import json

    from daemon.summary import history as trend_rows

    config = config_of(ctx, store)
    task = None
    if prompt is not None:
        task = config.task_of_prompt(prompt)
        if task is None:
            known = ", ".join(config.prompts.canonical.values())
            raise ConfigError(f"--prompt {prompt!r}: not a configured prompt or synonym; use one of {known}")
    with open_store(config) as st:
        rows = trend_rows(st, site, _day(since, "--since"), _day(until, "--until"), group_by.value, task)
    columns = list(rows[0]) if rows else ["period", "site", "photos"]
    if fmt == Format.json:
        print(json.dumps(rows))
    elif fmt == Format.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        out.print(history_table(rows, columns, f"history by {group_by.value}" + (f", site {site}" if site else "")))


# short headers (LEGEND says what they are) and the four severity counts in one column: a row fits 80 columns
HEADERS = {"photos_with_cracks": "cracked", "crack_share_pct": "crk%", "mean_crack_pct": "area%",
           "crack_length_px": "len px", "crack_length_mm": "len mm", "mean_taping_coverage_pct": "tape%"}
LEGEND = ("cracked: photos with cracks, crk%: their share; area%: mean crack area; len: crack length; "
          "h/f/m/w: photos by severity (hairline, fine, medium, wide); tape%: mean taping coverage")


def history_table(rows: list[dict], columns: list[str], title: str) -> Table:
    from daemon.summary import SEVERITIES

    def cell(value) -> str:
        return "—" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    severities = SEVERITIES[0] in columns
    table = Table(title=title, caption=LEGEND, box=None, padding=(0, 1), collapse_padding=True, pad_edge=False,
                  show_edge=False, caption_justify="left")
    shown = [c for c in columns if c not in SEVERITIES]
    for col in shown:
        table.add_column(HEADERS.get(col, col), justify="left" if col in ("period", "site") else "right", no_wrap=True)
        if col == "crack_length_mm" and severities:
            table.add_column("h/f/m/w", justify="right", no_wrap=True)
    for r in rows:
        cells = []
        for col in shown:
            cells.append(cell(r[col]))
            if col == "crack_length_mm" and severities:
                cells.append("/".join(cell(r[s]) for s in SEVERITIES))
        table.add_row(*cells)
    return table


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} {value}: not a day; write YYYY-MM-DD, e.g. {option} 2026-11-24") from None
