"""How numbers, durations and times read on the pages (registered as Jinja filters)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from markupsafe import Markup

from stages.decide import format_duration

NONE = "\N{EN DASH}"  # an empty cell, quieter than "None" or "-"

LIGHTS = {
    "ok": "ok",
    "hold": "hold",
    "no_data": "no data",
    "error": "error",
    "rollback": "rollback",
    "abort": "abort",
}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    return format_duration(timedelta(seconds=seconds))


def number(value: object) -> str:
    """Gate values: short, but exact enough to check against a dashboard."""
    if value is None or value == "":
        return NONE
    if isinstance(value, str):
        return value  # "nan", "inf": the views spell them as text
    if not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 1e6 or abs(value) < 1e-3:
        return f"{value:.4g}"
    return f"{value:.6g}"


def percent(value: float) -> str:
    return f"{value:g}%"


def when(iso: str | datetime | None) -> str:
    """An absolute UTC time, to the second: what a person pastes into an incident."""
    if iso is None:
        return NONE
    at = datetime.fromisoformat(iso) if isinstance(iso, str) else iso
    return f"{at:%Y-%m-%d %H:%M:%S} UTC"


def time_tag(iso: str | datetime | None) -> Markup:
    """``when`` in a ``<time>`` element: the page's script (static/times.js) shows it in
    the viewer's time zone, and the UTC time stays on hover and without JavaScript."""
    if iso is None:
        return Markup(NONE)
    at = datetime.fromisoformat(iso) if isinstance(iso, str) else iso
    utc = at.astimezone(UTC) if at.tzinfo is not None else at.replace(tzinfo=UTC)
    text = when(utc)
    machine = f"{utc:%Y-%m-%dT%H:%M:%S}Z"
    return Markup('<time datetime="{}" title="{}" data-utc>{}</time>').format(machine, text, text)


def status_label(status: str) -> str:
    return status.replace("_", " ")


def light_label(outcome: str | None) -> str:
    return LIGHTS.get(outcome or "", "not read")
