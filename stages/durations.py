"""Durations as people write them in plan files: ``90s``, ``5m``, ``1h30m``, ``7d``, ``500ms``.

A bare number is seconds. Amounts are summed exactly in microseconds (``Decimal``),
so ``0.1s`` is 100 ms and not a binary fraction of it.
"""

from __future__ import annotations

import itertools
import math
import re
from datetime import timedelta
from decimal import Decimal

# Largest first: parsing requires this order and formatting produces it.
_MICROS = {
    "w": 7 * 86_400_000_000,
    "d": 86_400_000_000,
    "h": 3_600_000_000,
    "m": 60_000_000,
    "s": 1_000_000,
    "ms": 1_000,
    "us": 1,
}
_FORMAT_UNITS = tuple((unit, size) for unit, size in _MICROS.items() if unit != "w")

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# "ms" before "m" so that "500ms" is not read as 500 minutes and a stray "s".
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|w|d|h|m|s)")
_PARTS = re.compile(rf"(?:{_PART.pattern})+")
_EXAMPLES = "e.g. 90s, 5m, 1h30m, 7d, 500ms"


class DurationTooLong(ValueError):
    """Longer than a ``timedelta`` holds (999,999,999 days)."""


def parse_duration(text: str | int | float) -> timedelta:
    """A non-negative ``timedelta`` from ``"1h30m"``, ``"500ms"`` or a number of seconds."""
    # bool is an int subclass; ``hold: true`` is a mistake, not one second.
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r} ({_EXAMPLES})")
    if isinstance(text, int | float):
        return _from_seconds(text)
    if not isinstance(text, str):
        raise ValueError(f"not a duration: {text!r} ({_EXAMPLES})")
    return _from_text(text.strip())


def format_duration(span: timedelta) -> str:
    """The compact form ``parse_duration`` reads back: ``1h30m``, ``7d``, ``1s500ms``, ``0s``."""
    micros = span // timedelta(microseconds=1)
    if micros < 0:
        raise ValueError(f"a duration cannot be negative: {span}")
    parts: list[str] = []
    for unit, size in _FORMAT_UNITS:
        count, micros = divmod(micros, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _from_seconds(seconds: int | float) -> timedelta:
    if isinstance(seconds, float) and not math.isfinite(seconds):
        raise ValueError(f"not a duration: {seconds!r} ({_EXAMPLES})")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {seconds!r}")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        # Not the number itself: str() refuses an int of more than 4,300 digits.
        raise DurationTooLong("duration too long") from None


def _from_text(text: str) -> timedelta:
    if not text:
        raise ValueError(f"empty duration ({_EXAMPLES})")
    if text.startswith("-"):
        raise ValueError(f"a duration cannot be negative: {text!r}")
    if _NUMBER.fullmatch(text):
        return _from_micros(Decimal(text) * _MICROS["s"], text)
    if not _PARTS.fullmatch(text):
        raise ValueError(_explain(text))
    parts = _PART.findall(text)
    _check_order(text, [unit for _, unit in parts])
    return _from_micros(sum((Decimal(n) * _MICROS[unit] for n, unit in parts), Decimal(0)), text)


def _from_micros(micros: Decimal, text: str) -> timedelta:
    try:
        return timedelta(microseconds=int(micros.to_integral_value()))
    except OverflowError:
        raise DurationTooLong(f"duration too long: {text[:40]!r}") from None


def _check_order(text: str, units: list[str]) -> None:
    # "30m1h" or "5m5m" is more likely a typo than an intended sum.
    ranks = [list(_MICROS).index(unit) for unit in units]
    if any(a >= b for a, b in itertools.pairwise(ranks)):
        raise ValueError(f"units must go from largest to smallest, each once: {text!r}")


def _explain(text: str) -> str:
    for unit in re.findall(r"\d\s*([^\d\s.]+)", text):
        if unit not in _MICROS:
            known = ", ".join(_MICROS)
            return f"unknown unit {unit!r} in {text!r} (known: {known})"
    return f"not a duration: {text!r} ({_EXAMPLES})"
