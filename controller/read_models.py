"""Named read models: what the API, the web UI and ``/metrics`` show that the use cases'
own reads (``Rollouts.get``, ``Flags.list_all``, ``TokenRegistry.list``) do not. Each
is one read transaction that returns plain data (views, frozen dataclasses, core
state), so no route or page opens a session or knows a table."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session
from sqlmodel import col, func, select

from controller import audit
from controller.audit_chain import VerifyReport
from controller.errors import NotFound
from controller.freezes import active_freezes, frozen_by
from controller.gates import history as gate_history
from controller.rollouts import flags_enabled, with_freezes, with_kill_switch
from controller.storage.mapping import rollout_view, state_from_row
from controller.storage.store import Store
from controller.storage.tables import AuditRow, GateEvaluationRow, RolloutRow
from stages.freezes import Freeze
from stages.state import ACTIVE_STATUSES, RolloutState
from stages.windows import Window


@dataclass(frozen=True, slots=True)
class RolloutSummary:
    """One rollout as the overview shows it."""

    view: dict[str, Any]  # the API's view, kill switch included
    state: RolloutState
    checked_at: datetime | None  # the slot the next check is counted from
    created_at: datetime
    latest_gates: list[dict[str, Any]]  # the newest evaluation of each gate


@dataclass(frozen=True, slots=True)
class RolloutEntry:
    """What the overview filters on, read from columns without parsing the plan."""

    name: str
    flag: str
    status: str
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class OverviewRead:
    entries: list[RolloutEntry]  # every rollout, by name
    summaries: list[RolloutSummary]  # the chosen ones, by name
    last_events: dict[str, dict[str, Any]]  # per chosen rollout: its newest action event


@dataclass(frozen=True, slots=True)
class RolloutDetail:
    """One rollout as its page shows it."""

    summary: RolloutSummary
    events: list[dict[str, Any]]  # its audit events, newest first
    gate_history: dict[str, list[dict[str, Any]]]  # by gate, newest first


@dataclass(frozen=True, slots=True)
class RolloutGauge:
    name: str
    state: RolloutState
    flag_enabled: bool  # False: the kill switch serves everyone the default


@dataclass(frozen=True, slots=True)
class LatestGate:
    rollout: str
    gate: str
    value: float | None
    baseline: float | None
    outcome: str
    at: datetime


class ReadModels:
    def __init__(self, store: Store) -> None:
        self._store = store
        # The global change windows (ROLLOUT_CHANGE_WINDOWS), for plans without their own.
        self.default_windows: tuple[Window, ...] = ()

    # -- rollouts ------------------------------------------------------------------

    def rollout_state(self, name: str) -> RolloutState:
        with self._store.read() as session:
            return state_from_row(_rollout(session, name), default_windows=self.default_windows)

    def rollout_summaries(self, now: datetime) -> list[RolloutSummary]:
        """Every rollout, by name."""
        with self._store.read() as session:
            rows = session.execute(select(RolloutRow).order_by(col(RolloutRow.name))).scalars()
            enabled = flags_enabled(session)
            freezes = active_freezes(session, now)
            return [
                self._summary(session, row, enabled.get(row.flag_key), now, freezes) for row in rows
            ]

    def rollout_overview(
        self, now: datetime, choose: Callable[[Sequence[RolloutEntry]], Collection[str]]
    ) -> OverviewRead:
        """Every rollout's entry, and the summaries of those ``choose`` picks from them,
        in one read: with hundreds of rollouts only a page's worth has its plan parsed
        and its gates read."""
        with self._store.read() as session:
            listed = session.execute(
                select(
                    RolloutRow.name, RolloutRow.flag_key, RolloutRow.status, RolloutRow.plan
                ).order_by(col(RolloutRow.name))
            ).all()
            entries = [
                RolloutEntry(name, flag, status, _labels(plan))
                for name, flag, status, plan in listed
            ]
            chosen = sorted(set(choose(entries)))
            if not chosen:
                return OverviewRead(entries, [], {})
            rows = session.execute(
                select(RolloutRow)
                .where(col(RolloutRow.name).in_(chosen))
                .order_by(col(RolloutRow.name))
            ).scalars()
            enabled = flags_enabled(session)
            freezes = active_freezes(session, now)
            summaries = [
                self._summary(session, row, enabled.get(row.flag_key), now, freezes) for row in rows
            ]
            return OverviewRead(entries, summaries, _last_events(session, chosen))

    def rollout_detail(
        self, name: str, now: datetime, *, events: int, gate_points: int
    ) -> RolloutDetail:
        """The rollout, up to ``events`` audit events and ``gate_points`` evaluations
        of each gate its plan has at any step."""
        with self._store.read() as session:
            row = _rollout(session, name)
            enabled = flags_enabled(session).get(row.flag_key)
            summary = self._summary(session, row, enabled, now, active_freezes(session, now))
            plan = summary.state.plan
            every_step = range(len(plan.steps))
            gates = dict.fromkeys(
                g.name for i in every_step for g in plan.gates_for(i, baking=True)
            )
            return RolloutDetail(
                summary=summary,
                events=audit.list_events(session, rollout=name, limit=events),
                gate_history={
                    gate: gate_history.history(session, name, gate=gate, limit=gate_points)
                    for gate in gates
                },
            )

    def gate_evaluations(
        self, name: str, *, gate: str | None, since: datetime | None, limit: int
    ) -> dict[str, Any]:
        """The newest evaluation of each gate, and the history (newest first)."""
        with self._store.read() as session:
            _rollout(session, name)
            return {
                "latest": gate_history.latest(session, name),
                "history": gate_history.history(session, name, gate=gate, since=since, limit=limit),
            }

    def _summary(
        self,
        session: Session,
        row: RolloutRow,
        enabled: bool | None,
        now: datetime,
        freezes: Sequence[Freeze] = (),
    ) -> RolloutSummary:
        state = state_from_row(row, default_windows=self.default_windows)
        view = with_kill_switch(rollout_view(row, state, now), enabled)
        return RolloutSummary(
            view=with_freezes(view, frozen_by(freezes, row.name, state.plan, now)),
            state=state,
            checked_at=row.checked_at,
            created_at=row.created_at,
            latest_gates=gate_history.latest(session, row.name),
        )

    # -- the audit log ---------------------------------------------------------------

    def audit_events(
        self,
        *,
        rollout: str | None = None,
        flag: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[dict[str, Any]]:
        with self._store.read() as session:
            return audit.list_events(
                session, rollout=rollout, flag=flag, limit=limit, before_id=before_id
            )

    def verify_audit(self) -> VerifyReport:
        with self._store.read() as session:
            return audit.verify(session)

    # -- /metrics --------------------------------------------------------------------

    def rollout_gauges(self) -> tuple[list[RolloutGauge], list[LatestGate]]:
        """Every rollout's state, and the newest evaluation of each gate of the active
        ones: three queries, whatever the number of rollouts."""
        with self._store.read() as session:
            rows = list(session.execute(select(RolloutRow)).scalars())
            enabled = flags_enabled(session)
            gauges = [
                RolloutGauge(r.name, state_from_row(r), enabled.get(r.flag_key) is True)
                for r in rows
            ]
            active = {g.name for g in gauges if g.state.status in ACTIVE_STATUSES}
            return gauges, _latest_gates(session, active)


def _rollout(session: Session, name: str) -> RolloutRow:
    row = session.get(RolloutRow, name)
    if row is None:
        raise NotFound(f"rollout {name!r} not found")
    return row


def _labels(plan: object) -> dict[str, str]:
    labels = plan.get("labels") if isinstance(plan, dict) else None
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _last_events(session: Session, rollouts: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The newest transition of each rollout (an action or a decision with a status after
    it; not a plan apply): what brought it where it is, since a hold writes no event."""
    newest = (
        select(func.max(AuditRow.id))
        .where(
            col(AuditRow.rollout).in_(rollouts),
            col(AuditRow.to_status).is_not(None),
            col(AuditRow.action) != "apply",
        )
        .group_by(col(AuditRow.rollout))
    )
    query = select(AuditRow).where(col(AuditRow.id).in_(newest))
    return {str(r.rollout): audit.event_view(r) for r in session.execute(query).scalars()}


def _latest_gates(session: Session, rollouts: Iterable[str]) -> list[LatestGate]:
    """Finished rollouts are left out by the caller: their gates are no longer read,
    and a last ``error`` would alert forever."""
    names: Sequence[str] = sorted(rollouts)
    if not names:
        return []
    newest = (
        select(func.max(GateEvaluationRow.id))
        .where(col(GateEvaluationRow.rollout).in_(names))
        .group_by(col(GateEvaluationRow.rollout), col(GateEvaluationRow.gate))
    )
    query = select(GateEvaluationRow).where(col(GateEvaluationRow.id).in_(newest))
    return [
        LatestGate(r.rollout, r.gate, r.value, r.baseline, r.outcome, r.at)
        for r in session.execute(query).scalars()
    ]
