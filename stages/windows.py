"""Change windows: the local days and hours in which a rollout may widen exposure.

A window opens on each of its days at ``opens`` (local wall time in its IANA zone) and
closes at ``closes`` the same day, or the next day when ``closes`` is not after
``opens`` (``22:00-02:00``). Times are local, so ``09:00-17:00 Europe/Berlin`` keeps
its local hours across a DST change. A local time that a change skips (02:30 on the
spring-forward day) is reached at the change itself, the first instant the local clock
is past it; a local time that happens twice (the autumn hour) is reached the first
time. So ``01:00-03:00`` is open one hour on the spring day and three in the autumn.

No windows at all means always open. Every function takes its instants (aware UTC
``datetime``) as arguments: no clock here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
# Windows recur weekly; two weeks ahead finds the next opening even when a DST change
# swallows this week's only one. A run of openings reaching past it never closes.
_HORIZON = timedelta(days=15)
_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Window:
    days: frozenset[int]  # the days it opens on, 0 = Monday
    opens: int  # minutes after local midnight, 0..1439
    closes: int  # 1..1440; at or before ``opens``: the next day
    tz: str  # an IANA zone, checked when the plan was read

    def hours(self) -> str:
        return f"{_clock(self.opens)}-{_clock(self.closes)}"


@dataclass(frozen=True, slots=True)
class Opening:
    """One stretch of time inside windows (overlapping and touching ones merged)."""

    start: datetime
    end: datetime
    tz: str  # the zone of the window that opens it, for saying when in local time


@dataclass(frozen=True, slots=True)
class WindowStatus:
    open: bool
    next_open: datetime | None  # open: when the next opening after this one starts
    next_close: datetime | None  # None: no close in the next two weeks (always open)
    next_open_tz: str | None = None


def openings(windows: Sequence[Window], start: datetime, end: datetime) -> list[Opening]:
    """The openings that overlap ``[start, end)``, merged and in order (not clipped)."""
    found: list[Opening] = []
    for window in windows:
        found.extend(_window_openings(window, start, end))
    found.sort(key=lambda o: o.start)
    merged: list[Opening] = []
    for opening in found:
        if merged and opening.start <= merged[-1].end:
            last = merged[-1]
            merged[-1] = Opening(last.start, max(last.end, opening.end), last.tz)
        else:
            merged.append(opening)
    return merged


def is_open(windows: Sequence[Window], at: datetime) -> bool:
    if not windows:
        return True
    return any(o.start <= at < o.end for o in openings(windows, at, at + timedelta(seconds=1)))


def status(windows: Sequence[Window], at: datetime) -> WindowStatus:
    """Whether ``at`` is inside a window, and when the next one opens and closes."""
    if not windows:
        return WindowStatus(True, None, None)
    horizon = at + _HORIZON
    ahead = [o for o in openings(windows, at, horizon) if o.end > at]
    if not ahead:
        return WindowStatus(False, None, None)
    first = ahead[0]
    if first.start > at:
        return WindowStatus(False, first.start, _close(first, horizon), first.tz)
    after = ahead[1] if len(ahead) > 1 else None
    if after is None:
        return WindowStatus(True, None, _close(first, horizon))
    return WindowStatus(True, after.start, _close(first, horizon), after.tz)


def time_inside(windows: Sequence[Window], start: datetime, end: datetime) -> timedelta:
    """How much of ``[start, end)`` lies inside windows (all of it when there are none)."""
    if end <= start:
        return timedelta(0)
    if not windows:
        return end - start
    inside = timedelta(0)
    for o in openings(windows, start, end):
        inside += min(o.end, end) - max(o.start, start)
    return inside


def closed_sentence(windows: Sequence[Window], at: datetime) -> str | None:
    """``"outside change window, next opens Mon 09:00 Europe/Berlin"``, or ``None`` when
    ``at`` is inside one."""
    now = status(windows, at)
    if now.open:
        return None
    if now.next_open is None or now.next_open_tz is None:
        return "outside change window, and none opens in the next two weeks"
    return f"outside change window, next opens {local_time(now.next_open, now.next_open_tz)}"


def local_time(at: datetime, tz: str) -> str:
    """``Mon 09:00 Europe/Berlin``: how a person in that zone reads ``at``."""
    return f"{at.astimezone(ZoneInfo(tz)):%a %H:%M} {tz}"


# --- one window ------------------------------------------------------------------------


def _window_openings(window: Window, start: datetime, end: datetime) -> list[Opening]:
    zone = ZoneInfo(window.tz)
    # Local dates from the day before (an opening that began yesterday may still run).
    first = start.astimezone(zone).date() - _DAY
    last = end.astimezone(zone).date()
    out: list[Opening] = []
    day = first
    while day <= last:
        if day.weekday() in window.days:
            opening = _opening(window, zone, day)
            if opening is not None and opening.end > start and opening.start < end:
                out.append(opening)
        day += _DAY
    return out


def _opening(window: Window, zone: ZoneInfo, day: date) -> Opening | None:
    opens = _reached(_wall(day, window.opens), zone)
    close_day = day if window.closes > window.opens else day + _DAY
    closes = _reached(_wall(close_day, window.closes), zone)
    if closes <= opens:
        return None  # a DST change skipped all of it (02:00-02:30 on the spring day)
    return Opening(opens, closes, window.tz)


def _wall(day: date, minutes: int) -> datetime:
    return datetime.combine(day, time()) + timedelta(minutes=minutes)


def _reached(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant at which the local clock shows ``wall`` or later."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _local(first, zone) == wall:
        return first  # it exists; fold 0 is the first of a repeated time
    # Skipped: fold 1 reads it with the offset after the change, an instant before the
    # change; fold 0 one after it. The change lies between: find it to the second.
    low, high = wall.replace(tzinfo=zone, fold=1).astimezone(UTC), first
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if _local(middle, zone) >= wall:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0) if high.microsecond else high


def _local(at: datetime, zone: ZoneInfo) -> datetime:
    return at.astimezone(zone).replace(tzinfo=None)


def _close(opening: Opening, horizon: datetime) -> datetime | None:
    return None if opening.end >= horizon else opening.end


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
