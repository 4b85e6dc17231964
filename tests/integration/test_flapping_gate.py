"""A flapping Prometheus never lets a rollout advance; a steady one does.

A real loopback peer answers the Prometheus HTTP API, healthy and breaching by turns;
the real ``PrometheusGates`` reads it and the real ``Scheduler`` checks the rollout on a
real database (SQLite and PostgreSQL), one check per tick of a clock the test moves.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import col

from controller.gates.prometheus import PrometheusGates
from controller.jobs.scheduler import CheckResult, Scheduler
from controller.rollouts import Rollouts, parse_plan_input
from controller.storage.leases import Leases
from controller.storage.store import Store
from controller.storage.tables import AuditRow
from stages.actions import Action
from stages.decisions import Hold
from stages.state import Outcome
from tests.hostile import HostilePeer, Request, http_response, prometheus_answer, respond

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
HEALTHY, BREACHING = 0.001, 0.5  # error ratios, against rollback_above 0.01


def plan(name: str, sustain: str, min_evaluations: int = 3) -> str:
    return f"""
rollout: {name}
flag: {name}
interval: 10s
min_evaluations: {min_evaluations}
steps:
  - {{stage: shadow, hold: 20s}}
  - {{stage: canary, percent: 5, hold: 20s}}
  - {{stage: graduated, percent: 50, hold: 20s}}
gates:
  - name: errors
    query: 'sum(rate(errors_total{{rollout="${{rollout}}"}}[1m]))'
    rollback_above: 0.01
    for: {sustain}
"""


@dataclass
class FlappingPrometheus:
    """Answers instant queries healthy and breaching by turns, or steadily healthy."""

    flapping: bool = True
    answered: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: Request) -> bytes:
        if request.path != "/api/v1/query" or "errors_total" not in request.params.get("query", ""):
            return http_response(
                b'{"status":"error","error":"unexpected request"}', "400 Bad Request"
            )
        with self._lock:
            breach = self.flapping and len(self.answered) % 2 == 1
            value = BREACHING if breach else HEALTHY
            self.answered.append(value)
        return prometheus_answer(value)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Rig:
    rollouts: Rollouts
    scheduler: Scheduler
    prometheus: FlappingPrometheus
    store: Store
    clock: Clock

    def tick(self, name: str, seconds: float = 10) -> CheckResult:
        """The rollout's interval has passed: check it once, synchronously."""
        self.clock.now += timedelta(seconds=seconds)
        result = self.scheduler.check(name)
        assert (result.error, result.skipped) == (None, None)
        return result

    def rollout(self, name: str) -> dict[str, Any]:
        return self.rollouts.get(name, self.clock.now)

    def transitions(self, name: str) -> list[tuple[str, int | None]]:
        with self.store.read() as s:
            rows = (
                s.query(AuditRow).filter(col(AuditRow.rollout) == name).order_by(col(AuditRow.id))
            )
            return [(r.action, r.to_step) for r in rows.all() if r.actor == "controller"]


@pytest.fixture
def rig(store: Store) -> Iterator[Rig]:
    prometheus = FlappingPrometheus()
    with HostilePeer(respond(prometheus)) as peer:
        clock = Clock()
        rollouts = Rollouts(store, lambda: None)
        gates = PrometheusGates(peer.url, timeout_seconds=5)
        scheduler = Scheduler(store, rollouts, gates, Leases(store, "r1"), clock)
        yield Rig(rollouts, scheduler, prometheus, store, clock)


def start(rig: Rig, text: str) -> str:
    parsed, source = parse_plan_input(text, None)
    rig.rollouts.apply(parsed, source, "test", rig.clock.now)
    rig.rollouts.act(parsed.rollout, Action.START, actor="test", now=rig.clock.now)
    return parsed.rollout


def test_a_flapping_gate_never_advances_and_a_steady_one_then_does(rig: Rig) -> None:
    name = start(rig, plan("flappy", sustain="30s"))

    flapped = [rig.tick(name) for _ in range(60)]  # ten minutes, dwell long over

    outcomes = [r.readings[0].outcome for r in flapped]
    assert outcomes == [Outcome.OK, Outcome.ROLLBACK] * 30  # read through the real adapter
    assert all(isinstance(r.decision, Hold) for r in flapped)  # nor sustained: no step back
    view = rig.rollout(name)
    assert (view["status"], view["step"]) == ("running", 0)
    assert rig.transitions(name) == []
    # Each healthy read says why it does not count: the breach 10 s before it.
    reasons = [r.decision.reason for r in flapped[2::2] if r.decision is not None]
    assert len(reasons) == 29
    assert all("rollback 10s ago, within for: 30s" in reason for reason in reasons)

    rig.prometheus.flapping = False
    steady = [rig.tick(name) for _ in range(3)]

    # The last breach was 10 s before the first steady tick: the third steady tick is
    # both 30 s (the `for`) past it and the third ok tick in a row.
    assert [type(r.decision) for r in steady[:2]] == [Hold, Hold]
    assert rig.transitions(name) == [("advance", 1)]
    view = rig.rollout(name)
    assert (view["status"], view["step"]) == ("running", 1)


def test_a_gate_flapping_slower_than_its_for_never_advances(rig: Rig) -> None:
    # Each ok read comes 10 s after a breach, past the 5 s `for`: only the run of
    # consecutive ok checks (never more than one) keeps the step from advancing.
    name = start(rig, plan("slow-flap", sustain="5s", min_evaluations=2))

    flapped = [rig.tick(name) for _ in range(30)]

    assert [r.readings[0].outcome for r in flapped] == [Outcome.OK, Outcome.ROLLBACK] * 15
    assert rig.transitions(name) == []
    assert rig.rollout(name)["ok_evaluations"] <= 1

    rig.prometheus.flapping = False
    steady = [rig.tick(name) for _ in range(2)]
    assert isinstance(steady[0].decision, Hold)
    assert rig.transitions(name) == [("advance", 1)]
