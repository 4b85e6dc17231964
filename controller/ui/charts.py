"""Charts drawn on the server as inline SVG: no script, no CDN, and they print.

Pure functions from points to markup. Colours come from the page's CSS through
class names (``outcome-ok``, ``threshold-abort``), so the charts follow the theme,
and the tests find elements by class and ``data-*`` attributes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

WIDTH = 720
HEIGHT = 200
GATE_HEIGHT = 170
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 40, 34, 26
_LABEL_GAP = 64  # transition labels closer than this share the second row, or drop
_MIN_SPAN = timedelta(seconds=10)
# The percent axis ends at the first of these above what was served: canary steps of
# 1, 2 and 5 % would be a flat line on a 0-100 scale.
_PERCENT_TOPS = (5.0, 10.0, 25.0, 50.0, 100.0)


@dataclass(frozen=True, slots=True)
class PercentPoint:
    """From ``at`` on, the rollout served ``percent``; ``label`` names what changed it."""

    at: datetime
    percent: float
    label: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class GatePoint:
    at: datetime
    value: float | None  # None (or NaN, inf): the reading had no usable value
    outcome: str
    # A compare gate's interval around ``value`` (its estimate), drawn as a bar.
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True, slots=True)
class _Frame:
    """The plot area and its mapping from time and value to pixels."""

    start: datetime
    end: datetime
    low: float
    high: float
    height: int = HEIGHT

    @property
    def span_seconds(self) -> float:
        return max((self.end - self.start).total_seconds(), 1.0)

    def x(self, at: datetime) -> float:
        share = (at - self.start).total_seconds() / self.span_seconds
        return _LEFT + min(max(share, 0.0), 1.0) * (WIDTH - _LEFT - _RIGHT)

    @property
    def bottom(self) -> float:
        return self.height - _BOTTOM

    def y(self, value: float) -> float:
        share = (value - self.low) / (self.high - self.low)
        return self.bottom - min(max(share, 0.0), 1.0) * (self.bottom - _TOP)

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def percent_chart(points: Sequence[PercentPoint], *, end: datetime) -> str:
    """Percent served over time as a step line, a labelled marker at each transition."""
    if not points:
        return _empty("chart percent-chart", "", "no history yet")
    ordered = sorted(points, key=lambda p: p.at)
    top = percent_axis_top(max(p.percent for p in ordered))
    frame = _Frame(ordered[0].at, max(end, ordered[0].at + _MIN_SPAN), 0.0, top)
    parts = [_open("chart percent-chart", "", "Percent of users on the new side over time")]
    parts += _y_axis(frame, nice_ticks(0.0, top), suffix="%")
    parts += _x_axis(frame)
    parts.append(_step_path(frame, ordered))
    parts += _transition_markers(frame, ordered[1:])
    last = ordered[-1]
    parts.append(
        f'<text class="now-label" x="{frame.x(frame.end) + 5:.1f}" '
        f'y="{frame.y(last.percent) + 4:.1f}">{_number(last.percent)}%</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def gate_chart(
    gate: str,
    points: Sequence[GatePoint],
    thresholds: Mapping[str, float],
    *,
    end: datetime,
    unit_hint: str = "",
) -> str:
    """A gate's value over time against its thresholds; points coloured by outcome, and
    a compare gate's interval around each estimate as a vertical bar."""
    title = f"Gate {gate}: value over time" + (f" ({unit_hint})" if unit_hint else "")
    attrs = f' data-gate="{escape(gate)}"'
    if not points:
        return _empty("chart gate-chart", attrs, "no readings yet", title)
    ordered = sorted(points, key=lambda p: p.at)
    start = ordered[0].at
    frame_end = max(end, start + _MIN_SPAN)
    values = [p.value for p in ordered if p.value is not None and math.isfinite(p.value)]
    # Only finite interval ends widen the axis; an infinite one is drawn to the edge.
    values += [b for p in ordered for b in (p.low, p.high) if b is not None and math.isfinite(b)]
    low, high = _value_range(values, nearest_thresholds(values, thresholds.values()))
    frame = _Frame(start, frame_end, low, high, GATE_HEIGHT)
    parts = [_open("chart gate-chart", attrs, title, GATE_HEIGHT)]
    parts += _y_axis(frame, nice_ticks(low, high))
    parts += _x_axis(frame)
    parts += _threshold_lines(frame, thresholds)
    parts += _interval_bars(frame, ordered)
    parts.append(_value_path(frame, ordered))
    parts += _points(frame, ordered)
    parts.append("</svg>")
    return "".join(parts)


