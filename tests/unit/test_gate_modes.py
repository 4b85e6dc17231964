"""Observe-only gates, compare gates in the decision rules, waiting for traffic, and the
step back into a first step that serves nobody the new side (issue 13's defects)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from stages.compare import Side, Verdict
from stages.decide import decide
from stages.decisions import Advance, Hold, RollBack, StepBack
from stages.gatefile import latency_queries
from stages.gates import compare_reading
from stages.plan import Comparison, GateMode, Stage
from stages.planfile import PlanError, parse_plan, parse_plan_data, plan_to_dict
from stages.state import Outcome, RolloutState, Status
from stages.transitions import apply, enter_step, tick
from tests.unit.plans import MINUTE, at, gate, ramp, reading, state, step

ERR = gate("error-rate", rollback_above=0.02, abort_above=0.05)
WATCHED = replace(gate("new-metric", rollback_above=0.02), mode=GateMode.OBSERVE)
COUNTED = gate("abs-errors", samples="n", min_samples=100, abort_above=0.05)
DONE = at(minutes=10)
COMPARE = replace(
    gate("errors-vs-old"),
    compare=Comparison(events="e", exposures="x", worse_by=0.001),
    stages=frozenset({Stage.CANARY, Stage.GRADUATED, Stage.REGIONAL}),
)


def test_an_observe_only_gate_at_rollback_never_acts_but_is_said() -> None:
    plan = ramp(3, gates=[ERR, WATCHED])
    current = state(plan, Status.RUNNING, 1, ok_evaluations=2)
    decision = decide(
        current,
        [
            reading("error-rate", Outcome.OK, DONE, value=0.001),
            reading(
                "new-metric",
                Outcome.ROLLBACK,
                DONE,
                value=0.5,
                threshold="rollback_above",
                threshold_value=0.02,
            ),
        ],
        DONE,
    )
    assert isinstance(decision, Advance)
    assert "observe only: new-metric would rollback (0.5 > rollback_above 0.02)" in (
        decision.reason
    )


def test_an_observe_only_gate_in_error_never_pauses_or_holds() -> None:
    plan = ramp(3, gates=[WATCHED], max_gate_errors=1)
    current = state(plan, Status.RUNNING, 1)
    decision = decide(current, [reading("new-metric", Outcome.ERROR, DONE)], DONE)
    # Only observe gates: the step is a timed ramp for the decision.
    assert isinstance(decision, Advance)
    assert "timed ramp" in decision.reason


def test_waiting_for_traffic_holds_and_never_pauses_as_an_outage() -> None:
    plan = ramp(3, gates=[COUNTED], max_gate_errors=2)
    current = state(plan, Status.RUNNING, 1)
    for k in range(6):
        now = at(minutes=k)
        few = reading("abs-errors", Outcome.NO_DATA, now, samples=17)
        decision, current = tick(current, [few], now)
        assert isinstance(decision, Hold), decision
        assert "waiting for traffic: 17 of 100 samples" in decision.reason
    assert current.status is Status.RUNNING
    assert current.gate_errors == {}


def test_an_empty_answer_still_counts_toward_a_pause() -> None:
    plan = ramp(3, gates=[COUNTED], max_gate_errors=2)
    current = state(plan, Status.RUNNING, 1)
    for k in range(2):
        _, current = tick(current, [reading("abs-errors", Outcome.NO_DATA, at(k))], at(k))
    assert current.status is Status.PAUSED
    assert "gate source unavailable" in current.reason


def test_stepping_back_from_the_first_canary_into_shadow_ends_rolled_back() -> None:
    plan = ramp(steps=[step(0, Stage.SHADOW), step(1), step(2)], gates=[ERR])
    current = state(plan, Status.RUNNING, 1)
    breach = reading("error-rate", Outcome.ROLLBACK, DONE, value=0.03)
    decision = decide(current, [breach], DONE)
    assert isinstance(decision, RollBack)
    assert "serves nobody the new side" in decision.reason
    # From the second canary it still steps back to the first.
    assert isinstance(decide(state(plan, Status.RUNNING, 2), [breach], DONE), StepBack)


def _counts_state(step_index: int = 1, **fields: object) -> RolloutState:
    plan = ramp(steps=[step(0, Stage.SHADOW), step(5), step(25)], gates=[COMPARE])
    return state(plan, Status.RUNNING, step_index, **fields)  # type: ignore[arg-type]


def test_a_compare_regression_rolls_back_through_the_usual_rules() -> None:
    current = _counts_state(2)
    r = compare_reading(COMPARE, Side(90, 2500), Side(40, 7500), current, DONE)
    assert r.outcome is Outcome.ROLLBACK
    assert r.compare is not None and r.compare.verdict is Verdict.REGRESSION
    decision = decide(current, [r], DONE)
    assert isinstance(decision, StepBack)
    assert "new 3.60 % vs old 0.53 %" in decision.reason
    assert "-> rollback; 2,500 vs 7,500 requests" in decision.reason


def test_compare_evidence_is_kept_across_a_step_back() -> None:
    current = _counts_state(2)
    r = compare_reading(COMPARE, Side(90, 2500), Side(40, 7500), current, DONE)
    decision, after = tick(current, [r], DONE)
    assert isinstance(decision, StepBack)
    kept = after.evidence["errors-vs-old"]
    assert kept.segments == 1 and kept.information > 0
    # At the narrower step, with no counts of its own yet, the evidence still says
    # regression: the observation ends in a further step back, not a recovery.
    later = DONE + 11 * MINUTE
    quiet = compare_reading(COMPARE, Side(0, 40), Side(0, 760), after, later)
    assert quiet.outcome is Outcome.ROLLBACK
    assert isinstance(decide(after, [quiet], later), RollBack)


def test_a_new_step_starts_its_own_counts_and_a_retry_forgets_the_evidence() -> None:
    current = _counts_state(1)
    r = compare_reading(COMPARE, Side(3, 2500), Side(60, 47500), current, DONE)
    after = apply(current, Hold("x"), [r], DONE)
    assert after.evidence["errors-vs-old"].step_information > 0
    entered = enter_step(after, 2, Status.RUNNING, DONE, "advance")
    assert entered.evidence["errors-vs-old"].step_information == 0
    assert entered.evidence["errors-vs-old"].information > 0


def test_no_regression_makes_undecided_ok_and_not_worse_holds_it() -> None:
    current = _counts_state(1)
    counts = (Side(30, 5000), Side(540, 95000))
    strict = compare_reading(COMPARE, *counts, current, DONE)
    assert strict.outcome is Outcome.HOLD
    assert strict.compare is not None and strict.compare.verdict is Verdict.UNDECIDED
    spec = replace(COMPARE.compare, requires="no_regression")  # type: ignore[type-var]
    guard = compare_reading(replace(COMPARE, compare=spec), *counts, current, DONE)
    assert guard.outcome is Outcome.OK


def test_on_regression_abort_is_an_abort() -> None:
    spec = replace(COMPARE.compare, on_regression="abort")  # type: ignore[type-var]
    aborting = replace(COMPARE, compare=spec)
    r = compare_reading(aborting, Side(90, 2500), Side(40, 7500), _counts_state(2), DONE)
    assert r.outcome is Outcome.ABORT


HEAD = """
rollout: r
flag: r
steps:
  - {stage: shadow}
  - {stage: canary, percent: 1}
