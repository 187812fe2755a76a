"""Charts and CSV of query results, with nothing fetched from the network.

    kind = chart_kind(["country", "count(*)"], [("France", 4), ("Spain", 2)])   # "bar"
    svg = chart_svg(columns, rows)                                                # inline SVG text, or None

A chart is drawn where it fits: two columns, the second numeric, and

- a **line** when the first holds dates or times (``2024-05-01``, ``2024-05-01 10:00``, a
  ``datetime``) or the first column is named like a year/month/date and holds whole numbers;
- a **bar** when the first holds categories (text, or whole numbers named like ids/grades);
- none otherwise (one row, a single column, no number, more than :data:`MAX_BARS` bars).

The SVG is written by hand (escaped text, no scripts, no external references), so a page with a
strict Content-Security-Policy can show it inline.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import math
import re
from collections.abc import Sequence
from html import escape
from typing import Any

MAX_BARS = 40
MAX_POINTS = 2000
_DATE = re.compile(r"^\d{4}-\d{2}(-\d{2})?([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?([+-]\d{2}:?\d{2}|Z)?$")
_TIME_NAME = re.compile(r"(year|month|date|day|time|week|quarter)", re.IGNORECASE)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _when(v: Any) -> float | None:
    """A date/time value as a sortable number (days since 0001-01-01), else None."""
    if isinstance(v, _dt.datetime):
        return v.toordinal() + (v.hour * 3600 + v.minute * 60 + v.second) / 86400
    if isinstance(v, _dt.date):
        return float(v.toordinal())
    if isinstance(v, str) and _DATE.match(v.strip()):
        text = v.strip()
        try:
            if len(text) == 7:
                return float(_dt.date.fromisoformat(text + "-01").toordinal())
            d = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            return d.toordinal() + (d.hour * 3600 + d.minute * 60 + d.second) / 86400
        except ValueError:
            return None
    return None


def chart_kind(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str | None:
    """``"line"``, ``"bar"`` or None for a result (see the module's rules)."""
    if len(columns) != 2 or len(rows) < 2:
        return None
    xs = [r[0] for r in rows]
    ys = [r[1] for r in rows]
    if any(x is None for x in xs) or not all(_number(y) or y is None for y in ys) or not any(_number(y) for y in ys):
        return None
    if all(_when(x) is not None for x in xs):
        return "line" if len(rows) <= MAX_POINTS else None
    if _TIME_NAME.search(str(columns[0])) and all(isinstance(x, int) and not isinstance(x, bool) for x in xs):
        return "line" if len(rows) <= MAX_POINTS else None
    if len(rows) > MAX_BARS:
        return None
    if all(isinstance(x, str) for x in xs):
        return "bar"
    if all(isinstance(x, int) and not isinstance(x, bool) for x in xs):
        return "bar"
    return None


def _fmt(v: float) -> str:
    if abs(v) >= 1e6 or (v and abs(v) < 1e-3):
        return f"{v:.3g}"
    return f"{v:,.2f}".rstrip("0").rstrip(".") if not float(v).is_integer() else f"{int(v):,}"


def _label(v: Any, n: int = 18) -> str:
    text = str(v)
    return text if len(text) <= n else text[:n - 1] + "…"


def chart_svg(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, width: int = 640, height: int = 320
              ) -> str | None:
    """An inline SVG chart of the result, or None when no chart fits (:func:`chart_kind`)."""
    kind = chart_kind(columns, rows)
    if kind is None:
        return None
    left, right, top, bottom = 64, 16, 28, 72
    pw, ph = width - left - right, height - top - bottom
    pairs = [(r[0], float(r[1])) for r in rows if _number(r[1])]
    ys = [y for _, y in pairs]
    lo, hi = min(0.0, min(ys)), max(0.0, max(ys))
    if hi == lo:
        hi = lo + 1.0

    def y_of(v: float) -> float:
        return top + ph - (v - lo) / (hi - lo) * ph

    title = f"{_label(columns[1], 40)} by {_label(columns[0], 40)}"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{kind}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(kind)} chart: {escape(title)}">',
             f"<title>{escape(title)}</title>",
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
             f'<text x="{left}" y="18" font-family="sans-serif" font-size="13" fill="#222">{escape(title)}</text>']
    for i in range(5):  # grid and y labels
        v = lo + (hi - lo) * i / 4
        y = y_of(v)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e3e3e3"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-family="sans-serif" font-size="11" '
                     f'fill="#555">{escape(_fmt(v))}</text>')
    zero = y_of(0.0)
    if kind == "bar":
        step = pw / len(pairs)
        bw = max(2.0, step * 0.7)
        for i, (x, v) in enumerate(pairs):
            cx = left + step * (i + 0.5)
            y0, y1 = sorted((zero, y_of(v)))
            parts.append(f'<rect class="bar" x="{cx - bw / 2:.1f}" y="{y0:.1f}" width="{bw:.1f}" '
                         f'height="{max(0.5, y1 - y0):.1f}" fill="#3b6ea5"><title>{escape(str(x))}: '
                         f'{escape(_fmt(v))}</title></rect>')
            parts.append(f'<text x="{cx:.1f}" y="{top + ph + 14}" text-anchor="end" font-family="sans-serif" '
                         f'font-size="11" fill="#333" transform="rotate(-35 {cx:.1f} {top + ph + 14})">'
                         f'{escape(_label(x))}</text>')
    else:
        keyed = sorted(((_when(x) if _when(x) is not None else float(x), x, v) for x, v in pairs),
                       key=lambda t: t[0])
        x_lo, x_hi = keyed[0][0], keyed[-1][0]
        span = (x_hi - x_lo) or 1.0

        def x_of(k: float) -> float:
            return left + (k - x_lo) / span * pw

        points = " ".join(f"{x_of(k):.1f},{y_of(v):.1f}" for k, _, v in keyed)
        parts.append(f'<polyline class="line" points="{points}" fill="none" stroke="#3b6ea5" stroke-width="2"/>')
        for k, x, v in keyed if len(keyed) <= 60 else ():
            parts.append(f'<circle cx="{x_of(k):.1f}" cy="{y_of(v):.1f}" r="3" fill="#3b6ea5"><title>'
                         f'{escape(str(x))}: {escape(_fmt(v))}</title></circle>')
        ticks = keyed if len(keyed) <= 8 else [keyed[round(i * (len(keyed) - 1) / 5)] for i in range(6)]
        for k, x, _ in ticks:
            parts.append(f'<text x="{x_of(k):.1f}" y="{top + ph + 14}" text-anchor="end" font-family="sans-serif" '
                         f'font-size="11" fill="#333" transform="rotate(-35 {x_of(k):.1f} {top + ph + 14})">'
                         f'{escape(_label(x))}</text>')
    parts.append(f'<line x1="{left}" y1="{zero:.1f}" x2="{left + pw}" y2="{zero:.1f}" stroke="#888"/>')
    parts.append("</svg>")
    return "".join(parts)


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "0x" + bytes(v).hex()
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r") and not _looks_numeric(v):
        return "'" + v  # no formula runs when a spreadsheet opens the file
    return v


def _looks_numeric(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def result_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """The result as CSV text (a header row, then the rows; blobs as hex, NULL as empty)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([_csv_cell(c) for c in columns])
    for row in rows:
        writer.writerow([_csv_cell(v) for v in row])
    return out.getvalue()
