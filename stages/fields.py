"""Value readers: each checks one field's value and reports what is wrong with it.

A reader takes the report, the value's path and the value, and returns the value
as the plan holds it, or ``None`` after adding a problem.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from enum import StrEnum
from typing import TypeVar

from stages.durations import DurationTooLong, format_duration, parse_duration
from stages.limits import MAX_DURATION, MAX_LABELS, MAX_NAME_CHARS, MAX_REGIONS
from stages.plan import Stage
from stages.problems import Path, Report, kind, show

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)
Reader = Callable[[Report, Path, object], T | None]


def field(
    report: Report, fields: Mapping[str, object], path: Path, key: str, read: Reader[T], default: T
) -> T:
    """The field read by ``read``, or ``default`` when absent (null counts as absent)."""
    value = fields.get(key)
    if value is None:
        return default
    result = read(report, (*path, key), value)
    return default if result is None else result


def required(
    report: Report, fields: Mapping[str, object], path: Path, key: str, read: Reader[T]
) -> T | None:
    value = fields.get(key)
    if value is None:
        report.add((*path, key), f"{key} is required")
        return None
    return read(report, (*path, key), value)


def known_fields(
    report: Report, path: Path, value: object, allowed: Sequence[str], what: str
) -> dict[str, object] | None:
    """The known fields of a mapping; every unknown one is a problem (typos like rolback_above)."""
    if not isinstance(value, Mapping):
        report.add(path, f"{what} must be a mapping, not {kind(value)}")
        return None
    out: dict[str, object] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            report.add(path, f"field names must be strings, not {show(key)}")
        elif key not in allowed:
            report.add((*path, key), _unknown(key, allowed))
        else:
            out[key] = item
    return out


def _unknown(key: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(allowed)})"
    return f"unknown field {key!r}{hint}"


def text(report: Report, path: Path, value: object) -> str | None:
    if isinstance(value, bool):
        # YAML 1.1 reads unquoted on/off/yes/no as booleans: variants: {old: off} is one.
        report.add(path, "must be a string, not a boolean (quote on/off/yes/no in YAML)")
        return None
    if not isinstance(value, str):
        report.add(path, f"must be a string, not {kind(value)}")
        return None
    if not value.strip():
        report.add(path, "must not be empty")
        return None
    return value


def label(report: Report, path: Path, value: object) -> str | None:
    """A name shown in the UI, logs and audit events (a gate, a region): text with no
    control characters, which would forge lines there (and PostgreSQL refuses NUL)."""
    name = short_text(MAX_NAME_CHARS)(report, path, value)
    if name is not None and not name.replace(" ", "").isprintable():
        report.add(path, f"{show(name)} must not contain control characters")
        return None
    return name


def short_text(most: int) -> Reader[str]:
    def read(report: Report, path: Path, value: object) -> str | None:
        result = text(report, path, value)
        if result is None or len(result) <= most:
            return result
        too_long = report.limit(path, f"at most {most} characters, not {len(result)}")
        return None if too_long else result

    return read


def matching(pattern: re.Pattern[str], rule: str) -> Reader[str]:
    def read(report: Report, path: Path, value: object) -> str | None:
        name = text(report, path, value)
        if name is not None and not pattern.fullmatch(name):
            report.add(path, f"{name!r} is not a valid name: {rule}")
            return None
        return name

    return read


def number(report: Report, path: Path, value: object) -> float | None:
    # A boolean is an int to Python, but "rollback_above: true" is a mistake.
    if isinstance(value, bool) or not isinstance(value, int | float):
        report.add(path, f"must be a number, not {kind(value)}")
        return None
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        report.add(path, "must be a finite number")
        return None
    return result


def at_least(minimum: float) -> Reader[float]:
    def read(report: Report, path: Path, value: object) -> float | None:
        amount = number(report, path, value)
        if amount is not None and amount < minimum:
            report.add(path, f"must be at least {minimum:g}, not {amount:g}")
            return None
        return amount

    return read


def count(report: Report, path: Path, value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        report.add(path, f"must be a whole number, not {kind(value)}")
        return None
    if value < 1:
        report.add(path, f"must be at least 1, not {value}")
        return None
    return value


def boolean(report: Report, path: Path, value: object) -> bool | None:
    if not isinstance(value, bool):
        report.add(path, f"must be true or false, not {kind(value)}")
        return None
    return value


def duration(report: Report, path: Path, value: object) -> timedelta | None:
    """A duration from 0 to ``MAX_DURATION``: the scheduler adds it to datetimes."""
    return duration_between(timedelta(0), MAX_DURATION)(report, path, value)


def duration_between(minimum: timedelta, maximum: timedelta) -> Reader[timedelta]:
    def read(report: Report, path: Path, value: object) -> timedelta | None:
        if not isinstance(value, str | int | float):
            report.add(path, f"must be a duration like 90s or 1h30m, not {kind(value)}")
            return None
        too_long = f"must be at most {format_duration(maximum)}, not {show(value)}"
        try:
            span = parse_duration(value)
        except DurationTooLong:
            report.add(path, too_long)  # no timedelta holds it, limits or not
            return None
        except ValueError as exc:
            report.add(path, str(exc))
            return None
        if span < minimum:
            report.add(path, f"must be at least {format_duration(minimum)}, not {show(value)}")
            return None
        if span > maximum and report.limit(path, too_long):
            return None
        return span

    return read


def choice(enum: type[E]) -> Reader[E]:
    def read(report: Report, path: Path, value: object) -> E | None:
        names = [member.value for member in enum]
        if isinstance(value, str) and value in names:
            return enum(value)
        report.add(path, f"{show(value)} is not one of: {', '.join(names)}")
        return None

    return read


def sequence(
    report: Report, path: Path, value: object, most: int | None = None, what: str = "items"
) -> list[object] | None:
    """A list; longer than ``most`` is one problem, and its items go unread."""
    if not isinstance(value, list | tuple):
        report.add(path, f"must be a list, not {kind(value)}")
        return None
    too_many = most is not None and len(value) > most
    if too_many and report.limit(path, f"at most {most} {what}, not {len(value)}"):
        return None
    return list(value)


def percentage(report: Report, path: Path, value: object) -> float | None:
    amount = number(report, path, value)
    if amount is None:
        return None
    if not 0 <= amount <= 100:
        report.add(path, f"percent must be between 0 and 100, not {amount:g}")
        return None
    # Bucketing resolves 0.01 %: a finer percent would silently round.
    if abs(amount * 100 - round(amount * 100)) > 1e-6:
        report.add(path, f"percent has at most 2 decimals (0.01 % steps), not {amount:g}")
        return None
    return round(amount, 2)  # 12.3400000001 from float arithmetic reads as 12.34


def region_names(report: Report, path: Path, value: object) -> tuple[str, ...] | None:
    items = sequence(report, path, value, MAX_REGIONS, "regions")
    if items is None:
        return None
    regions: list[str] = []
    for i, item in enumerate(items):
        region = label(report, (*path, i), item)
        if region in regions:
            report.add((*path, i), f"region {region!r} listed twice")
        elif region is not None:
            regions.append(region)
    return tuple(regions) if len(regions) == len(items) else None


def stage_set(report: Report, path: Path, value: object) -> frozenset[Stage] | None:
    items = sequence(report, path, value)
    if items is None:
        return None
    if not items:
        report.add(path, "list at least one stage, or leave stages out for all of them")
        return None
    stages = [choice(Stage)(report, (*path, i), item) for i, item in enumerate(items)]
    return frozenset(s for s in stages if s is not None)


def labels(report: Report, path: Path, value: object) -> tuple[tuple[str, str], ...] | None:
    if not isinstance(value, Mapping):
        report.add(path, f"must be a mapping, not {kind(value)}")
        return None
    if len(value) > MAX_LABELS and report.limit(
        path, f"at most {MAX_LABELS} labels, not {len(value)}"
    ):
        return None
    labels: list[tuple[str, str]] = []
    for key, item in value.items():
        long_name = f"label names have at most {MAX_NAME_CHARS} characters: {show(key)}"
        if not isinstance(key, str):
            report.add(path, f"label names must be strings, not {show(key)}")
        elif not isinstance(item, str):
            report.add((*path, key), f"must be a string, not {kind(item)}")
        elif len(key) <= MAX_NAME_CHARS or not report.limit(path, long_name):
            labels.append((key, item))
    return tuple(labels)
