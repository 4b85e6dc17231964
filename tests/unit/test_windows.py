"""Change windows: the arithmetic across DST changes, plan errors, and what decide() and
the manual actions do inside and outside a window. Every instant is passed in: the
"clock" is a list of ticks the test walks through."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.actions import Action, ActionRefused, perform
from stages.decide import decide
from stages.decisions import Advance, Complete, Hold, RollBack, StepBack
from stages.plan import Dwell, Plan
from stages.planfile import PlanError, Problem, parse_plan, parse_plan_data, plan_to_dict
from stages.state import Outcome, RolloutState, Status
from stages.transitions import tick
from stages.windowfile import parse_windows_text
from stages.windows import (
    MINUTES_PER_DAY,
    Window,
    closed_sentence,
    is_open,
    openings,
    status,
    time_inside,
)
from tests.unit.plans import gate, ramp, readings, state, with_step

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def windows(text: str) -> tuple[Window, ...]:
    return parse_windows_text(text, "windows")


# 2026: Europe/Berlin springs forward Sun 29 Mar at 01:00 UTC (02:00 CET -> 03:00 CEST)
# and falls back Sun 25 Oct at 01:00 UTC (03:00 CEST -> 02:00 CET).
SPRING = utc(2026, 3, 29)
AUTUMN = utc(2026, 10, 25)
OFFICE = windows('[{days: mon-fri, hours: "09:00-17:00", tz: Europe/Berlin}]')
NIGHT = windows('[{days: [sun], hours: "01:00-03:00", tz: Europe/Berlin}]')


# --- the arithmetic ------------------------------------------------------------------


def test_a_night_window_is_one_hour_on_the_spring_day_and_three_in_autumn() -> None:
    # 01:00 CET is 00:00 UTC; the clock jumps 02:00 -> 03:00, so 03:00 CEST is 01:00 UTC.
    assert [(o.start, o.end) for o in openings(NIGHT, SPRING, SPRING + 24 * HOUR)] == [
        (utc(2026, 3, 29, 0), utc(2026, 3, 29, 1))
    ]
    assert time_inside(NIGHT, SPRING - HOUR, SPRING + 24 * HOUR) == HOUR
    # 01:00 CEST is 23:00 UTC the day before; 02:00-03:00 happens twice; 03:00 CET is 02:00.
    assert [(o.start, o.end) for o in openings(NIGHT, AUTUMN, AUTUMN + 24 * HOUR)] == [
        (utc(2026, 10, 24, 23), utc(2026, 10, 25, 2))
    ]
    assert time_inside(NIGHT, AUTUMN - 2 * HOUR, AUTUMN + 24 * HOUR) == 3 * HOUR


@pytest.mark.parametrize(
    ("at", "inside"),
    [
        (utc(2026, 3, 28, 23, 59), False),  # 00:59 CET
        (utc(2026, 3, 29, 0, 0), True),  # 01:00 CET: opens
        (utc(2026, 3, 29, 0, 59), True),  # 01:59 CET
        (utc(2026, 3, 29, 1, 0), False),  # 03:00 CEST: closed
        (utc(2026, 10, 25, 0, 30), True),  # 02:30 CEST, the first time
        (utc(2026, 10, 25, 1, 30), True),  # 02:30 CET, the second time
        (utc(2026, 10, 25, 2, 0), False),  # 03:00 CET: closed
    ],
    ids=str,
)
def test_inside_the_night_window_across_both_changes(at: datetime, inside: bool) -> None:
    assert is_open(NIGHT, at) is inside


def test_office_hours_keep_their_local_hours_across_the_change() -> None:
    def first_opening(day: datetime) -> tuple[datetime, datetime]:
        o = openings(OFFICE, day, day + 24 * HOUR)[0]
        return o.start, o.end

    # CET is UTC+1, CEST UTC+2: the UTC hours move, the local ones do not.
    assert first_opening(utc(2026, 3, 27)) == (utc(2026, 3, 27, 8), utc(2026, 3, 27, 16))
    assert first_opening(utc(2026, 3, 30)) == (utc(2026, 3, 30, 7), utc(2026, 3, 30, 15))
    assert first_opening(utc(2026, 10, 23)) == (utc(2026, 10, 23, 7), utc(2026, 10, 23, 15))
    assert first_opening(utc(2026, 10, 26)) == (utc(2026, 10, 26, 8), utc(2026, 10, 26, 16))


def test_a_window_that_opens_at_a_skipped_time_opens_at_the_change() -> None:
    skipped = windows('[{days: sun, hours: "02:30-04:00", tz: Europe/Berlin}]')

    found = openings(skipped, SPRING, SPRING + 24 * HOUR)

    # 02:30 never shows on the spring day: the clock passes it at 03:00 CEST (01:00 UTC).
    assert [(o.start, o.end) for o in found] == [(utc(2026, 3, 29, 1), utc(2026, 3, 29, 2))]


def test_a_window_the_change_swallows_opens_the_next_week() -> None:
    gone = windows('[{days: sun, hours: "02:00-02:30", tz: Europe/Berlin}]')

    now = status(gone, utc(2026, 3, 28, 12))

    assert not now.open
    assert now.next_open == utc(2026, 4, 5, 0)  # 02:00 CEST on the next Sunday


def test_next_open_and_close_from_a_friday_evening_over_the_change() -> None:
    friday_evening = utc(2026, 3, 27, 18)  # 19:00 CET

    now = status(OFFICE, friday_evening)

    assert (now.open, now.next_open, now.next_close) == (
        False,
        utc(2026, 3, 30, 7),  # Mon 09:00 CEST
        utc(2026, 3, 30, 15),
    )
    assert closed_sentence(OFFICE, friday_evening) == (
        "outside change window, next opens Mon 09:00 Europe/Berlin"
    )


def test_inside_a_window_next_close_is_its_end_and_next_open_the_one_after() -> None:
    monday_noon = utc(2026, 3, 30, 10)

    now = status(OFFICE, monday_noon)

    assert (now.open, now.next_close, now.next_open) == (
        True,
        utc(2026, 3, 30, 15),
        utc(2026, 3, 31, 7),
    )
    assert closed_sentence(OFFICE, monday_noon) is None


def test_an_overnight_window_runs_into_the_next_day() -> None:
    late = windows('[{days: fri, hours: "22:00-02:00", tz: UTC}]')

    assert is_open(late, utc(2026, 3, 28, 1, 59))  # Saturday 01:59
    assert not is_open(late, utc(2026, 3, 28, 2))
    assert time_inside(late, utc(2026, 3, 27), utc(2026, 3, 29)) == 4 * HOUR


def test_touching_windows_merge_and_a_window_on_every_day_never_closes() -> None:
    always = windows('[{days: mon-sun, hours: "00:00-24:00", tz: UTC}]')
    split = windows(
        '[{days: mon, hours: "09:00-12:00", tz: UTC}, {days: mon, hours: "12:00-17:00", tz: UTC}]'
    )

    assert status(always, SPRING).open and status(always, SPRING).next_close is None
    assert status(split, utc(2026, 3, 30, 10)).next_close == utc(2026, 3, 30, 17)


def test_no_windows_is_always_open() -> None:
    assert is_open((), SPRING)
    assert time_inside((), SPRING, SPRING + HOUR) == HOUR
    assert closed_sentence((), SPRING) is None


@pytest.mark.parametrize(
    ("days", "expect"),
    [
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("[mon, wed, fri]", {0, 2, 4}),
        ("[mon-tue, sat]", {0, 1, 5}),
        ("fri-mon", {4, 5, 6, 0}),  # a range wraps over the weekend
        ('"sat,sun"', {5, 6}),
        ("[Sunday]", {6}),
    ],
)
def test_days_as_lists_ranges_and_names(days: str, expect: set[int]) -> None:
    (window,) = windows(f'[{{days: {days}, hours: "09:00-17:00", tz: UTC}}]')
    assert window.days == frozenset(expect)


# --- plan files ----------------------------------------------------------------------

PLAN = """\
rollout: demo
flag: demo
windows:
  - days: [mon, tue, wed, thu, fri]
    hours: "09:00-17:00"
    tz: Europe/Berlin
