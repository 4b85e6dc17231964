"""Reading change windows: a plan's ``windows:`` and the global setting, one reader.

Each window is ``{days: mon-fri, hours: "09:00-17:00", tz: Europe/Berlin}``: ``days`` a
list of day names (``[mon, wed, fri]``), ranges among them (``[mon-wed, sat]``) or one
such string (``"mon-fri"``, ``"mon,wed"``); ``hours`` local ``HH:MM-HH:MM`` (the end
``24:00`` for the end of the day, an end at or before the start for the next day);
``tz`` an IANA time zone. ``stages.windows`` does the arithmetic.
"""

from __future__ import annotations

import difflib
import functools
import re
import zoneinfo
from collections.abc import Sequence
from typing import Any

from stages.fields import known_fields, required, sequence
from stages.problems import Path, PlanError, Report, kind, show
from stages.windows import DAY_NAMES, MINUTES_PER_DAY, Window
from stages.yamlsource import read_yaml

MAX_WINDOWS = 32
WINDOW_FIELDS = ("days", "hours", "tz")
_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_HOURS = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")
# Zones that name the host's own setting, not a place: replicas could disagree.
_NOT_PLACES = frozenset({"localtime", "posixrules", "Factory"})


def read_windows(report: Report, path: Path, value: object) -> tuple[Window, ...] | None:
    """A list of windows; ``None`` after adding a problem for each bad one."""
    items = sequence(report, path, value, MAX_WINDOWS, "windows")
    if items is None:
        return None
    if not items:
        report.add(path, "list at least one window, or leave windows out")
        return None
    windows = [_window(report, (*path, i), item) for i, item in enumerate(items)]
    if any(w is None for w in windows):
        return None
    return tuple(w for w in windows if w is not None)


def parse_windows_text(text: str, name: str) -> tuple[Window, ...]:
    """Windows from YAML or JSON text (a setting), problems named under ``name``."""
    report = Report({})
    data = read_yaml(text, report)
    if report.problems:
        raise PlanError(report.problems)
    named = Report({(name, *path): line for path, line in report.lines.items()})
    windows = read_windows(named, (name,), data)
    if named.problems or windows is None:
        raise PlanError(named.problems)
    return windows


def windows_to_list(windows: Sequence[Window]) -> list[dict[str, Any]]:
    """The canonical form: ``read_windows`` of it gives ``windows`` back."""
    return [
        {"days": [DAY_NAMES[d] for d in sorted(w.days)], "hours": w.hours(), "tz": w.tz}
        for w in windows
    ]


def _window(report: Report, path: Path, value: object) -> Window | None:
    fields = known_fields(report, path, value, WINDOW_FIELDS, "a window")
    if fields is None:
        return None
    days = required(report, fields, path, "days", _days)
    hours = required(report, fields, path, "hours", _hours)
    tz = required(report, fields, path, "tz", _zone)
    if days is None or hours is None or tz is None:
        return None
    return Window(days, hours[0], hours[1], tz)


def _days(report: Report, path: Path, value: object) -> frozenset[int] | None:
    if isinstance(value, str):
        parts: list[tuple[Path, object]] = [(path, part) for part in value.split(",")]
    else:
        items = sequence(report, path, value, 7 * 2, "days")
        if items is None:
            return None
        parts = [((*path, i), item) for i, item in enumerate(items)]
    if not parts:
        report.add(path, "list at least one day, e.g. [mon, tue] or mon-fri")
        return None
    days: set[int] = set()
    for where, part in parts:
        found = _day_range(report, where, part)
        if found is None:
            return None
        days |= found
    return frozenset(days)


def _day_range(report: Report, path: Path, value: object) -> set[int] | None:
    if not isinstance(value, str):
        report.add(path, f"a day is a name like mon, not {kind(value)}")
        return None
    ends = [_day(report, path, end) for end in value.split("-")]
    if len(ends) > 2:
        report.add(path, f"{show(value)} is not a day or a range like mon-fri")
        return None
    if any(end is None for end in ends):
        return None
    first, last = (ends[0], ends[-1])
    assert first is not None and last is not None
    span = (last - first) % 7  # fri-mon wraps over the weekend
    return {(first + i) % 7 for i in range(span + 1)}


def _day(report: Report, path: Path, value: str) -> int | None:
    name = value.strip().lower()
    if name in DAY_NAMES:
        return DAY_NAMES.index(name)
    if name in _FULL_NAMES:
        return _FULL_NAMES.index(name)
    report.add(path, f"{show(value.strip())} is not a day: use {', '.join(DAY_NAMES)}")
    return None


def _hours(report: Report, path: Path, value: object) -> tuple[int, int] | None:
    example = "local hours like '09:00-17:00' (quoted in YAML)"
    if not isinstance(value, str):
        report.add(path, f"must be {example}, not {kind(value)}")
        return None
    match = _HOURS.fullmatch(value.strip())
    if match is None:
        report.add(path, f"{show(value)} is not {example}")
        return None
    h1, m1, h2, m2 = (int(part) for part in match.groups())
    opens, closes = h1 * 60 + m1, h2 * 60 + m2
    if m1 > 59 or m2 > 59 or h1 > 23 or closes > MINUTES_PER_DAY:
        report.add(path, f"{show(value)} is not a time of day: 00:00 to 23:59, or 24:00 to end")
        return None
    if closes == 0:
        closes = MINUTES_PER_DAY  # 22:00-00:00 ends at midnight
    if opens == closes:
        report.add(path, f"{show(value)} opens and closes at once: for a whole day use 00:00-24:00")
        return None
    return opens, closes


def _zone(report: Report, path: Path, value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        report.add(path, f"must be an IANA time zone like Europe/Berlin, not {kind(value)}")
        return None
    zones = _known_zones()
    if value in zones:
        return value
    if not zones:
        report.add(path, f"{show(value)}: no time zone database found (install tzdata)")
        return None
    close = difflib.get_close_matches(value, sorted(zones), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else " (an IANA name like Europe/Berlin)"
    report.add(path, f"unknown time zone {show(value)}{hint}")
    return None


@functools.cache
def _known_zones() -> frozenset[str]:
    # Read once per process: the database lists its zones by walking its files.
    return frozenset(zoneinfo.available_timezones()) - _NOT_PLACES