# --- pieces --------------------------------------------------------------------------


def _open(classes: str, attrs: str, title: str, height: int = HEIGHT) -> str:
    return (
        f'<svg class="{classes}"{attrs} viewBox="0 0 {WIDTH} {height}" '
        f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
    )


def _empty(classes: str, attrs: str, message: str, title: str = "") -> str:
    return (
        _open(classes + " empty", attrs, title or message, GATE_HEIGHT)
        + f'<text class="empty-label" x="{WIDTH / 2}" y="{GATE_HEIGHT / 2}" '
        f'text-anchor="middle">{escape(message)}</text></svg>'
    )


def _y_axis(frame: _Frame, ticks: Sequence[float], suffix: str = "") -> list[str]:
    out = []
    for tick in ticks:
        y = frame.y(tick)
        out.append(
            f'<line class="grid" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis-label" x="{_LEFT - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end">{_number(tick)}{suffix}</text>'
        )
    return out


def _x_axis(frame: _Frame) -> list[str]:
    y = frame.bottom
    out = [f'<line class="axis" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y}" y2="{y}"/>']
    for at in time_ticks(frame.start, frame.end):
        x = frame.x(at)
        out.append(
            f'<text class="axis-label" x="{x:.1f}" y="{y + 18}" text-anchor="middle">'
            f"{_clock(at, frame.span_seconds)}</text>"
        )
    return out


def _step_path(frame: _Frame, ordered: Sequence[PercentPoint]) -> str:
    first = ordered[0]
    d = [f"M{frame.x(first.at):.1f},{frame.y(first.percent):.1f}"]
    for point in ordered[1:]:
        d.append(f"H{frame.x(point.at):.1f}V{frame.y(point.percent):.1f}")
    d.append(f"H{frame.x(frame.end):.1f}")
    return f'<path class="series step-line" d="{"".join(d)}"/>'


def _transition_markers(frame: _Frame, transitions: Sequence[PercentPoint]) -> list[str]:
    out = []
    last_label_x = {0: -math.inf, 1: -math.inf}
    for point in transitions:
        x = frame.x(point.at)
        row = 0 if x - last_label_x[0] >= _LABEL_GAP else 1
        label = ""
        if x - last_label_x[row] >= _LABEL_GAP:
            last_label_x[row] = x
            y = 12 + row * 12
            label = (
                f'<text class="marker-label" x="{x:.1f}" y="{y}" '
                f'text-anchor="middle">{escape(point.label)}</text>'
            )
        tip = escape(f"{point.at:%Y-%m-%d %H:%M:%S} UTC {point.label}: {point.detail}".strip())
        out.append(
            f'<g class="transition" data-action="{escape(point.label)}"><title>{tip}</title>'
            f'<line class="marker" x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP - 6}" '
            f'y2="{frame.bottom}"/>{label}</g>'
        )
    return out


_THRESHOLD_KIND = {"abort": "abort", "rollback": "rollback", "hold": "hold"}


def _threshold_lines(frame: _Frame, thresholds: Mapping[str, float]) -> list[str]:
    """A dashed line per threshold in range; one beyond the axis is named at its edge,
    so a far abort level does not squash the values people read."""
    out = []
    right = WIDTH - _RIGHT - 4
    beyond = {"↑": 0, "↓": 0}  # off-axis labels so far at each edge, stacked apart
    for name, value in thresholds.items():
        kind = _THRESHOLD_KIND.get(name.split("_", 1)[0], "hold")
        op = "<" if name.endswith("_below") else ">"
        text = f"{kind} {op} {_number(value)}"
        group = (
            f'<g class="threshold threshold-{kind}" data-threshold="{escape(name)}">'
            f"<title>{escape(name)} {_number(value)}</title>"
        )
        if frame.contains(value):
            y = frame.y(value)
            out.append(
                f'{group}<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                f'<text x="{right}" y="{y - 4:.1f}" text-anchor="end">{text}</text></g>'
            )
        else:
            arrow = "↑" if value > frame.high else "↓"
            if arrow == "↑":
                y = _TOP - 14 - 12 * beyond[arrow]
            else:
                y = frame.bottom - 4 - 12 * beyond[arrow]
            beyond[arrow] += 1
            out.append(
                f'{group}<text class="off-axis" x="{right}" y="{y:.1f}" '
                f'text-anchor="end">{arrow} {text}</text></g>'
            )
    return out


