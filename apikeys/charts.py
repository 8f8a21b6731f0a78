"""Geometry of the server-rendered usage chart (templates/apikeys/_usage_chart.html).

The chart is an inline SVG drawn from numbers computed here: no JavaScript, and no
`style` attribute (the CSP forbids them), only SVG presentation attributes for positions
and CSS classes for colours (static/apikeys/usage.css). Each bar stacks the period's
2xx, 4xx and 5xx requests from the bottom up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from apikeys.selectors import DAILY, UsagePoint, UsageTotals, UsageWindow

WIDTH = 720
HEIGHT = 230
LEFT = 48
RIGHT = 8
TOP = 14
BOTTOM = 30
PLOT_WIDTH = WIDTH - LEFT - RIGHT
PLOT_HEIGHT = HEIGHT - TOP - BOTTOM
BAR_FILL = 0.72  # share of a slot a bar takes; the rest is the gap between bars
MIN_SEGMENT = 1.5  # a non-zero segment stays visible however small its share
TICKS = 4

SEGMENTS = (("2xx", "count_2xx"), ("4xx", "count_4xx"), ("5xx", "count_5xx"))


def compact(value: float) -> str:
    """1234 -> 1.2k, 2_000_000 -> 2M: axis labels that fit."""
    for threshold, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if value >= threshold:
            text = f"{value / threshold:.1f}".removesuffix(".0")
            return f"{text}{suffix}"
    return f"{value:g}"


def nice_step(maximum: int, ticks: int = TICKS) -> int:
    """The smallest 1, 2, 2.5 or 5 times a power of ten with `ticks` steps covering `maximum`."""
    raw = max(maximum, 1) / ticks
    magnitude = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    # 2.5 only from 25 up, so that steps stay whole numbers.
    factors = (1, 2, 2.5, 5, 10) if magnitude >= 10 else (1, 2, 5, 10)
    for factor in factors:
        step = factor * magnitude
        if step >= raw:
            return int(step)
    return int(10 * magnitude)


@dataclass(frozen=True)
class Segment:
    status_class: str
    value: int
    y: float
    height: float


@dataclass(frozen=True)
class Bar:
    point: UsagePoint
    x: float
    width: float
    slot_x: float
    slot_width: float
    segments: list[Segment]
    label: str  # the period as text, for the tooltip and the table
    axis_label: str  # "" for the bars whose period is not labelled on the axis

    @property
    def center(self) -> float:
        return round(self.x + self.width / 2, 2)


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class Chart:
    window: UsageWindow
    bars: list[Bar]
    ticks: list[Tick]
    totals: UsageTotals
    peak: int

    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    plot_width: int = PLOT_WIDTH
    plot_height: int = PLOT_HEIGHT

    @property
    def right(self) -> int:
        return LEFT + PLOT_WIDTH

    @property
    def baseline(self) -> int:
        return TOP + PLOT_HEIGHT

    @property
    def axis_label_y(self) -> int:
        return TOP + PLOT_HEIGHT + 18

    @property
    def empty(self) -> bool:
        return self.totals.requests == 0

    @property
    def unit(self) -> str:
        return "day" if self.window.granularity == DAILY else "hour"


def _period_label(point: UsagePoint, granularity: str) -> str:
    start = point.start
    if granularity == DAILY:
        return f"{start:%a} {start.day} {start:%b %Y}"
    end = (start.hour + 1) % 24
    return f"{start.day} {start:%b}, {start:%H}:00\N{EN DASH}{end:02d}:00 UTC"


def _axis_label(point: UsagePoint, index: int, count: int, granularity: str) -> str:
    if granularity == DAILY:
        # Every fifth day counted back from today, so the newest bar is always labelled.
        return f"{point.start.day} {point.start:%b}" if (count - 1 - index) % 5 == 0 else ""
    return f"{point.start:%H:00}" if point.start.hour % 3 == 0 else ""


def build_chart(points: Sequence[UsagePoint], window: UsageWindow) -> Chart:
    """Lay out `points` (one per period of `window`, oldest first) as stacked bars."""
    peak = max((p.requests for p in points), default=0)
    step = nice_step(peak)
    top_value = max(step * math.ceil(max(peak, 1) / step), step)
    scale = PLOT_HEIGHT / top_value
    slot = PLOT_WIDTH / max(len(points), 1)
    bar_width = round(slot * BAR_FILL, 2)
    bars = []
    for index, point in enumerate(points):
        slot_x = LEFT + index * slot
        base = float(TOP + PLOT_HEIGHT)
        segments = []
        for status_class, attribute in SEGMENTS:
            value = getattr(point, attribute)
            if not value:
                continue
            height = max(value * scale, MIN_SEGMENT)
            height = min(height, base - TOP)
            base -= height
            segments.append(Segment(status_class, value, y=round(base, 2), height=round(height, 2)))
        bars.append(
            Bar(
                point=point,
                x=round(slot_x + (slot - bar_width) / 2, 2),
                width=bar_width,
                slot_x=round(slot_x, 2),
                slot_width=round(slot, 2),
                segments=segments,
                label=_period_label(point, window.granularity),
                axis_label=_axis_label(point, index, len(points), window.granularity),
            )
        )
    ticks = [
        Tick(y=round(TOP + PLOT_HEIGHT - value * scale, 2), label=compact(value))
        for value in range(0, top_value + 1, step)
    ]
    return Chart(window=window, bars=bars, ticks=ticks, totals=UsageTotals.of(points), peak=peak)
