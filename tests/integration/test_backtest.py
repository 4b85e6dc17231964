"""``rollout backtest`` against a real Prometheus loaded with known history, and the live
controller deciding on the same data.

The history (``tests.backfilled_prometheus``): request counters per variant, the new
side's share following the steps (10 %, 25 % from T0+30m, 50 % from T0+60m), its error
rate jumping from 0.5 % to 20 % at T0+75m. The plan holds each step 30 minutes, with a
threshold gate (5 m error rate, rollback above 5 % sustained 2 m) and a compare gate
over ``${step_window}``. The live side is the real ``Scheduler.check`` and
``record_decision`` on a real database, one check per minute of a clock that replays
the same hours, reading the same Prometheus as of that clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import col

from controller.backtest import AsOf, Timeline, backtest, query_errors
from controller.gates.prometheus import PrometheusGates
from controller.jobs.scheduler import Scheduler
from controller.rollouts import Rollouts, parse_plan_input
from controller.storage.leases import Leases
from controller.storage.store import Store
from controller.storage.tables import AuditRow
from stages.actions import Action
from stages.planfile import parse_plan
from stages.state import ACTIVE_STATUSES, Status
from tests.backfilled_prometheus import History, backfilled_prometheus

MINUTE = timedelta(minutes=1)
# Whole minutes, hours back: scrapes every 15 s line up with the checks, and the blocks
# are history, not the head.
T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=4)
JUMP = T0 + 75 * MINUTE
END = T0 + 150 * MINUTE
HISTORY = History(
    begin=T0 - 30 * MINUTE,
    end=END,
    shares=((T0 - 30 * MINUTE, 0.10), (T0 + 30 * MINUTE, 0.25), (T0 + 60 * MINUTE, 0.50)),
    jump=JUMP,
)

PLAN = """
rollout: checkout-v2
flag: checkout-v2
interval: 1m
min_evaluations: 3
rollback_observe: 10m
steps:
  - {stage: canary, percent: 10, hold: 30m}
  - {stage: canary, percent: 25, hold: 30m}
  - {stage: graduated, percent: 50, hold: 30m}
  - {stage: full, hold: 30m}
gates:
  - name: error-rate
    query: >-
      sum(rate(app_requests_total{variant="new",status="error"}[5m]))
      / sum(rate(app_requests_total{variant="new"}[5m]))
    rollback_above: 0.05
    for: 2m
  - name: errors-vs-old
    kind: compare
    events: sum by (variant) (increase(app_requests_total{status="error"}[${step_window}]))
    exposures: sum by (variant) (increase(app_requests_total[${step_window}]))
    worse_by: 0.01
    min_samples: 200
    requires: no_regression
