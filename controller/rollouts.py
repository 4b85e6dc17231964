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
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from datetime import datetime
from functools import partial
from typing import Any, Literal

from sqlalchemy.orm import Session
from sqlmodel import col, select

from controller import freezes as freeze_rules
from controller import plan_history
from controller.errors import Conflict, Invalid, NotFound, Refused, VersionConflict
from controller.freezes import active_freezes, freezes_on, frozen_by, overridden
from controller.gates import history as gate_history
from controller.plan_checks import QuerySyntax, check_gate_queries, refusal
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
from stages.plan_diff import Change, created_summary, diff_plans
from stages.plan_diff import summary as diff_summary
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
    rollout: dict[str, Any] | None  # None: a dry run of a rollout not created yet
    changes: list[str]  # each change in words, as ``rollout diff`` prints it
    diff: list[dict[str, Any]] = dc_field(default_factory=list)  # stages.plan_diff.Change
    revision: int | None = None  # the plan revision written (None: unchanged, dry run)
    warnings: list[str] = dc_field(default_factory=list)  # e.g. gate syntax unchecked


FlagChange = Literal["create", "adopt", "keep"]


@dataclass(frozen=True)
class PlannedApply:
    """What applying a plan would do, once every check has passed; nothing written yet."""

    outcome: str  # "created", "updated", "unchanged"
    plan: Plan
    plan_data: dict[str, Any]
    row: RolloutRow | None  # the stored rollout (None: it is created)
    old: RolloutState | None
    state: RolloutState
    flag: FlagChange
    diff: tuple[Change, ...] = ()

    def texts(self) -> list[str]:
        if self.outcome == "created":
            return ["created"]
        return [c.text for c in self.diff]

    def summary(self) -> str:
        return created_summary(self.plan) if self.row is None else diff_summary(self.diff)

    def result(
        self,
        session: Session,
        warnings: list[str],
        now: datetime,
        row: RolloutRow | None = None,
    ) -> ApplyResult:
        row = row or self.row
        view = view_of(session, row, self.state, now) if row is not None else None
        return ApplyResult(
            self.outcome,
            view,
            self.texts(),
            [c.as_dict() for c in self.diff],
            warnings=list(warnings),
        )


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
        # Parses gate queries before a plan is applied (the configured Prometheus);
        # None: syntax unchecked, and every apply says so.
        self.query_syntax: QuerySyntax | None = None
        self.query_check_seconds = 5.0

    def state_of(self, row: RolloutRow) -> RolloutState:
        """The row's core state, with the global change windows."""
        return state_from_row(row, default_windows=self.default_windows)

    def transaction(self) -> AbstractContextManager[UnitOfWork]:
        """A unit of work for a use case that acts on rollouts among other writes."""
        return self._unit_of_work()

    def _unit_of_work(self) -> AbstractContextManager[UnitOfWork]:
        """A transaction that refreshes the snapshot after an audited change and writes
        each transition's webhook outbox rows."""
        return unit_of_work(self._store, on_change=self._on_change, notify=self.notify)

    # -- reads ---------------------------------------------------------------

    def list_all(self, now: datetime) -> list[dict[str, Any]]:
        with self._store.read() as session:
            rows = session.execute(select(RolloutRow).order_by(col(RolloutRow.name))).scalars()
            enabled = flags_enabled(session)
            freezes = active_freezes(session, now)
            views = []
            for r in rows:
                state = self.state_of(r)
                view = with_kill_switch(rollout_view(r, state, now), enabled.get(r.flag_key))
                views.append(with_freezes(view, frozen_by(freezes, r.name, state.plan, now)))
            return views

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

    def apply(
        self,
        plan: Plan,
        source: str,
        actor: str,
        now: datetime,
        *,
        reason: str = "",
        dry_run: bool = False,
    ) -> ApplyResult:
        """Create or update the rollout of ``plan``, and keep the plan as its next
        revision. ``dry_run`` runs every check of a real apply, in the same code, and
        writes nothing."""
        # Before any transaction: Prometheus may take its time, and a write lock must not.
        queries = check_gate_queries(plan, source, self.query_syntax, self.query_check_seconds)
        if queries.problems:
            raise Invalid(
                refusal(queries),
                [{k: p[k] for k in ("field", "line", "message")} for p in queries.problems],
            )
        plan_data = plan_to_dict(plan)
        if dry_run:
            with self._store.read() as session:
                change = self._planned_apply(session, plan, plan_data)
                return change.result(session, queries.warnings, now)
        with self._unit_of_work() as uow:
            change = self._planned_apply(uow.session, plan, plan_data)
            if change.outcome == "unchanged":
                return change.result(uow.session, queries.warnings, now)
            return self._write_apply(uow, change, source, actor, reason, now, queries.warnings)

    def diff(self, plan: Plan) -> dict[str, Any]:
        """What applying ``plan`` would change against the stored plan; checks nothing
        else (``apply(dry_run=True)`` does)."""
        with self._store.read() as session:
            row = session.get(RolloutRow, plan.rollout)
            if row is None:
                changes = [f"rollout {plan.rollout} would be {created_summary(plan)}"]
                return {
                    "rollout": plan.rollout,
                    "exists": False,
                    "revision": None,
                    "changes": changes,
                    "diff": [],
                }
            diff = diff_plans(self._stored_state(row).plan, plan)
            return {
                "rollout": plan.rollout,
                "exists": True,
                "revision": plan_history.latest(session, plan.rollout),
                "changes": [c.text for c in diff],
                "diff": [c.as_dict() for c in diff],
            }

    def _planned_apply(
        self, session: Session, plan: Plan, plan_data: dict[str, Any]
    ) -> PlannedApply:
        """Every check of an apply, reading only: what it would do, or the refusal."""
        row = session.get(RolloutRow, plan.rollout)
        if row is None:
            holder = session.execute(
                select(RolloutRow).where(col(RolloutRow.flag_key) == plan.flag)
            ).scalar_one_or_none()
            if holder is not None:
                raise Conflict(
                    f"flag {plan.flag!r} is already driven by rollout {holder.name!r}; "
                    "one flag has at most one rollout (delete the old one first)"
                )
            flag = _flag_change(session, plan)
            return PlannedApply("created", plan, plan_data, None, None, self._new_state(plan), flag)
        if row.flag_key != plan.flag:
            raise Conflict(
                f"rollout {row.name!r} drives flag {row.flag_key!r}; a plan cannot move it "
                f"to {plan.flag!r} (delete the rollout and apply again)"
            )
        old = self._stored_state(row)
        if row.plan == plan_data:
            return PlannedApply("unchanged", plan, plan_data, row, old, old, "keep")
        state = _replanned(old, plan)
        _check_serving_kept(old, state)
        flag = _flag_change(session, plan)
        return PlannedApply(
            "updated", plan, plan_data, row, old, state, flag, diff_plans(old.plan, plan)
        )

    def _stored_state(self, row: RolloutRow) -> RolloutState:
        """A stored rollout's core state, as an apply compares the new plan with it."""
        return self.state_of(row)

    def _new_state(self, plan: Plan) -> RolloutState:
        """The state a rollout created by an apply starts in."""
        return RolloutState(plan=plan, default_windows=self.default_windows)

    def _write_apply(
        self,
        uow: UnitOfWork,
        change: PlannedApply,
        source: str,
        actor: str,
        reason: str,
        now: datetime,
        warnings: list[str],
    ) -> ApplyResult:
        session, plan, state = uow.session, change.plan, change.state
        _write_flag(uow, plan, change.flag, actor, now)
        summary = change.summary()
        revision = plan_history.record(
            uow,
            rollout=plan.rollout,
            source=source,
            plan_data=change.plan_data,
            actor=actor,
            reason=reason,
            summary=summary,
            now=now,
        )
        said = f"plan {change.outcome}" + (f": {reason}" if reason else "")
        if change.row is None:
            row = RolloutRow(
                name=plan.rollout,
                flag_key=plan.flag,
                plan_source=source,
                plan=change.plan_data,
                version=1,
                created_at=now,
                updated_at=now,
                **state_columns(state),
            )
            session.add(row)
            details: dict[str, Any] = {
                "steps": len(plan.steps),
                "gates": [g.name for g in plan.gates],
            }
            version = 1
        else:
            extra = {"plan": change.plan_data, "plan_source": source}
            version = _cas(uow, change.row, state, now, bump=True, extra=extra)
            details = {"changes": change.texts()}
        uow.record(
            at=now,
            actor=actor,
            action="apply",
            rollout=plan.rollout,
            flag=plan.flag,
            before=change.old,
            after=state,
            version=version,
            reason=said,
            details={**details, "revision": revision, "summary": summary},
        )
        session.flush()
        row = _load(session, plan.rollout)
        return replace(change.result(session, warnings, now, row=row), revision=revision)

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
        admin: bool = False,
        within: UnitOfWork | None = None,
    ) -> dict[str, Any]:
        """``admin``: the person may force an advance or approve past a freeze.
        ``within``: the caller's unit of work (an alert's action commits with the
        alert's record); ``Refused`` comes before anything is written."""
        with nullcontext(within) if within is not None else self._unit_of_work() as uow:
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
            freezes = active_freezes(session, now)
            held = freezes_on(freezes, name, before.plan, now) if action in FROZEN else []
            if held and not (force and admin):
                raise Refused(freeze_rules.refusal(action.value, name, held))
            if held:
                # The override is part of the record, in the reason people read.
                reason = f"{reason or after.reason} ({overridden(held)})"
                after = replace(after, reason=reason)
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
                    **({"overrode_freezes": [f.id for f in held]} if held else {}),
                },
            )
            uow.after_commit(partial(self._transitioned, name, action.value))
            fresh = _load(session, name)
            view = with_kill_switch(rollout_view(fresh, after, now), enabled)
            return with_freezes(view, frozen_by(freezes, name, after.plan, now))

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


