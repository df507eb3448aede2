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
    wide: Annotated[bool, typer.Option(help="Table of every column (csv and json always have them).")] = False,
    store: StoreOption = None,
) -> None:
    """Trend rows from the results store: photos, cracks (share, length, severity) and taping (share,
    coverage, segments, length).

    Rows are per period and site, by capture day. The table shows the key columns so that it fits an
    80-column terminal; --wide, csv and json have every column. The same figures are in the SQL view
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
        title = f"history by {group_by.value}" + (f", site {site}" if site else "")
        table = history_table(rows, columns, title, wide)
        if wide:  # every column at its full width (the terminal wraps what does not fit), not squeezed into it
            from rich.console import Console

            needed = out.measure(table, options=out.options.update_width(10_000)).maximum
            Console(width=max(out.width, needed)).print(table)
        else:
            out.print(table)


# The table's columns: (key, short header). The default shows the key columns, made to fit 80 columns: each
# length in mm where the site has a scale, else in px, and the four severity counts in one column; --wide
# shows every column of the rows. LEGEND says what the headers mean.
KEY_COLUMNS = (("period", "period"), ("site", "site"), ("photos", "photos"), ("crack_share_pct", "crk%"),
               ("crack_length", "crk len"), ("severity", "h/f/m/w"), ("taping_share_pct", "tape%"),
               ("mean_taping_coverage_pct", "cov%"), ("taping_length", "tape len"))
WIDE_HEADERS = {"photos_with_cracks": "cracked", "crack_share_pct": "crk%", "mean_crack_pct": "area%",
                "crack_length_px": "crk px", "crack_length_mm": "crk mm", "hairline": "h", "fine": "f",
                "medium": "m", "wide": "w", "photos_with_taping": "taped", "taping_share_pct": "tape%",
                "mean_taping_coverage_pct": "cov%", "taping_segments": "segs", "taping_length_px": "tape px",
                "taping_length_mm": "tape mm"}
LEGEND = ("crk%: share of photos with cracks; crk len: crack length (mm where the site has a scale, else px); "
          "h/f/m/w: photos by severity (hairline, fine, medium, wide), — without a scale; tape%: share of photos "
          "with taping; cov%: mean taping coverage; tape len: taped length. More columns: --wide, csv, json.")
WIDE_LEGEND = ("cracked: photos with cracks, crk%: their share; area%: mean crack area; crk: crack length; "
               "h, f, m, w: photos by severity (hairline, fine, medium, wide); taped: photos with taping, "
               "tape%: their share; cov%: mean taping coverage; segs: taped segments; tape: taped length")


def _cell(value) -> str:
    """A figure as the table shows it: whole numbers with thousands separators from 1,000 up, never 1e+06."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _length(mm: float | None, px: float | None) -> str:
    """A length in at most 8 characters: mm, or m from a metre; else px, in k or M from 10,000."""
    if mm is not None:
        return f"{mm:.0f} mm" if mm < 1000 else f"{mm / 1000:,.1f} m" if mm < 100_000 else f"{mm / 1000:,.0f} m"
    if px is None:
        return "—"
    return f"{px:,.0f} px" if px < 10_000 else f"{px / 1000:.0f}k px" if px < 1e6 else f"{px / 1e6:.1f}M px"


def _key_cell(row: dict, key: str) -> str:
    """A cell of the default table, short: the derived columns are worked out from the row, shares and
    means have one decimal (csv and json have them whole)."""
    from daemon.summary import SEVERITIES

    value = row.get(key)
    if key in ("crack_length", "taping_length"):
        return _length(row.get(f"{key}_mm"), row.get(f"{key}_px"))
    if key == "severity":  # zeros would say "no cracks" where the site has no scale to class them
        return "—" if row.get("crack_length_mm") is None else "/".join(_cell(row[s]) for s in SEVERITIES)
    if isinstance(value, float):
        return f"{value:.1f}".removesuffix(".0")
    return _cell(value)


def history_table(rows: list[dict], columns: list[str], title: str, wide: bool = False) -> Table:
    table = Table(title=title, caption=WIDE_LEGEND if wide else LEGEND, box=None, padding=(0, 1),
                  collapse_padding=True, pad_edge=False, show_edge=False, caption_justify="left")
    if wide:
        shown = [(c, WIDE_HEADERS.get(c, c)) for c in columns]
    else:  # the key columns these rows have (--prompt keeps one task's)
        present = set(columns) | {c[:-3] for c in columns if c.endswith("_mm")}
        present |= {"severity"} if "hairline" in columns else set()
        shown = [(key, header) for key, header in KEY_COLUMNS if key in present]
    for key, header in shown:
        table.add_column(header, justify="left" if key in ("period", "site") else "right", no_wrap=True)
    for r in rows:
        table.add_row(*(_cell(r.get(key)) if wide else _key_cell(r, key) for key, _ in shown))
    return table


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} {value}: not a day; write YYYY-MM-DD, e.g. {option} 2026-11-24") from None
