"""Rollout use cases: apply a plan, perform a manual action, apply an automatic
decision. One unit of work each (``controller.unit_of_work``): every write is a
compare-and-swap on the row, and its audit event, revision and webhook outbox rows
commit with it.

Two counters: ``version`` is what people read and send back (it moves when a person
acts, a plan changes or the controller makes a transition), ``row_version`` moves on
every write, including a gate check that only holds. A person's stale ``version`` is
refused; a gate check that raced with anything is dropped."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy.orm import Session
from sqlmodel import col, select

from controller.errors import Conflict, Invalid, NotFound, Refused, VersionConflict
from controller.gates import history as gate_history
from controller.storage.mapping import rollout_view, state_columns, state_from_row
from controller.storage.store import Store
from controller.storage.tables import FlagRow, RolloutRow
from controller.unit_of_work import Notifier, UnitOfWork, unit_of_work
from flags.codec import FlagDefinitionError, flag_from_dict
from stages.actions import Action, ActionRefused, perform
from stages.decisions import (
    TRANSITIONS,
    Advance,
    AwaitApproval,
    BeginBake,
    Complete,
    Decision,
    Pause,
    Recover,
    RollBack,
    StepBack,
)
from stages.plan import Plan
from stages.planfile import PlanError, parse_plan, parse_plan_data, plan_to_dict
from stages.state import ACTIVE_STATUSES, GateReading, RolloutState, Serving, Status, serving
from stages.transitions import (
    after_kill_switch,
    kill_switch_reason,
    pause_for_kill_switch,
    paused_by_kill_switch,
)
from stages.transitions import apply as apply_decision
from stages.windows import Window


@dataclass(frozen=True)
class ApplyResult:
    outcome: str  # "created", "updated", "unchanged"
    rollout: dict[str, Any]
    changes: list[str]


def plan_problems(error: PlanError) -> list[dict[str, object]]:
    # A problem of the whole text (YAML syntax, nesting, size) is the plan's own.
    return [
        {"field": p.path or "plan", "line": p.line, "message": p.message} for p in error.problems
    ]


def parse_plan_input(source: str | None, data: object | None) -> tuple[Plan, str]:
    """A plan from YAML text or an already decoded mapping; every problem by path."""
    try:
        if source is not None:
            return parse_plan(source), source
        plan = parse_plan_data(data)
        return plan, ""
    except PlanError as exc:
        raise Invalid(
            f"the plan has {len(exc.problems)} problem(s); nothing was applied",
            plan_problems(exc),
        ) from exc


class Rollouts:
    def __init__(
        self,
        store: Store,
        on_change: Callable[[], None],
        on_transition: Callable[[str, str], None] | None = None,
    ) -> None:
        self._store = store
        self._on_change = on_change
        # Told (rollout, action) after each committed transition, automatic or manual;
        # the composition root points it at the metrics.
        self.on_transition = on_transition
        # Told each transition's audit event inside its transaction, so that what it
        # writes (the webhook outbox) commits or rolls back with the transition.
        self.notify: Notifier | None = None
        # The global change windows (ROLLOUT_CHANGE_WINDOWS), for plans without their own.
        self.default_windows: tuple[Window, ...] = ()

    def state_of(self, row: RolloutRow) -> RolloutState:
        """The row's core state, with the global change windows."""
        return state_from_row(row, default_windows=self.default_windows)

    def _unit_of_work(self) -> AbstractContextManager[UnitOfWork]:
        """A transaction that refreshes the snapshot after an audited change and writes
        each transition's webhook outbox rows."""
        return unit_of_work(self._store, on_change=self._on_change, notify=self.notify)

    # -- reads ---------------------------------------------------------------

    def list_all(self, now: datetime) -> list[dict[str, Any]]:
        with self._store.read() as session:
            rows = session.execute(select(RolloutRow).order_by(col(RolloutRow.name))).scalars()
            enabled = flags_enabled(session)
            return [
                with_kill_switch(rollout_view(r, self.state_of(r), now), enabled.get(r.flag_key))
                for r in rows
            ]

    def get(self, name: str, now: datetime) -> dict[str, Any]:
        with self._store.read() as session:
            row = _load(session, name)
            return view_of(session, row, self.state_of(row), now)

    def running_names(self) -> list[str]:
        with self._store.read() as session:
            query = select(RolloutRow.name).where(
                col(RolloutRow.status).in_([s.value for s in ACTIVE_STATUSES])
            )
            return list(session.execute(query).scalars())

    # -- plan apply ----------------------------------------------------------

    def apply(self, plan: Plan, source: str, actor: str, now: datetime) -> ApplyResult:
        plan_data = plan_to_dict(plan)
        with self._unit_of_work() as uow:
            row = uow.session.get(RolloutRow, plan.rollout)
            if row is None:
                return self._create(uow, plan, plan_data, source, actor, now)
            return self._update(uow, row, plan, plan_data, source, actor, now)

    def _create(
        self,
        uow: UnitOfWork,
        plan: Plan,
        plan_data: dict[str, Any],
        source: str,
        actor: str,
        now: datetime,
    ) -> ApplyResult:
        session = uow.session
        holder = session.execute(
            select(RolloutRow).where(col(RolloutRow.flag_key) == plan.flag)
        ).scalar_one_or_none()
        if holder is not None:
            raise Conflict(
                f"flag {plan.flag!r} is already driven by rollout {holder.name!r}; "
                "one flag has at most one rollout (delete the old one first)"
            )
        _ensure_flag(uow, plan, actor, now)
        state = RolloutState(plan=plan, default_windows=self.default_windows)
        row = RolloutRow(
            name=plan.rollout,
            flag_key=plan.flag,
            plan_source=source,
            plan=plan_data,
            version=1,
            created_at=now,
            updated_at=now,
            **state_columns(state),
        )
        session.add(row)
        uow.record(
            at=now,
            actor=actor,
            action="apply",
            rollout=plan.rollout,
            flag=plan.flag,
            after=state,
            version=1,
            reason="plan created",
            details={"steps": len(plan.steps), "gates": [g.name for g in plan.gates]},
        )
        session.flush()
        return ApplyResult("created", view_of(session, row, state, now), ["created"])

    def _update(
        self,
        uow: UnitOfWork,
        row: RolloutRow,
        plan: Plan,
        plan_data: dict[str, Any],
        source: str,
        actor: str,
        now: datetime,
    ) -> ApplyResult:
        if row.flag_key != plan.flag:
            raise Conflict(
                f"rollout {row.name!r} drives flag {row.flag_key!r}; a plan cannot move it "
                f"to {plan.flag!r} (delete the rollout and apply again)"
            )
        session = uow.session
        old = self.state_of(row)
        if row.plan == plan_data:
            return ApplyResult("unchanged", view_of(session, row, old, now), [])
        changes = _describe_changes(row.plan, plan_data)
        state = _replanned(old, plan)
        _check_serving_kept(old, state)
        _ensure_flag(uow, plan, actor, now)
        version = _cas(
            uow, row, state, now, bump=True, extra={"plan": plan_data, "plan_source": source}
        )
        uow.record(
            at=now,
            actor=actor,
            action="apply",
            rollout=row.name,
            flag=row.flag_key,
            before=old,
            after=state,
            version=version,
            reason="plan updated",
            details={"changes": changes},
        )
        fresh = _load(session, row.name)
        return ApplyResult("updated", view_of(session, fresh, state, now), changes)

    # -- manual actions ------------------------------------------------------

    def act(
        self,
        name: str,
        action: Action,
        *,
        actor: str,
        now: datetime,
        reason: str = "",
        force: bool = False,
        immediate: bool = False,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        with self._unit_of_work() as uow:
            session = uow.session
            row = _load(session, name)
            if expected_version is not None and expected_version != row.version:
                raise VersionConflict(
                    f"rollout {name!r} is at version {row.version}, not {expected_version}: "
                    "it changed since you loaded it; reload and try again",
                    current_version=row.version,
                )
            before = self.state_of(row)
            # Shared-locked: a kill switch flipped meanwhile waits for this action, then
            # sees its result (and pauses what it started), or this action sees the switch.
            enabled = flag_enabled(session, row.flag_key, lock=True)
            try:
                after = perform(
                    before,
                    action,
                    now,
                    force=force,
                    immediate=immediate,
                    reason=reason,
                    flag_enabled=enabled,
                )
            except ActionRefused as exc:
                raise Refused(exc.reason) from exc
            version = _cas(uow, row, after, now, bump=True)
            uow.record_transition(
                at=now,
                actor=actor,
                action=action.value,
                rollout=name,
                flag=row.flag_key,
                before=before,
                after=after,
                version=version,
                reason=reason or after.reason,
                details={
                    "force": force,
                    "immediate": immediate,
                    "gates": {g: o.value for g, o in before.last_outcomes.items()},
                    "serving_before": _serving_json(before, enabled),
                    "serving_after": _serving_json(after, enabled),
                },
            )
            uow.after_commit(partial(self._transitioned, name, action.value))
            fresh = _load(session, name)
            return with_kill_switch(rollout_view(fresh, after, now), enabled)

    # -- automatic decisions -------------------------------------------------

    def record_decision(
        self,
        name: str,
        expected_row_version: int,
        decision: Decision,
        readings: Sequence[GateReading],
        now: datetime,
        *,
        checked_at: datetime | None = None,
        loaded: RolloutState | None = None,
    ) -> RolloutState:
        """Persist what ``decide`` said for one tick (the scheduler's shell). Refused if
        anything wrote the rollout since the tick loaded it. ``checked_at`` is the slot
        the next check is counted from (default ``now``); ``loaded`` is the state the
        tick decided on, which the unchanged ``row_version`` proves current (its plan
        is not parsed a second time)."""
        transition = isinstance(decision, TRANSITIONS)
        with self._unit_of_work() as uow:
            session = uow.session
            row = _load(session, name)
            if row.row_version != expected_row_version:
                raise VersionConflict(
                    f"rollout {name!r} changed during the tick", current_version=row.version
                )
            before = loaded if loaded is not None else self.state_of(row)
            after = apply_decision(before, decision, readings, now)
            slot = now if checked_at is None else checked_at
            version = _cas(uow, row, after, now, bump=transition, extra={"checked_at": slot})
            session.add_all(gate_history.rows_for(name, before.step, readings))
            if transition:
                enabled = flag_enabled(session, row.flag_key)
                action = DECISION_ACTIONS[type(decision)]
                uow.record_transition(
                    at=now,
                    actor="controller",
                    action=action,
                    rollout=name,
                    flag=row.flag_key,
                    before=before,
                    after=after,
                    version=version,
                    reason=decision.reason,
                    details={
                        "readings": [_reading_json(r) for r in readings],
                        "serving_before": _serving_json(before, enabled),
                        "serving_after": _serving_json(after, enabled),
                    },
                )
                uow.after_commit(partial(self._transitioned, name, action))
        return after

    # -- the kill switch ---------------------------------------------------------

    def follow_kill_switch(
        self, uow: UnitOfWork, flag: str, enabled: bool, *, actor: str, now: datetime
    ) -> str | None:
        """Inside the unit of work that flips ``flag``'s kill switch: pause the active
        rollout that drives it (disabled), or restart its step, still paused (enabled).
        Returns the rollout that made a transition (told to ``on_transition`` after the
        commit)."""
        query = select(RolloutRow).where(col(RolloutRow.flag_key) == flag)
        # Locked, so a scheduler tick racing with the kill switch loses, not the switch.
        row = uow.session.execute(query.with_for_update()).scalar_one_or_none()
        if row is None:
            return None
        before = state_from_row(row)
        if not enabled:
            reason = kill_switch_reason(flag, actor)
            if before.status not in ACTIVE_STATUSES or paused_by_kill_switch(before):
                return None
            after = pause_for_kill_switch(before, reason)
        else:
            if not paused_by_kill_switch(before):
                return None
            reason = (
                f"kill switch off: flag {flag} enabled by {actor}; it serves step "
                f"{before.step + 1} again and its dwell starts again. Still paused: resume "
                "to continue"
            )
            after = after_kill_switch(before, now, reason)
        version = _cas(uow, row, after, now, bump=True)
        uow.record_transition(
            at=now,
            actor=actor,
            action=Action.PAUSE.value,
            rollout=row.name,
            flag=flag,
            before=before,
            after=after,
            version=version,
            reason=reason,
            details={
                "kill_switch": not enabled,
                "serving_before": _serving_json(before, not enabled),
                "serving_after": _serving_json(after, enabled),
            },
        )
        uow.after_commit(partial(self._transitioned, row.name, Action.PAUSE.value))
        return row.name

    def _transitioned(self, name: str, action: str) -> None:
        if self.on_transition is not None:
            self.on_transition(name, action)

    def delete(self, name: str, *, actor: str, now: datetime) -> None:
        with self._unit_of_work() as uow:
            session = uow.session
            row = _load(session, name)
            state = state_from_row(row)
            if state.status in ACTIVE_STATUSES:
                raise Refused(
                    f"rollout {name!r} is {state.status}; abort it or let it finish before "
                    "deleting it"
                )
            flag = session.get(FlagRow, row.flag_key)
            if flag is not None and flag.managed_by == name:
                flag.managed_by = None
            session.delete(row)
            uow.record(
                at=now,
                actor=actor,
                action="delete",
                rollout=name,
                flag=row.flag_key,
                before=state,
                reason="rollout deleted",
            )


# Audit action names of the controller's own transitions.
DECISION_ACTIONS: dict[type, str] = {
    Advance: "advance",
    AwaitApproval: "await_approval",
    Complete: "complete",
    Pause: "pause",
    StepBack: "step_back",
    RollBack: "rollback",
    Recover: "recover",
    BeginBake: "bake",
}


def _load(session: Session, name: str) -> RolloutRow:
    row = session.get(RolloutRow, name)
    if row is None:
        raise NotFound(f"rollout {name!r} not found")
    return row


def _cas(
    uow: UnitOfWork,
    row: RolloutRow,
    state: RolloutState,
    now: datetime,
    *,
    bump: bool,
    extra: dict[str, Any] | None = None,
) -> int:
    """Write ``state`` only if the row is still as it was read; ``bump`` moves the
    version people see. Returns that version."""
    new_version = row.version + 1 if bump else row.version
    values = {
        **state_columns(state),
        **(extra or {}),
        "version": new_version,
        "row_version": row.row_version + 1,
        "updated_at": now,
    }
    uow.compare_and_swap(
        row,
        version="row_version",
        values=values,
        conflict=f"rollout {row.name!r} was changed by someone else; reload and try again",
    )
    return new_version


def _ensure_flag(uow: UnitOfWork, plan: Plan, actor: str, now: datetime) -> None:
    session = uow.session
    row = session.get(FlagRow, plan.flag)
    if row is None:
        definition = {
            "key": plan.flag,
            "type": "boolean",
            "variants": {plan.old_variant: False, plan.new_variant: True},
            "default_variant": plan.old_variant,
            "enabled": True,
            "salt": plan.salt,
            "description": f"driven by rollout {plan.rollout}",
            "rules": [],
        }
        session.add(
            FlagRow(
                key=plan.flag,
                definition=definition,
                version=1,
                managed_by=plan.rollout,
                created_at=now,
                updated_at=now,
            )
        )
        uow.record(
            at=now,
            actor=actor,
            action="flag.create",
            flag=plan.flag,
            rollout=plan.rollout,
            version=1,
            reason=f"created for rollout {plan.rollout}",
        )
        return
    try:
        flag = flag_from_dict(row.definition, key=row.key)
    except FlagDefinitionError as exc:  # stored flags are valid; this guards hand edits
        raise Conflict(f"stored flag {row.key!r} is invalid: {exc}") from exc
    problems: list[dict[str, object]] = []
    for field, variant in (("variants.old", plan.old_variant), ("variants.new", plan.new_variant)):
        if variant not in flag.variants:
            problems.append(
                {
                    "field": field,
                    "message": f"flag {flag.key!r} has no variant {variant!r} "
                    f"(it has {', '.join(sorted(flag.variants))})",
                }
            )
    if plan.salt is not None and flag.salt != plan.salt:
        problems.append(
            {
                "field": "salt",
                "message": f"flag {flag.key!r} buckets with salt {flag.bucketing_salt!r}; "
                "changing it would reshuffle users who already have the new side",
            }
        )
    if problems:
        raise Invalid("the plan does not fit its flag; nothing was applied", problems)
    if row.managed_by != plan.rollout:
        row.managed_by = plan.rollout
        row.updated_at = now


def _replanned(old: RolloutState, plan: Plan) -> RolloutState:
    """The state under the new plan: where the rollout is (a completed one at the new
    last step), minus what is known about gates the plan dropped."""
    if old.status is Status.PENDING:
        step = 0
    elif old.status is Status.COMPLETED:
        step = plan.last_step
    else:
        step = min(old.step, len(plan.steps) - 1)
    known = {g.name for i in range(len(plan.steps)) for g in plan.gates_for(i, baking=True)}
    return replace(
        old,
        plan=plan,
        step=step,
        max_step_reached=min(old.max_step_reached, plan.last_step),
        gate_errors={g: n for g, n in old.gate_errors.items() if g in known},
        history={g: m for g, m in old.history.items() if g in known},
        last_outcomes={g: o for g, o in old.last_outcomes.items() if g in known},
    )


def _check_serving_kept(old: RolloutState, new: RolloutState) -> None:
    """A plan change never moves what users get: only a recorded transition may.

    Whatever the status, what the rollout serves with the new plan must be what it
    serves now (stage, percent, regions, dual-write); the refusal says how to get
    there with transitions instead."""
    plan = new.plan
    if old.status in ACTIVE_STATUSES and old.step >= len(plan.steps):
        raise Conflict(
            f"rollout {plan.rollout!r} is {_said(old.status)} at step {old.step + 1}; the new "
            f"plan has only {len(plan.steps)} steps (pause and roll back first, or abort)"
        )
    before, after = serving(old), serving(new)
    if _exposure(before) == _exposure(after):
        return
    now_text = _exposure_text(before)
    field = f"steps[{after.step}]"
    then_text = f"{field} ({_exposure_text(after)})"
    moves = "applying it would move users now without a gate, approval or recorded transition"
    name = plan.rollout
    if old.status is Status.COMPLETED:
        raise Conflict(
            f"rollout {name!r} is completed and serves its last step ({now_text}); the new "
            f"plan would serve its last step {then_text}: {moves}. Keep the last step as it "
            f"is, or roll back first: `rollout rollback {name} --immediate`, apply the plan, "
            f"then `rollout retry {name}` starts it from its first step"
        )
    if old.status is Status.ROLLED_BACK:
        raise Conflict(
            f"rollout {name!r} is rolled back and serves its first step ({now_text}); the new "
            f"plan's {then_text} differs: {moves}. Keep steps[0] as it is, or abort first "
            f"(`rollout abort {name}`), apply the plan, then `rollout retry {name}` starts it "
            "from its first step"
        )
    raise Conflict(
        f"rollout {name!r} is {_said(old.status)} at step {before.step + 1} ({now_text}); the "
        f"new plan's {then_text} changes that step's exposure: {moves}. Keep {field} as it "
        "is (change only later steps), or abort and retry"
    )


def _exposure(served: Serving) -> tuple[object, ...] | None:
    # Serving nothing (pending, aborted) is the same whatever the plan says.
    if served.step < 0:
        return None
    return (served.stage, served.percent, served.regions, served.shadow)


def _exposure_text(served: Serving) -> str:
    text = f"{served.stage} {served.percent:g}%"
    if served.regions:
        text += " + " + ",".join(sorted(served.regions))
    return text + (", dual-write on" if served.shadow else ", dual-write off")


def _said(status: Status) -> str:
    return str(status).replace("_", " ")


def _describe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k} changed" for k in keys if old.get(k) != new.get(k)]


