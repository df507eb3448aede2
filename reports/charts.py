"""Inline SVG charts for the HTML reports (trend lines, distribution bars), in pure Python (no JavaScript, no
plotting library).

    from reports.charts import bar_chart, line_chart
    svg = line_chart([("2026-11-23", 4), ("2026-11-24", None), ("2026-11-25", 6)], "Photos per day", "photos")
    # -> Markup('<svg ...>...</svg>'): place it as is in an autoescaped Jinja template
    bars = bar_chart([("<5", 12), ("5–10", 30), ("≥10", 4)], "Photos by taping coverage", "% of photo")

The markup is built only from numbers formatted here and from text passed through
`markupsafe.escape`, so a title or a day label holding HTML cannot break out of the chart.
A value of None (or NaN, or anything that is not a number) leaves a gap in the line: an
unknown day is never drawn as a zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from markupsafe import Markup, escape

# room around the plot for the title (top), the y labels (left) and the first/last day (bottom)
LEFT, RIGHT, TOP, BOTTOM = 46, 16, 30, 24
GRIDLINES = 4  # at most this many steps between the lowest and highest gridline
LINE, GRID, AXIS, TEXT = "#1f5fa8", "#d9dde3", "#6b7280", "#374151"


def finite(v: object) -> float | None:
    """A finite float, or None for a gap (missing, NaN, infinite, a bool or not a number)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _n(x: float) -> str:
    """A coordinate, rounded to keep the markup small and stable."""
    return f"{x:.1f}"


def nice_step(span: float, steps: int = GRIDLINES) -> float:
    """The smallest 1, 2 or 5 times a power of ten that covers `span` in at most `steps` steps."""
    raw = span / steps
    power = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 5):
        if m * power >= raw * (1 - 1e-9):
            return m * power
    return 10 * power


def _label(v: float, step: float) -> str:
    """A gridline label with just enough decimals to tell the gridlines apart."""
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{v:,.{decimals}f}"


def _scale(values: list[float]) -> tuple[float, float, float]:
    """(lowest, highest, step) of the y axis: zero is always shown, the ends fall on gridlines."""
    low, high = min([0.0, *values]), max([0.0, *values])
    if high == low:
        high = low + 1.0
    step = nice_step(high - low)
    if all(v == int(v) for v in values):  # counts: no gridline at half a photo
        step = max(step, 1.0)
    return step * math.floor(low / step + 1e-9), step * math.ceil(high / step - 1e-9), step


def _exact(v: float) -> str:
    """A value as read on hover: up to two decimals, no trailing zeros."""
    return f"{v:,.2f}".rstrip("0").rstrip(".")


def _runs(ys: list[float | None]) -> list[list[tuple[int, float]]]:
    """The unbroken stretches of known values, as (index, value) pairs."""
    runs: list[list[tuple[int, float]]] = []
    for i, y in enumerate(ys):
        if y is None:
            continue
        if runs and runs[-1][-1][0] == i - 1:
            runs[-1].append((i, y))
        else:
            runs.append([(i, y)])
    return runs


class _Frame:
    """What both charts share: the SVG element, title, unit, y gridlines with labels, the axes, and the
    mapping of values to heights. `parts` collects the markup; `close()` ends it."""

    def __init__(self, ys: list[float | None], title: str, unit: str, desc: str, width: int, height: int):
        if width < LEFT + RIGHT + 40 or height < TOP + BOTTOM + 40:
            raise ValueError(f"chart size {width}x{height} is too small; use at least "
                             f"{LEFT + RIGHT + 40}x{TOP + BOTTOM + 40}")
        self.known = [y for y in ys if y is not None]
        self.height = height
        self.x0, self.x1, self.y0, self.y1 = LEFT, width - RIGHT, height - BOTTOM, TOP  # y grows downwards in SVG
        self.low, self.high, step = _scale(self.known)
        heading = f"{title} ({unit})" if unit else title
        x0, x1, y0, y1 = self.x0, self.x1, self.y0, self.y1
        self.parts = [
            f'<svg class="chart" role="img" aria-label="{escape(heading)}" viewBox="0 0 {width} {height}" '
            f'xmlns="http://www.w3.org/2000/svg" font-size="11" preserveAspectRatio="xMidYMid meet">',
            f"<title>{escape(heading)}</title><desc>{escape(desc)}</desc>",
            f'<text x="{x0}" y="16" fill="{TEXT}" font-size="12" font-weight="600">{escape(title)}</text>',
            f'<text x="{x0 - 6}" y="16" text-anchor="end" fill="{AXIS}" font-size="10">{escape(unit)}</text>',
        ]
        for k in range(round((self.high - self.low) / step) + 1):
            v = self.low + k * step
            y = _n(self.y_at(v))
            self.parts.append(f'<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="{GRID}" stroke-width="1"/>')
            self.parts.append(f'<text x="{x0 - 6}" y="{y}" dy="0.32em" text-anchor="end" fill="{TEXT}">'
                              f"{escape(_label(v, step))}</text>")
        self.parts.append(f'<polyline points="{x0},{y1} {x0},{y0} {x1},{y0}" fill="none" stroke="{AXIS}" '
                          f'stroke-width="1"/>')

    def y_at(self, v: float) -> float:
        return self.y0 - (v - self.low) * (self.y0 - self.y1) / (self.high - self.low)

    def label(self, x: float, text: str, anchor: str = "middle") -> None:
        """A label under the x axis."""
        self.parts.append(f'<text x="{_n(x)}" y="{self.height - 6}" text-anchor="{anchor}" fill="{TEXT}">'
                          f"{escape(text)}</text>")

    def close(self) -> Markup:
        if not self.known:
            self.parts.append(f'<text x="{_n((self.x0 + self.x1) / 2)}" y="{_n((self.y0 + self.y1) / 2)}" '
                              f'text-anchor="middle" fill="{AXIS}">No data</text>')
        return Markup("".join(self.parts) + "</svg>")


