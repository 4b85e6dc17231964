"""Freezes: a stop on advances that comes from outside the plan (an incident, a change
freeze), for every rollout in its scope, until a given time or until someone ends it.

Pure: the time is an argument. The shell stores freezes, asks ``blocking`` each tick
and puts the sentences into ``RolloutState.blocked``, which ``decide`` turns into a
hold of a ready advance; rollbacks, aborts and the kill switch are never stopped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stages.durations import parse_duration

# A scope term with this key matches the rollout's name, not a plan label.
ROLLOUT_KEY = "rollout"
# Longer than this is not a freeze but a decision to stop: abort or pause instead.
MAX_FREEZE = timedelta(days=366)
MAX_SCOPE_TERMS = 16
_TERM = re.compile(r"^([A-Za-z0-9_.\-/]{1,128})=([^\s=\x00-\x1f][^=\x00-\x1f]{0,127})$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")
_HAS_UNIT = re.compile(r"[a-z]")


class FreezeInputError(ValueError):
    """A freeze's input that cannot be used; ``field`` names which."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Scope:
    """``key=value`` terms that must all match; none: every rollout. ``rollout=NAME``
    matches the rollout's name, any other key its plan's ``labels``."""

    terms: tuple[tuple[str, str], ...] = ()

    def matches(self, rollout: str, labels: Mapping[str, str]) -> bool:
        return all(
            (rollout == value) if key == ROLLOUT_KEY else labels.get(key) == value
            for key, value in self.terms
        )

    def text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.terms) if self.terms else "all rollouts"


def parse_term(text: str, field: str) -> tuple[str, str]:
    """``team=memory``: a label (or ``rollout``) and its value."""
    match = _TERM.match(text.strip())
    if match is None:
        raise FreezeInputError(
            field,
            f"{text!r} is not label=value (e.g. team=memory, environment=production, "
            "rollout=memory-layer)",
        )
    return match.group(1), match.group(2).strip()


def parse_scope(items: Sequence[str], field: str = "scope") -> Scope:
    if len(items) > MAX_SCOPE_TERMS:
        raise FreezeInputError(field, f"at most {MAX_SCOPE_TERMS} scope terms, not {len(items)}")
    terms = [parse_term(item, f"{field}[{i}]") for i, item in enumerate(items)]
    return Scope(tuple(dict.fromkeys(terms)))


def labels_match(labels: Mapping[str, str], selectors: Iterable[tuple[str, str]]) -> bool:
    """Every ``(label, value)`` selector holds (the API's and CLI's ``--label``)."""
    return all(labels.get(key) == value for key, value in selectors)


def zone(name: str | None, field: str = "tz") -> tzinfo:
    if name is None or name == "" or name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise FreezeInputError(
            field, f"unknown time zone {name!r} (an IANA name: Europe/Berlin, UTC)"
        ) from exc


def parse_until(text: str, now: datetime, tz: str | None = None) -> datetime:
    """When a freeze ends, in UTC, from what a person typed at ``now``:

    - a duration from now: ``2h``, ``90m``, ``1d``;
    - ``HH:MM``: the next such time of day in ``tz`` (default UTC), today or tomorrow;
    - an ISO 8601 time: ``2026-12-04T14:00:00Z``; without an offset it is in ``tz``.
    """
    raw = text.strip()
    where = zone(tz)
    if not raw:
        raise FreezeInputError("until", "must not be empty: give 14:00, 2h or an ISO time")
    clock = _CLOCK.match(raw)
    if clock is not None:
        until = _next_time_of_day(int(clock.group(1)), int(clock.group(2)), now, where)
    elif "T" in raw or raw.count("-") >= 2:
        until = _iso(raw, where)
    elif _HAS_UNIT.search(raw):
        try:
            until = now + parse_duration(raw)
        except (ValueError, OverflowError):
            raise FreezeInputError("until", _UNREADABLE.format(raw=raw)) from None
    else:
        raise FreezeInputError("until", _UNREADABLE.format(raw=raw))
    if until <= now:
        raise FreezeInputError(
            "until", f"{raw!r} is {_utc_text(until)}, which is not after now ({_utc_text(now)})"
        )
    if until - now > MAX_FREEZE:
        raise FreezeInputError(
            "until", f"{raw!r} is more than {MAX_FREEZE.days} days away; pause or abort instead"
        )
    # Whole seconds, rounded up: what people type and read (never before what they asked).
    if until.microsecond:
        until += timedelta(microseconds=1_000_000 - until.microsecond)
    return until.astimezone(UTC)


_UNREADABLE = (
    "{raw!r} is not a time: give HH:MM (the next such time, UTC unless tz is given), "
    "a duration (2h, 90m, 1d) or an ISO time (2026-12-04T14:00:00Z)"
)


def _next_time_of_day(hour: int, minute: int, now: datetime, where: tzinfo) -> datetime:
    if hour > 23 or minute > 59:
        raise FreezeInputError("until", f"{hour:02}:{minute:02} is not a time of day")
    local = now.astimezone(where)
    for days in (0, 1, 2):  # 2: a day where that time does not exist (a DST gap)
        day = local.date() + timedelta(days=days)
        candidate = datetime.combine(day, time(hour, minute), tzinfo=where)
        # A time in a DST gap does not exist; zoneinfo gives one that does not round-trip.
        if candidate.astimezone(UTC).astimezone(where).replace(tzinfo=None) != candidate.replace(
            tzinfo=None
        ):
            continue
        if candidate > now:
            return candidate
    raise FreezeInputError("until", f"{hour:02}:{minute:02} does not come in the next two days")


def _iso(raw: str, where: tzinfo) -> datetime:
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise FreezeInputError("until", _UNREADABLE.format(raw=raw)) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=where)


def _utc_text(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True, slots=True)
class Freeze:
    id: int
    reason: str
    until: datetime
    scope: Scope
    created_by: str
    created_at: datetime
    ended_at: datetime | None = None
    ended_by: str | None = None

    def active(self, now: datetime) -> bool:
        """Ended by a person, or past ``until``: it blocks nothing, whoever noticed."""
        return self.ended_at is None and now < self.until

    def covers(self, rollout: str, labels: Mapping[str, str]) -> bool:
        return self.scope.matches(rollout, labels)

    def sentence(self) -> str:
        """What a held rollout says: ``frozen: INC-123 until 14:00 UTC by alice``."""
        until = until_text(self.until, self.created_at)
        return f"frozen: {self.reason} until {until} by {_who(self.created_by)}"


def until_text(until: datetime, since: datetime) -> str:
    """``14:00 UTC`` within a day of ``since``, else with the date."""
    at = until.astimezone(UTC)
    if at - since.astimezone(UTC) < timedelta(hours=24):
        return at.strftime("%H:%M UTC")
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _who(actor: str) -> str:
    # Actors are stored as "alice (operator)": the name is what a person reads.
    return actor.split(" (", 1)[0]


def in_scope(
    freezes: Iterable[Freeze], rollout: str, labels: Mapping[str, str], now: datetime
) -> list[Freeze]:
    """The active freezes that cover the rollout, oldest first."""
    found = [f for f in freezes if f.active(now) and f.covers(rollout, labels)]
    return sorted(found, key=lambda f: (f.created_at, f.id))


def blocking(
    freezes: Iterable[Freeze], rollout: str, labels: Mapping[str, str], now: datetime
) -> tuple[str, ...]:
    """The sentences for ``RolloutState.blocked``: one per active freeze in scope."""
    return tuple(f.sentence() for f in in_scope(freezes, rollout, labels, now))