def _serving_json(state: RolloutState, flag_enabled: bool) -> dict[str, Any]:
    served = serving(state)
    if not flag_enabled:
        return {"step": served.step, "percent": 0.0, "regions": [], "kill_switch": True}
    return {"step": served.step, "percent": served.percent, "regions": sorted(served.regions)}


def flag_enabled(session: Session, key: str, *, lock: bool = False) -> bool:
    """Whether the flag's kill switch lets it serve; a missing flag serves nothing."""
    query = select(FlagRow.definition).where(col(FlagRow.key) == key)
    if lock:
        query = query.with_for_update(read=True)
    definition = session.execute(query).scalar_one_or_none()
    return definition is not None and definition.get("enabled", True) is not False


def flags_enabled(session: Session) -> dict[str, bool]:
    rows = session.execute(select(FlagRow.key, FlagRow.definition)).all()
    return {key: definition.get("enabled", True) is not False for key, definition in rows}


def view_of(
    session: Session, row: RolloutRow, state: RolloutState, now: datetime
) -> dict[str, Any]:
    """The API's view of a rollout, with what its flag's kill switch does to it."""
    return with_kill_switch(rollout_view(row, state, now), flag_enabled(session, row.flag_key))


def with_kill_switch(view: dict[str, Any], enabled: bool | None) -> dict[str, Any]:
    """A disabled flag gives everyone its default, whatever the rollout's step says:
    ``serving`` says so (0 %, no regions) and ``kill_switch`` says why."""
    killed = enabled is not True
    view["kill_switch"] = killed
    view["serving"] = {**view["serving"], "kill_switch": killed}
    if killed:
        view["serving"].update(percent=0.0, regions=[])
    return view


def _reading_json(r: GateReading) -> dict[str, Any]:
    view = gate_history.reading_view(r)
    return {k: view[k] for k in _READING_FIELDS}


_READING_FIELDS = (
    "gate",
    "outcome",
    "value",
    "baseline",
    "samples",
    "threshold",
    "threshold_value",
    "error",
)