dwell: in_window
steps:
  - {stage: canary, percent: 1, hold: 8h}
  - {stage: canary, percent: 5, hold: 1h, dwell: always}
"""


def problems(source: str) -> list[Problem]:
    with pytest.raises(PlanError) as caught:
        parse_plan(textwrap.dedent(source))
    return caught.value.problems


def test_a_plan_declares_windows_and_dwell_and_they_round_trip() -> None:
    plan = parse_plan(PLAN)

    assert plan.windows == OFFICE
    assert plan.dwell is Dwell.IN_WINDOW
    assert [plan.dwell_of(i) for i in range(2)] == [Dwell.IN_WINDOW, Dwell.ALWAYS]
    assert parse_plan_data(plan_to_dict(plan)) == plan
    assert plan_to_dict(plan)["windows"] == [
        {"days": ["mon", "tue", "wed", "thu", "fri"], "hours": "09:00-17:00", "tz": "Europe/Berlin"}
    ]


def test_a_plan_without_windows_stores_as_before() -> None:
    data = plan_to_dict(parse_plan("rollout: demo\nflag: demo\nsteps: [{stage: shadow}]\n"))

    assert "windows" not in data and "dwell" not in data
    assert "dwell" not in data["steps"][0]


@pytest.mark.parametrize(
    ("window", "path", "message"),
    [
        (
            '{days: mon, hours: "09:00-17:00", tz: Europe/Berln}',
            "tz",
            "did you mean 'Europe/Berlin'",
        ),
        ('{days: mon, hours: "09:00-17:00", tz: Mars/Olympus}', "tz", "unknown time zone"),
        ('{days: mon, hours: "09:00-17:00", tz: localtime}', "tz", "unknown time zone"),
        ('{days: mon, hours: "9 to 5", tz: UTC}', "hours", "'9 to 5' is not local hours"),
        ('{days: mon, hours: "09:00-25:00", tz: UTC}', "hours", "not a time of day"),
        ('{days: mon, hours: "09:61-17:00", tz: UTC}', "hours", "not a time of day"),
        ('{days: mon, hours: "09:00-09:00", tz: UTC}', "hours", "opens and closes at once"),
        ("{days: mon, hours: 900, tz: UTC}", "hours", "not a number"),
        (
            '{days: [mon, funday], hours: "09:00-17:00", tz: UTC}',
            "days[1]",
            "'funday' is not a day",
        ),
        ('{days: mon-fri-sat, hours: "09:00-17:00", tz: UTC}', "days", "not a day or a range"),
        ('{days: [], hours: "09:00-17:00", tz: UTC}', "days", "at least one day"),
        ('{hours: "09:00-17:00", tz: UTC}', "days", "days is required"),
        ('{days: mon, hours: "09:00-17:00"}', "tz", "tz is required"),
        ('{days: mon, hours: "09:00-17:00", tz: UTC, zone: UTC}', "zone", "unknown field"),
    ],
)
def test_a_bad_window_is_an_error_naming_its_field_and_line(
    window: str, path: str, message: str
) -> None:
    source = f"rollout: demo\nflag: demo\nwindows:\n  - {window}\nsteps: [{{stage: shadow}}]\n"

    (problem,) = problems(source)

    assert problem.path == f"windows[0].{path}"
    assert problem.line == 4
    assert message in problem.message


def test_every_bad_window_and_dwell_is_listed_at_once() -> None:
    source = """\
    rollout: demo
    flag: demo
    windows:
      - {days: mon, hours: "09:00-17:00", tz: Nowhere/City}
      - {days: tue, hours: "17-9", tz: UTC}
    dwell: sometimes
    steps:
      - {stage: canary, percent: 1, dwell: inside}
    """

    assert [(p.path, p.line) for p in problems(source)] == [
        ("windows[0].tz", 4),
        ("windows[1].hours", 5),
        ("dwell", 6),
        ("steps[0].dwell", 8),
    ]


def test_windows_must_be_a_non_empty_list() -> None:
    head = "rollout: demo\nflag: demo\nsteps: [{stage: shadow}]\n"

    assert [p.message for p in problems(head + "windows: []\n")] == [
        "list at least one window, or leave windows out"
    ]
    assert "must be a list" in problems(head + "windows: {days: mon}\n")[0].message


def test_the_setting_text_reads_as_yaml_or_json_and_names_itself() -> None:
    as_json = '[{"days": "mon-fri", "hours": "09:00-17:00", "tz": "Europe/Berlin"}]'

    assert parse_windows_text(as_json, "ROLLOUT_CHANGE_WINDOWS") == OFFICE
    with pytest.raises(PlanError) as caught:
        parse_windows_text("- {days: mon, hours: 9-5, tz: UTC}", "ROLLOUT_CHANGE_WINDOWS")
    assert str(caught.value).startswith("ROLLOUT_CHANGE_WINDOWS[0].hours (line 1): '9-5'")


# Every example but the alert mappings (a server file, docs/alerts.md) is a plan.
EXAMPLE_PLANS = sorted(p for p in EXAMPLES.glob("*.yaml") if p.name != "alert-mappings.yaml")


@pytest.mark.parametrize("path", EXAMPLE_PLANS, ids=lambda p: p.name)
def test_every_example_plan_parses_and_round_trips(path: Path) -> None:
    plan = parse_plan(path.read_text())

    assert parse_plan_data(plan_to_dict(plan)) == plan


def test_the_windows_example_declares_windows() -> None:
    plan = parse_plan((EXAMPLES / "windows.yaml").read_text())

    assert plan.windows and plan.dwell is Dwell.IN_WINDOW


# --- decide() ------------------------------------------------------------------------

ERR = gate("error-rate", hold_above=0.01, rollback_above=0.02, abort_above=0.05)
GATED = replace(ramp(3, gates=[ERR], hold=HOUR), windows=OFFICE)
FRIDAY_EVENING = utc(2026, 3, 27, 18)  # 19:00 CET: closed until Mon 09:00 CEST
MONDAY_MORNING = utc(2026, 3, 30, 7, 5)  # 09:05 CEST: open


def ready(
    plan: Plan = GATED, started: datetime = utc(2026, 3, 27, 8), step: int = 1, **fields: object
) -> RolloutState:
    # Dwell done long ago, two ok evaluations in: this tick's ok would advance.
    return state(plan, Status.RUNNING, step, started=started, ok_evaluations=2, **fields)


def test_outside_a_window_an_advance_holds_and_says_when_it_opens() -> None:
    decision = decide(ready(), readings(FRIDAY_EVENING, error_rate=Outcome.OK), FRIDAY_EVENING)

    assert decision == Hold(
        "ready to advance, but outside change window, next opens Mon 09:00 Europe/Berlin"
    )


def test_inside_a_window_the_same_state_advances() -> None:
    decision = decide(ready(), readings(MONDAY_MORNING, error_rate=Outcome.OK), MONDAY_MORNING)

    assert isinstance(decision, Advance) and decision.to_step == 2


def test_completion_waits_for_a_window_too() -> None:
    last = ready(step=2)

    held = decide(last, readings(FRIDAY_EVENING, error_rate=Outcome.OK), FRIDAY_EVENING)
    done = decide(last, readings(MONDAY_MORNING, error_rate=Outcome.OK), MONDAY_MORNING)

    assert isinstance(held, Hold) and "outside change window" in held.reason
    assert isinstance(done, Complete)


@pytest.mark.parametrize(
    ("outcome", "expect"), [(Outcome.ROLLBACK, StepBack), (Outcome.ABORT, RollBack)]
)
def test_rollbacks_and_aborts_act_outside_a_window(outcome: Outcome, expect: type) -> None:
    decision = decide(ready(), readings(FRIDAY_EVENING, error_rate=outcome), FRIDAY_EVENING)

    assert isinstance(decision, expect)


def test_the_global_windows_apply_to_a_plan_without_its_own() -> None:
    plain = ready(replace(GATED, windows=()))
    now = FRIDAY_EVENING

    assert isinstance(decide(plain, readings(now, error_rate=Outcome.OK), now), Advance)
    with_global = replace(plain, default_windows=OFFICE)
    assert isinstance(decide(with_global, readings(now, error_rate=Outcome.OK), now), Hold)


def test_a_plans_own_windows_beat_the_global_ones() -> None:
    always = windows('[{days: mon-sun, hours: "00:00-24:00", tz: UTC}]')
    own = ready(replace(GATED, windows=always), default_windows=OFFICE)

    decision = decide(own, readings(FRIDAY_EVENING, error_rate=Outcome.OK), FRIDAY_EVENING)

    assert isinstance(decision, Advance)


def test_a_block_and_a_closed_window_hold_for_the_block_first() -> None:
    both = ready(blocked=("frozen by INC-123",))

    decision = decide(both, readings(FRIDAY_EVENING, error_rate=Outcome.OK), FRIDAY_EVENING)

    assert isinstance(decision, Hold) and "frozen by INC-123" in decision.reason


def test_a_dwell_still_running_says_the_window_is_closed_too() -> None:
    fresh = ready(started=FRIDAY_EVENING - 10 * MINUTE)

    decision = decide(fresh, readings(FRIDAY_EVENING, error_rate=Outcome.OK), FRIDAY_EVENING)

    assert decision == Hold(
        "dwell: 50m left; outside change window, next opens Mon 09:00 Europe/Berlin"
    )


# --- dwell: in_window, walked tick by tick over a DST change --------------------------


def walk(
    start: RolloutState, begin: datetime, end: datetime, every: timedelta
) -> Iterator[tuple[datetime, object, RolloutState]]:
    """The test-driven clock: one tick every ``every``, each gate ok."""
    current, now = start, begin
    while now <= end:
        decision, current = tick(current, readings(now, error_rate=Outcome.OK), now)
        yield now, decision, current
        now += every


def first_advance(start: RolloutState, begin: datetime, end: datetime) -> datetime | None:
    for now, decision, _ in walk(start, begin, end, 5 * MINUTE):
        if isinstance(decision, Advance):
            return now
    return None


def in_window_plan(windows_: tuple[Window, ...], hold: timedelta) -> Plan:
    return replace(ramp(2, gates=[ERR], hold=hold), windows=windows_, dwell=Dwell.IN_WINDOW)


def test_in_window_dwell_counts_office_hours_over_the_spring_change() -> None:
    # 10 h of office hours: 8 on Friday 27 Mar (CET), 2 on Monday 30 Mar (CEST).
    plan = in_window_plan(OFFICE, 10 * HOUR)
    start = state(plan, Status.RUNNING, 0, started=utc(2026, 3, 27, 8))

    advanced = first_advance(start, utc(2026, 3, 27, 8), utc(2026, 3, 31))

    assert advanced == utc(2026, 3, 30, 9)  # Mon 11:00 CEST, not 12:00 (no DST) or Sat


def test_in_window_dwell_counts_office_hours_over_the_autumn_change() -> None:
    plan = in_window_plan(OFFICE, 10 * HOUR)
    start = state(plan, Status.RUNNING, 0, started=utc(2026, 10, 23, 7))  # Fri 09:00 CEST

    advanced = first_advance(start, utc(2026, 10, 23, 7), utc(2026, 10, 27))

    assert advanced == utc(2026, 10, 26, 10)  # Mon 11:00 CET


def test_in_window_dwell_of_the_night_window_on_both_change_days() -> None:
    # 2h30m inside "01:00-03:00": the autumn night holds three hours, the spring one only
    # one, so in spring the hold is reached the next Sunday (1h + 1h30m of its two),
    # at 02:30 CEST.
    plan = in_window_plan(NIGHT, 2 * HOUR + 30 * MINUTE)
    autumn = state(plan, Status.RUNNING, 0, started=utc(2026, 10, 24, 22))
    spring = state(plan, Status.RUNNING, 0, started=utc(2026, 3, 28, 22))

    assert first_advance(autumn, utc(2026, 10, 24, 22), utc(2026, 10, 26)) == utc(
        2026, 10, 25, 1, 30
    )
    assert first_advance(spring, utc(2026, 3, 28, 22), utc(2026, 4, 6)) == utc(2026, 4, 5, 0, 30)


def test_in_window_dwell_says_what_it_counts() -> None:
    plan = in_window_plan(OFFICE, 10 * HOUR)
    start = state(plan, Status.RUNNING, 0, started=utc(2026, 3, 27, 8))
    saturday = utc(2026, 3, 28, 12)

    decision = decide(start, readings(saturday, error_rate=Outcome.OK), saturday)

    assert isinstance(decision, Hold)
    assert decision.reason.startswith("dwell: 2h left (counted inside change windows)")


def test_a_step_may_count_all_time_in_an_in_window_plan() -> None:
    plan = with_step(in_window_plan(OFFICE, 10 * HOUR), 0, dwell=Dwell.ALWAYS)
    start = state(plan, Status.RUNNING, 0, started=utc(2026, 3, 27, 8), ok_evaluations=2)
    monday = utc(2026, 3, 30, 7, 5)  # 71 h later, inside a window

    assert isinstance(decide(start, readings(monday, error_rate=Outcome.OK), monday), Advance)


# --- manual actions ------------------------------------------------------------------


def awaiting(plan: Plan = GATED) -> RolloutState:
    return state(plan, Status.AWAITING_APPROVAL, 1, started=utc(2026, 3, 27, 8))


def test_an_approval_outside_a_window_is_refused_with_when_it_opens() -> None:
    with pytest.raises(ActionRefused) as refused:
        perform(awaiting(), Action.APPROVE, FRIDAY_EVENING)

    assert refused.value.reason == (
        "cannot approve step 3 (canary 25%) now: outside change window, next opens "
        "Mon 09:00 Europe/Berlin; approve it then"
    )


def test_an_approval_inside_a_window_enters_the_step() -> None:
    after = perform(awaiting(), Action.APPROVE, MONDAY_MORNING)

    assert (after.status, after.step) == (Status.RUNNING, 2)


def test_a_manual_advance_outside_a_window_needs_force_and_records_it() -> None:
    with pytest.raises(ActionRefused, match="cannot advance now: outside change window"):
        perform(ready(), Action.ADVANCE, FRIDAY_EVENING)

    after = perform(ready(), Action.ADVANCE, FRIDAY_EVENING, force=True)

    assert after.step == 2
    assert "forced outside change window" in after.reason


@pytest.mark.parametrize(
    ("action", "expect"),
    [
        (Action.ROLLBACK, Status.ROLLING_BACK),
        (Action.ABORT, Status.ABORTED),
        (Action.PAUSE, Status.PAUSED),
    ],
)
def test_rollback_abort_and_pause_act_outside_a_window(action: Action, expect: Status) -> None:
    assert perform(ready(), action, FRIDAY_EVENING).status is expect


def test_an_immediate_rollback_acts_outside_a_window() -> None:
    after = perform(ready(), Action.ROLLBACK, FRIDAY_EVENING, immediate=True)

    assert after.status is Status.ROLLED_BACK


# --- properties, over zones with unusual changes ------------------------------------

ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # a 30-minute DST change
    "America/Santiago",  # changes at local midnight
    "Asia/Kolkata",  # no DST, a half-hour offset
    "Pacific/Apia",
    "UTC",
)
_minutes = st.integers(min_value=0, max_value=MINUTES_PER_DAY)


@st.composite
def some_windows(draw: st.DrawFn) -> tuple[Window, ...]:
    count = draw(st.integers(min_value=1, max_value=3))
    out = []
    for _ in range(count):
        opens = draw(st.integers(min_value=0, max_value=MINUTES_PER_DAY - 1))
        closes = draw(_minutes.filter(lambda m, o=opens: m not in (o, 0)))
        days = draw(st.frozensets(st.integers(min_value=0, max_value=6), min_size=1))
        out.append(Window(days, opens, closes, draw(st.sampled_from(ZONES))))
    return tuple(out)


instants = st.integers(min_value=0, max_value=366 * 24 * 3600).map(
    lambda s: utc(2026, 1, 1) + timedelta(seconds=s)
)
spans = st.integers(min_value=0, max_value=9 * 24 * 3600).map(lambda s: timedelta(seconds=s))
SECOND = timedelta(seconds=1)


@settings(max_examples=300, deadline=None)
@given(some_windows(), instants, spans, spans)
def test_time_inside_adds_up_and_never_exceeds_the_span(
    ws: tuple[Window, ...], start: datetime, first: timedelta, second: timedelta
) -> None:
    middle, end = start + first, start + first + second

    whole = time_inside(ws, start, end)

    assert whole == time_inside(ws, start, middle) + time_inside(ws, middle, end)
    assert timedelta(0) <= whole <= end - start


@settings(max_examples=300, deadline=None)
@given(some_windows(), instants)
def test_next_open_and_close_are_where_the_window_changes(
    ws: tuple[Window, ...], at: datetime
) -> None:
    now = status(ws, at)

    assert now.open == is_open(ws, at) == (time_inside(ws, at, at + SECOND) > timedelta(0))
    if now.next_open is not None:
        assert now.next_open > at
        assert is_open(ws, now.next_open) and not is_open(ws, now.next_open - SECOND)
    if now.next_close is not None:
        assert now.next_close > at
        assert not is_open(ws, now.next_close) and is_open(ws, now.next_close - SECOND)
    if not now.open and now.next_open is not None:
        assert time_inside(ws, at, now.next_open) == timedelta(0)


# --- what rollout status prints -----------------------------------------------------


def test_rollout_status_says_when_the_window_opens_closes_and_what_a_hold_counts() -> None:
    from controller.cli.format import rollout_detail, window_text
    from controller.storage.mapping import window_view

    plan = parse_plan(PLAN)
    closed = window_view(state(plan, Status.RUNNING, 0, started=FRIDAY_EVENING), FRIDAY_EVENING)
    opened = window_view(state(plan, Status.RUNNING, 0), MONDAY_MORNING)
    assert closed is not None and opened is not None

    assert window_text(closed) == "outside change window, next opens Mon 09:00 Europe/Berlin"
    assert window_text(opened) == "open, closes Mon 2026-03-30 15:00 UTC"
    view = {
        "name": "demo", "flag": "demo", "version": 1, "status": "running", "reason": "",
        "step": 0, "step_count": 2, "step_label": "canary 1%", "seconds_in_step": 60.0,
        "seconds_until_may_advance": 3600.0, "last_outcomes": {}, "window": closed,
        "serving": {"step": 0, "percent": 1, "regions": [], "shadow": True},
        "plan": plan_to_dict(plan),
    }  # fmt: skip
    text = rollout_detail(view)
    assert "may advance in 1h of time inside change windows" in text
    assert "  window:   outside change window, next opens Mon 09:00 Europe/Berlin" in text