# Manual actions a freeze refuses: each widens exposure (or finishes the rollout).
FROZEN = frozenset({Action.ADVANCE, Action.APPROVE})

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


def _flag_change(session: Session, plan: Plan) -> FlagChange:
    """What the plan does to its flag; refused if the flag cannot take it."""
    row = session.get(FlagRow, plan.flag)
    if row is None:
        return "create"
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
    return "keep" if row.managed_by == plan.rollout else "adopt"


def _write_flag(uow: UnitOfWork, plan: Plan, change: FlagChange, actor: str, now: datetime) -> None:
    session = uow.session
    if change == "adopt":
        row = session.get(FlagRow, plan.flag)
        assert row is not None  # checked in this transaction by _flag_change
        row.managed_by = plan.rollout
        row.updated_at = now
    if change != "create":
        return
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
    """The API's view of a rollout, with what its flag's kill switch and freezes do to it."""
    view = with_kill_switch(rollout_view(row, state, now), flag_enabled(session, row.flag_key))
    return with_freezes(view, frozen_by(active_freezes(session, now), row.name, state.plan, now))


def with_freezes(view: dict[str, Any], frozen: list[dict[str, Any]]) -> dict[str, Any]:
    """``frozen_by``: the active freezes that hold the rollout's advances (docs/freezes.md);
    none for a finished rollout, which has nothing left to advance."""
    view["frozen_by"] = [] if view["status"] in _FINISHED else frozen
    return view


_FINISHED = frozenset({Status.COMPLETED.value, Status.ABORTED.value})


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
    """A reading as the audit keeps it; a compare reading keeps its counts per side, the
    interval and the budget spent, so the entry alone says why the gate decided."""
    view = gate_history.reading_view(r)
    kept = {k: view[k] for k in _READING_FIELDS}
    if view["compare"] is not None:
        kept["compare"] = view["compare"]
    return kept


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