def line_chart(points: Sequence[tuple[str, float | None]], title: str, unit: str,
               width: int = 640, height: int = 160) -> Markup:
    """An SVG line chart of (label, value) points, oldest first, with y gridlines and the first and last label.

    The chart scales to its container's width (viewBox); `width` and `height` set its proportions.
    """
    labels = [str(label) for label, _ in points]
    ys = [finite(v) for _, v in points]
    known = [y for y in ys if y is not None]
    desc = (f"{len(ys)} points from {labels[0]} to {labels[-1]}; last known value "
            f"{_exact(known[-1]) if known else 'none'}") if ys else "no points"
    f = _Frame(ys, title, unit, desc, width, height)

    def x_at(i: int) -> float:
        return (f.x0 + f.x1) / 2 if len(ys) == 1 else f.x0 + i * (f.x1 - f.x0) / (len(ys) - 1)

    if len(labels) == 1:
        f.label(x_at(0), labels[0])
    elif labels:
        f.label(f.x0, labels[0], "start")
        f.label(f.x1, labels[-1], "end")
    for run in _runs(ys):
        if len(run) > 1:
            coords = " ".join(f"{_n(x_at(i))},{_n(f.y_at(y))}" for i, y in run)
            f.parts.append(f'<polyline points="{coords}" fill="none" stroke="{LINE}" stroke-width="2" '
                           f'stroke-linejoin="round" stroke-linecap="round"/>')
        for i, y in run:  # a dot per known day, so a day between two gaps still shows; hover shows its value
            f.parts.append(f'<circle cx="{_n(x_at(i))}" cy="{_n(f.y_at(y))}" r="2.2" fill="{LINE}">'
                           f"<title>{escape(labels[i])}: {escape(_exact(y))}</title></circle>")
    return f.close()


def bar_chart(bars: Sequence[tuple[str, float | None]], title: str, unit: str,
              width: int = 360, height: int = 170) -> Markup:
    """An SVG bar chart of (label, value) bars, left to right, each labelled below: a distribution's classes.

    Like `line_chart`: it scales to its container, zero is always shown, text is escaped, None is no bar."""
    labels = [str(label) for label, _ in bars]
    ys = [finite(v) for _, v in bars]
    desc = "; ".join(f"{label}: {'none' if y is None else _exact(y)}" for label, y in zip(labels, ys, strict=True))
    f = _Frame(ys, title, unit, desc or "no bars", width, height)
    slot = (f.x1 - f.x0) / max(1, len(ys))
    for i, (label, y) in enumerate(zip(labels, ys, strict=True)):
        middle = f.x0 + (i + 0.5) * slot
        f.label(middle, label)
        if y:  # a bar from zero, up or down; none for 0 or None
            top, bottom = sorted((f.y_at(y), f.y_at(0.0)))
            f.parts.append(f'<rect x="{_n(middle - slot * 0.35)}" y="{_n(top)}" width="{_n(slot * 0.7)}" '
                           f'height="{_n(bottom - top)}" fill="{LINE}"><title>{escape(label)}: {escape(_exact(y))}'
                           f"</title></rect>")
    return f.close()