gates:
"""


def test_a_compare_gate_reads_from_a_plan_and_round_trips() -> None:
    plan = parse_plan(
        HEAD
        + """
  - name: errors-vs-old
    kind: compare
    events: sum by (variant) (increase(e_total{status="error"}[${step_window}]))
    exposures: sum by (variant) (increase(e_total[${step_window}]))
    worse_by: 0.001
    min_samples: 500
    mode: observe
  - name: slow
    kind: compare
    histogram: latency_ms
    slower_than: 150
    worse_by: 0.01
    requires: no_regression
"""
    )
    errors, slow = plan.gates
    assert errors.compare is not None and errors.compare.worse_by == 0.001
    assert errors.mode is GateMode.OBSERVE and errors.min_samples == 500
    assert errors.stages == {Stage.CANARY, Stage.GRADUATED, Stage.REGIONAL}
    assert slow.compare is not None and slow.compare.requires == "no_regression"
    assert parse_plan_data(plan_to_dict(plan)) == plan


@pytest.mark.parametrize(
    ("gate_text", "field", "says"),
    [
        (
            "{name: g, kind: compare, events: e, exposures: x, worse_by: 0.001}",
            "gates[0].events",
            "${step_window}",
        ),
        (
            "{name: g, kind: compare, histogram: h, slower_than: 1, events: e, worse_by: 0.1}",
            "gates[0].events",
            "not both",
        ),
        ("{name: g, kind: compare, histogram: h, slower_than: 1}", "gates[0].worse_by", "required"),
        (
            "{name: g, kind: compare, histogram: h, slower_than: 1, worse_by: 1.5}",
            "gates[0].worse_by",
            "under 1",
        ),
        (
            "{name: g, kind: compare, histogram: h, slower_than: 1, worse_by: 0.1, "
            "stages: [shadow]}",
            "gates[0].stages",
            "not shadow",
        ),
        (
            "{name: g, kind: compare, histogram: h, slower_than: 1, worse_by: 0.1, for: 5m}",
            "gates[0].for",
            "",
        ),
        ("{name: g, kind: ratio, query: q, hold_above: 1}", "gates[0].kind", "not one of"),
        ("{name: g, query: q, hold_above: 1, mode: shadow}", "gates[0].mode", "not one of"),
    ],
)
def test_a_bad_compare_gate_is_refused_naming_the_field(
    gate_text: str, field: str, says: str
) -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(HEAD + f"  - {gate_text}\n")
    problems = {p.path: p.message for p in caught.value.problems}
    assert field in problems, problems
    assert says in problems[field]


def test_a_budget_is_split_across_compare_gates() -> None:
    plan = ramp(3, gates=[COMPARE, replace(COMPARE, name="other"), ERR])
    assert plan.compare_alpha() == pytest.approx(0.005)


def test_latency_queries_match_either_spelling_of_the_bucket_bound() -> None:
    events, exposures = latency_queries("lat_ms", 250, "variant")
    assert exposures == "sum by (variant) (increase(lat_ms_count[${step_window}]))"
    assert events == (
        exposures + ' - sum by (variant) (increase(lat_ms_bucket{le=~"250(\\\\.0+)?"}'
        "[${step_window}]))"
    )
    assert latency_queries("s", 0.25, "v")[0].endswith('{le=~"0\\\\.25"}[${step_window}]))')