"""

# (minutes after T0, action, from step, to step, status after): 0-based steps.
EXPECTED = [
    (30, "advance", 0, 1, "running"),  # 30 m dwell, every gate ok
    (60, "advance", 1, 2, "running"),
    # The jump at 75 m: the compare gate sees the 50 % step's own counts worse by more
    # than its margin at 77 m (the threshold's 5 m rate would cross 5 % at 76 m and be
    # sustained for 2 m at 78 m).
    (77, "step_back", 2, 1, "rolling_back"),
    (87, "step_back", 1, 0, "rolling_back"),  # still breached after observing 10 m
    (97, "rollback", 0, 0, "rolled_back"),  # and again, at the first step
]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with backfilled_prometheus(HISTORY, tmp_path_factory.mktemp("history")) as url:
        yield url


def minutes(at: datetime) -> int:
    return int((at.astimezone(UTC) - T0) / MINUTE)


def backtested(prometheus: str) -> Timeline:
    return backtest(parse_plan(PLAN), AsOf(PrometheusGates(prometheus)), T0, END)


def test_the_timeline_over_known_history(prometheus: str) -> None:
    timeline = backtested(prometheus)

    moves = [
        (minutes(e.at), e.action, e.from_step, e.to_step, e.status.value)
        for e in timeline.transitions
    ]
    assert moves == EXPECTED
    assert timeline.ended == "rolled back"
    assert (timeline.checks, timeline.gate_errors) == (98, 0)
    step_back = timeline.transitions[2]
    # Decided on the 50 % step's own interval: the healthy steps before would dilute it.
    assert step_back.reason.startswith("rollback: errors-vs-old: new ")
    assert "> 1.00 pp -> rollback;" in step_back.reason
    assert step_back.reason.endswith("stepping back to step 2 (canary 25%)")
    # The readings behind it, as of that minute: the compare gate read the step's counts.
    by_gate = {r.gate: r for r in step_back.readings}
    assert by_gate["error-rate"].value is not None and by_gate["error-rate"].value > 0.05
    compare = by_gate["errors-vs-old"].compare
    assert compare is not None and compare.new.exposures > 10_000
    assert all(r.at == step_back.at for r in step_back.readings)


def test_a_healthy_history_is_read_as_ok_until_the_jump(prometheus: str) -> None:
    # The walk's readings before the jump: both gates ok at every check of the advances.
    timeline = backtested(prometheus)
    for advance in timeline.transitions[:2]:
        assert {r.gate: r.outcome.value for r in advance.readings} == {
            "error-rate": "ok",
            "errors-vs-old": "ok",
        }


def test_every_query_of_the_plan_is_tried_before_the_walk(prometheus: str) -> None:
    source = AsOf(PrometheusGates(prometheus))
    assert query_errors(source, parse_plan(PLAN), T0, END) == []

    broken = parse_plan(PLAN.replace("sum(rate(app_requests_total{variant", "sum(rate(((", 1))
    problems = query_errors(source, broken, T0, END)
    assert len(problems) == 1
    assert problems[0].startswith("gate error-rate (step 1): bad query: ")


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


def live_transitions(store: Store, prometheus: str) -> list[dict[str, Any]]:
    """The live controller on the same hours: start at T0, a check every minute."""
    clock = Clock(T0)
    rollouts = Rollouts(store, lambda: None)
    plan, source = parse_plan_input(PLAN, None)
    rollouts.apply(plan, source, "test", T0)
    rollouts.act(plan.rollout, Action.START, actor="test", now=T0)
    gates = AsOf(PrometheusGates(prometheus))
    scheduler = Scheduler(store, rollouts, gates, Leases(store, "r1"), clock)
    while clock.now <= END:
        result = scheduler.check(plan.rollout)
        assert (result.error, result.skipped) == (None, None)
        if rollouts.get(plan.rollout, clock.now)["status"] not in ACTIVE_STATUSES:
            break
        clock.now += MINUTE
    with store.read() as session:
        rows = (
            session.query(AuditRow)
            .filter(col(AuditRow.rollout) == plan.rollout, col(AuditRow.actor) == "controller")
            .order_by(col(AuditRow.id))
            .all()
        )
        return [
            {
                "at": minutes(r.at if r.at.tzinfo else r.at.replace(tzinfo=UTC)),
                "action": r.action,
                "from_step": r.from_step,
                "to_step": r.to_step,
                "status": r.to_status,
                "reason": r.reason,
                "readings": [(g["gate"], g["outcome"], g["value"]) for g in r.details["readings"]],
            }
            for r in rows
        ]


def test_the_backtest_prints_what_the_live_controller_decided(
    store: Store, prometheus: str
) -> None:
    live = live_transitions(store, prometheus)
    replayed = [
        {
            "at": minutes(e.at),
            "action": e.action,
            "from_step": e.from_step,
            "to_step": e.to_step,
            "status": e.status.value,
            "reason": e.reason,
            "readings": [(r.gate, r.outcome.value, r.value) for r in e.readings],
        }
        for e in backtested(prometheus).transitions
    ]

    assert [(t["at"], t["action"], t["from_step"], t["to_step"], t["status"]) for t in live] == (
        EXPECTED
    )
    assert replayed == live  # the same instants, decisions, reasons and readings
    assert live[-1]["status"] == Status.ROLLED_BACK.value
