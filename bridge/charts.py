"""Server-rendered SVG charts for the status page: no script, no CDN, readable in grey.

Every chart is an <svg role="img"> with a <title> and <desc>, bars carry their own <title>
and series differ by pattern (solid, hatched, dotted) and by printed labels, never by
colour alone; the page puts a table of the same figures next to each chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 34, 28, 30
INK, MUTED = "#1d2230", "#5b6272"
_PATTERNS = (
    '<pattern id="{p}-hatch" width="6" height="6" patternUnits="userSpaceOnUse"'
    ' patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff"/>'
    '<line x1="0" y1="0" x2="0" y2="6" stroke="#b5541b" stroke-width="3"/></pattern>'
    '<pattern id="{p}-dots" width="5" height="5" patternUnits="userSpaceOnUse">'
    '<rect width="5" height="5" fill="#fff"/><circle cx="2.5" cy="2.5" r="1.4" fill="#7a2a8a"/>'
    '</pattern>'
)
FILLS = {"solid": "#12372a", "hatch": "url(#{p}-hatch)", "dots": "url(#{p}-dots)"}


@dataclass(frozen=True, slots=True)
class Series:
    """One named series of a bar chart and how it is drawn (solid, hatch or dots)."""

    label: str
    values: Sequence[float]
    fill: str = "solid"


def _open(chart_id: str, title: str, desc: str, height: int = HEIGHT) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}"'
            f' role="img" aria-labelledby="{chart_id}-t {chart_id}-d" class="chart"'
            f' id="{chart_id}" preserveAspectRatio="xMinYMin meet">',
            f'<title id="{chart_id}-t">{escape(title)}</title>',
            f'<desc id="{chart_id}-d">{escape(desc)}</desc>',
            "<defs>" + _PATTERNS.format(p=chart_id) + "</defs>"]


def _fill(chart_id: str, kind: str) -> str:
    return FILLS[kind].format(p=chart_id)


def _legend(chart_id: str, series: Sequence[Series], extra: str = "") -> str:
    """The key, flush with the right edge: a narrow screen opens a chart at its newest end,
    so the key is in view there (and above the plot on a wide one)."""
    widths = [30 + 7 * len(s.label) for s in series]
    x = max(LEFT, WIDTH - RIGHT - sum(widths) - (7 * len(extra) if extra else 0))
    parts = []
    for s, width in zip(series, widths, strict=True):
        parts.append(f'<rect x="{x}" y="6" width="14" height="12" fill="{_fill(chart_id, s.fill)}"'
                     f' stroke="{INK}" stroke-width="0.8"/><text x="{x + 19}" y="16"'
                     f' font-size="12" fill="{INK}">{escape(s.label)}</text>')
        x += width
    if extra:
        parts.append(f'<text x="{x}" y="16" font-size="12" fill="{INK}">{escape(extra)}</text>')
    return "".join(parts)


def _scale_top(peak: float) -> float:
    """A round axis maximum at or above `peak` (1, 2 or 5 times a power of ten)."""
    top = 1.0
    while True:
        for step in (1, 2, 5):
            if top * step >= peak:
                return top * step
        top *= 10


def bars(chart_id: str, title: str, desc: str, labels: Sequence[str],
         series: Sequence[Series], *, tick_every: int = 1,
         limit: float | None = None, limit_label: str = "") -> Markup:
    """Grouped vertical bars, one group per label, with an optional dashed limit line."""
    peak = max([*(v for s in series for v in s.values), limit or 0, 1])
    top = _scale_top(peak)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    group = plot_w / max(len(labels), 1)
    bar = max(group * 0.8 / max(len(series), 1), 1.0)
    out = _open(chart_id, title, desc)
    out.append(_legend(chart_id, series, limit_label))
    for frac in (0, 0.5, 1):  # the scale on both sides: either end may be the one in view
        y = TOP + plot_h * (1 - frac)
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"'
                   f' stroke="#d5d9e0"/><text x="{LEFT - 4}" y="{y + 4:.1f}" font-size="11"'
                   f' text-anchor="end" fill="{MUTED}">{_num(top * frac)}</text>'
                   f'<text x="{WIDTH - 2}" y="{y + 4:.1f}" font-size="11" text-anchor="end"'
                   f' fill="{MUTED}">{_num(top * frac)}</text>')
    for i, label in enumerate(labels):
        x0 = LEFT + i * group + group * 0.1
        for j, s in enumerate(series):
            value = s.values[i]
            h = plot_h * value / top
            out.append(f'<rect x="{x0 + j * bar:.1f}" y="{TOP + plot_h - h:.1f}"'
                       f' width="{bar:.1f}" height="{h:.1f}" fill="{_fill(chart_id, s.fill)}"'
                       f' stroke="{INK}" stroke-width="{0.5 if h else 0}">'
                       f'<title>{escape(label)}: {_num(value)} {escape(s.label)}</title></rect>')
        if (len(labels) - 1 - i) % tick_every == 0:  # counted from the newest: it is labelled
            out.append(f'<text x="{x0:.1f}" y="{HEIGHT - BOTTOM + 14}" font-size="11"'
                       f' fill="{MUTED}">{escape(label)}</text>')
    if limit is not None:
        y = TOP + plot_h * (1 - limit / top)
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"'
                   f' stroke="#a4380b" stroke-width="2" stroke-dasharray="6 4" class="limit">'
                   f'<title>{escape(limit_label)}</title></line>')
    out.append("</svg>")
    return Markup("".join(out))


def hbars(chart_id: str, title: str, desc: str,
          rows: Sequence[tuple[str, float, str, str]]) -> Markup:
    """Horizontal bars, one per row: (name, value, printed value, fill kind)."""
    height = TOP + 26 * max(len(rows), 1) + 6
    peak = max([value for _, value, _, _ in rows] + [1])
    plot_w = WIDTH - 170 - 150
    out = _open(chart_id, title, desc, height)
    for i, (name, value, shown, fill) in enumerate(rows):
        y = TOP - 18 + 26 * i
        w = plot_w * value / peak
        out.append(f'<text x="160" y="{y + 15}" font-size="12" text-anchor="end"'
                   f' fill="{INK}">{escape(name)}</text>'
                   f'<rect x="170" y="{y + 2}" width="{w:.1f}" height="18"'
                   f' fill="{_fill(chart_id, fill)}" stroke="{INK}" stroke-width="0.6">'
                   f'<title>{escape(name)}: {escape(shown)}</title></rect>'
                   f'<text x="{176 + w:.1f}" y="{y + 15}" font-size="12"'
                   f' fill="{INK}">{escape(shown)}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def hour_labels(first_hour: int, hours: int, tz: tzinfo | None) -> list[str]:
    """When each of `hours` unix hours from `first_hour` began, 'HH:MM' in the page's zone:
    '12:30' in Asia/Kolkata (UTC+05:30), where 'HH:00' named the hour before."""
    return [datetime.fromtimestamp((first_hour + i) * 3600, UTC).astimezone(tz).strftime("%H:%M")
            for i in range(hours)]
