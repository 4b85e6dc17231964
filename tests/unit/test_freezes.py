"""Freezes, pure: scope matching, when ``until`` is, expiry with the time passed in, and
the sentence a held rollout shows (stages.freezes)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from stages.decide import decide
from stages.decisions import Advance, Hold
from stages.freezes import (
    Freeze,
    FreezeInputError,
    Scope,
    blocking,
    in_scope,
    labels_match,
    parse_scope,
    parse_until,
)
from stages.state import RolloutState, Status
from tests.unit.plans import ramp

NOW = datetime(2026, 12, 4, 10, 30, tzinfo=UTC)
MEMORY = {"team": "memory", "environment": "production"}


def freeze(
    fid: int = 1,
    *,
    scope: tuple[tuple[str, str], ...] = (),
    until: datetime = NOW + timedelta(hours=2),
    ended_at: datetime | None = None,
    created_at: datetime = NOW,
) -> Freeze:
    return Freeze(
        id=fid,
        reason="INC-123",
        until=until,
        scope=Scope(scope),
        created_by="alice (operator)",
        created_at=created_at,
        ended_at=ended_at,
    )


# -- scope -------------------------------------------------------------------------

SCOPE_CASES = [
    ("no scope: every rollout", (), "memory-layer", MEMORY, True),
    ("a label that matches", (("team", "memory"),), "memory-layer", MEMORY, True),
    ("a label with another value", (("team", "search"),), "memory-layer", MEMORY, False),
    ("a label the plan has not", (("service", "api"),), "memory-layer", MEMORY, False),
    (
        "two labels: both must hold",
        (("team", "memory"), ("environment", "staging")),
        "memory-layer",
        MEMORY,
        False,
    ),
    (
        "two labels that both hold",
        (("team", "memory"), ("environment", "production")),
        "memory-layer",
        MEMORY,
        True,
    ),
    ("rollout=NAME: that rollout", (("rollout", "memory-layer"),), "memory-layer", {}, True),
    ("rollout=NAME: not another", (("rollout", "memory-layer"),), "checkout", MEMORY, False),
    (
        "rollout= is the name, not a label",
        (("rollout", "x"),),
        "memory-layer",
        {"rollout": "x"},
        False,
    ),
]


@pytest.mark.parametrize(
    ("terms", "rollout", "labels", "expected"),
    [case[1:] for case in SCOPE_CASES],
    ids=[case[0] for case in SCOPE_CASES],
)
def test_scope_matching(
    terms: tuple[tuple[str, str], ...], rollout: str, labels: dict[str, str], expected: bool
) -> None:
    assert Scope(terms).matches(rollout, labels) is expected


def test_scope_is_read_from_label_value_terms() -> None:
    scope = parse_scope(["team=memory", " environment=production "])

    assert scope.terms == (("team", "memory"), ("environment", "production"))
    assert scope.text() == "team=memory, environment=production"
    assert parse_scope([]).text() == "all rollouts"


@pytest.mark.parametrize("bad", ["team", "=memory", "team=", "team==x", "te am=x", "a=b\x07"])
def test_unknown_scope_syntax_names_the_term(bad: str) -> None:
    with pytest.raises(FreezeInputError) as caught:
        parse_scope(["team=memory", bad])

    assert caught.value.field == "scope[1]"
    assert "label=value" in caught.value.message


def test_label_selectors_all_must_hold() -> None:
    assert labels_match(MEMORY, [("team", "memory"), ("environment", "production")])
    assert not labels_match(MEMORY, [("team", "memory"), ("environment", "staging")])
    assert labels_match({}, [])


# -- until -----------------------------------------------------------------------------


UNTIL_CASES = [
    ("HH:MM later today, UTC", "14:00", None, datetime(2026, 12, 4, 14, 0, tzinfo=UTC)),
    ("HH:MM already past today: tomorrow", "09:00", None, datetime(2026, 12, 5, 9, tzinfo=UTC)),
    ("HH:MM in a zone", "14:00", "Europe/Berlin", datetime(2026, 12, 4, 13, 0, tzinfo=UTC)),
    ("a duration", "2h", None, NOW + timedelta(hours=2)),
    ("minutes and days", "1d30m", None, NOW + timedelta(days=1, minutes=30)),
    ("ISO with Z", "2026-12-04T18:00:00Z", None, datetime(2026, 12, 4, 18, tzinfo=UTC)),
    ("ISO with an offset", "2026-12-04T18:00+01:00", None, datetime(2026, 12, 4, 17, tzinfo=UTC)),
    (
        "ISO without an offset is in tz",
        "2026-12-04T18:00",
        "America/New_York",
        datetime(2026, 12, 4, 23, tzinfo=UTC),
    ),
]


@pytest.mark.parametrize(
    ("text", "tz", "expected"),
    [case[1:] for case in UNTIL_CASES],
    ids=[case[0] for case in UNTIL_CASES],
)
def test_until(text: str, tz: str | None, expected: datetime) -> None:
    until = parse_until(text, NOW, tz)

    assert until == expected
    assert until.tzinfo is UTC


def test_hh_mm_in_a_dst_gap_is_the_next_day_that_has_it() -> None:
    # Europe/Berlin skips 02:00-03:00 on 2026-03-29.
    now = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    until = parse_until("02:30", now, "Europe/Berlin")

    assert until.astimezone(ZoneInfo("Europe/Berlin")).replace(tzinfo=None) == datetime(
        2026, 3, 30, 2, 30
    )


BAD_UNTIL = [
    ("in the past", "2026-12-04T09:00:00Z", None, "not after now"),
    ("now itself", "0s", None, "not after now"),
    ("a bare number", "14", None, "not a time"),
    ("words", "soon", None, "not a time"),
    ("not a time of day", "25:00", None, "not a time of day"),
    ("far away", "400d", None, "days away"),
    ("empty", " ", None, "must not be empty"),
]


@pytest.mark.parametrize(
    ("text", "tz", "said"), [c[1:] for c in BAD_UNTIL], ids=[c[0] for c in BAD_UNTIL]
)
def test_bad_until_names_the_field(text: str, tz: str | None, said: str) -> None:
    with pytest.raises(FreezeInputError) as caught:
        parse_until(text, NOW, tz)

    assert caught.value.field == "until"
    assert said in caught.value.message


def test_an_unknown_zone_names_tz() -> None:
    with pytest.raises(FreezeInputError) as caught:
        parse_until("14:00", NOW, "Mars/Olympus")

    assert caught.value.field == "tz"


# -- expiry and blocking -----------------------------------------------------------


def test_a_freeze_blocks_until_its_time_and_not_after() -> None:
    f = freeze(until=NOW + timedelta(hours=1))

    assert f.active(NOW)
    assert f.active(NOW + timedelta(minutes=59, seconds=59))
    # Expired: nobody has to run anything for it to stop blocking.
    assert not f.active(NOW + timedelta(hours=1))
    assert blocking([f], "memory-layer", MEMORY, NOW + timedelta(hours=1)) == ()


def test_an_ended_freeze_blocks_nothing() -> None:
    f = freeze(ended_at=NOW + timedelta(minutes=5))

    assert not f.active(NOW + timedelta(minutes=6))


def test_blocking_says_reason_time_and_who() -> None:
    f = freeze(until=datetime(2026, 12, 4, 14, 0, tzinfo=UTC))

    assert blocking([f], "memory-layer", MEMORY, NOW) == (
        "frozen: INC-123 until 14:00 UTC by alice",
    )


def test_a_freeze_more_than_a_day_ahead_names_the_date() -> None:
    f = freeze(until=NOW + timedelta(days=3))

    assert f.sentence() == "frozen: INC-123 until 2026-12-07 10:30 UTC by alice"


def test_only_freezes_in_scope_block_oldest_first() -> None:
    team = freeze(2, scope=(("team", "memory"),), created_at=NOW - timedelta(minutes=1))
    other = freeze(3, scope=(("team", "search"),))
    everyone = freeze(4, created_at=NOW - timedelta(minutes=5))

    assert [f.id for f in in_scope([team, other, everyone], "memory-layer", MEMORY, NOW)] == [
        4,
        2,
    ]


def test_blocked_state_holds_the_advance_decide_would_make() -> None:
    plan = ramp(3)  # a timed ramp: advances on dwell alone
    state = RolloutState(plan=plan, status=Status.RUNNING, step=0, step_started_at=NOW)
    later = NOW + plan.steps[0].hold + timedelta(seconds=1)
    sentences = blocking([freeze(until=later + timedelta(hours=1))], plan.rollout, {}, later)

    assert isinstance(decide(state, [], later), Advance)
    held = decide(replace(state, blocked=sentences), [], later)
    assert isinstance(held, Hold)
    assert held.reason.startswith("ready to advance, but frozen: INC-123 until")


def test_until_is_whole_seconds_rounded_up() -> None:
    now = NOW + timedelta(milliseconds=250)

    assert parse_until("2h", now) == NOW + timedelta(hours=2, seconds=1)