def _value_path(frame: _Frame, ordered: Sequence[GatePoint]) -> str:
    """One line through the readings, broken where a reading had no value."""
    d: list[str] = []
    pen_down = False
    for point in ordered:
        if not _finite(point.value):
            pen_down = False
            continue
        assert point.value is not None
        d.append(f"{'L' if pen_down else 'M'}{frame.x(point.at):.1f},{frame.y(point.value):.1f}")
        pen_down = True
    return f'<path class="series value-line" d="{"".join(d)}"/>'


def _interval_bars(frame: _Frame, ordered: Sequence[GatePoint]) -> list[str]:
    out = []
    for point in ordered:
        if point.low is None or point.high is None or math.isnan(point.low + point.high):
            continue
        x = frame.x(point.at)
        outcome = escape(point.outcome)
        tip = f"{point.at:%H:%M:%S} interval {_bound(point.low)}..{_bound(point.high)}"
        out.append(
            f'<g class="interval outcome-{outcome}" data-low="{_bound(point.low)}" '
            f'data-high="{_bound(point.high)}"><title>{escape(tip)}</title>'
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.y(point.low):.1f}" '
            f'y2="{frame.y(point.high):.1f}"{_INTERVAL_STROKE}/></g>'
        )
    return out


# As attributes: the stylesheet has no rule for interval bars yet, and CSS still wins.
_INTERVAL_STROKE = ' stroke="#64748b" stroke-opacity="0.55" stroke-width="4" stroke-linecap="round"'


def _bound(value: float) -> str:
    return _number(value) if math.isfinite(value) else ("-inf" if value < 0 else "+inf")


def _points(frame: _Frame, ordered: Sequence[GatePoint]) -> list[str]:
    out = []
    baseline_y = frame.bottom
    for point in ordered:
        x = frame.x(point.at)
        outcome = escape(point.outcome)
        value = point.value
        if _finite(value):
            assert value is not None
            tip = f"{point.at:%H:%M:%S} {_number(value)} {point.outcome}"
            shape = f'<circle cx="{x:.1f}" cy="{frame.y(value):.1f}" r="3.2"/>'
        else:
            # No value to place: a cross on the time axis, so gaps in the data show.
            tip = f"{point.at:%H:%M:%S} no value ({point.outcome})"
            y = baseline_y
            shape = f'<path d="M{x - 3:.1f},{y - 3}l6,6m0,-6l-6,6"/>'
        out.append(
            f'<g class="point outcome-{outcome}" data-outcome="{outcome}">'
            f"<title>{escape(tip)}</title>{shape}</g>"
        )
    return out


# --- scales and labels ---------------------------------------------------------------


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _value_range(values: Iterable[float], thresholds: Iterable[float]) -> tuple[float, float]:
    """Room for every value and every threshold, padded, never empty."""
    levels = [*values, *(t for t in thresholds if math.isfinite(t))]
    if not levels:
        return 0.0, 1.0
    low, high = min(levels), max(levels)
    if low == high:
        pad = abs(low) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.08
    low = 0.0 if low >= 0 and low - pad < 0 else low - pad
    return low, high + pad


def nearest_thresholds(values: Sequence[float], thresholds: Iterable[float]) -> list[float]:
    """The closest threshold above the values and the closest below: the levels that
    matter next. Without values, every threshold."""
    finite = [t for t in thresholds if math.isfinite(t)]
    if not values:
        return finite
    low, high = min(values), max(values)
    above = [t for t in finite if t >= high]
    below = [t for t in finite if t <= low]
    inside = [t for t in finite if low < t < high]
    return inside + ([min(above)] if above else []) + ([max(below)] if below else [])


def percent_axis_top(highest: float) -> float:
    return next((top for top in _PERCENT_TOPS if highest < top), 100.0)


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round numbers (1, 2, 5 times a power of ten) between ``low`` and ``high``."""
    span = high - low
    if not math.isfinite(span) or span <= 0:
        return [low]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    tick = first
    while tick <= high + step * 1e-9:
        ticks.append(round(tick, 12))
        tick += step
    return ticks


def time_ticks(start: datetime, end: datetime, count: int = 5) -> list[datetime]:
    span = (end - start).total_seconds()
    if span <= 0:
        return [start]
    return [start + timedelta(seconds=span * i / (count - 1)) for i in range(count)]


def _clock(at: datetime, span_seconds: float) -> str:
    if span_seconds > 3 * 86400:
        return f"{at:%m-%d %H:%M}"
    return f"{at:%H:%M}" if span_seconds > 1800 else f"{at:%H:%M:%S}"


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.001:
        return f"{value:.3g}"
    return f"{value:.4g}"
