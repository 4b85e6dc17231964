"""Plan files: YAML text or decoded JSON in, a validated ``Plan`` out, every problem listed.

YAML is first read into plain data while the line of every node is remembered by
path (``stages.yamlsource``), so plan files and API bodies (which have no lines) share
one validation. Validation never stops at the first problem: a rejected file lists them
all (``stages.problems``), each with its path (``steps[3].percent``) and, for YAML, its line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from flags.codec import DOT_KEYS, KEY_PATTERN
from stages.bakefile import check_bake, read_bake
from stages.durations import format_duration
from stages.fields import (
    boolean,
    choice,
    count,
    duration,
    duration_between,
    field,
    known_fields,
    labels,
    matching,
    number,
    percentage,
    region_names,
    required,
    sequence,
    text,
)
from stages.gatefile import read_gate
from stages.limits import (
    MAX_GATES,
    MAX_INTERVAL,
    MAX_PLAN_BYTES,
    MAX_REGIONS,
    MAX_STEPS,
    MIN_INTERVAL,
)
from stages.plan import (
    DEFAULT_FALSE_ROLLBACK_BUDGET,
    Comparison,
    Dwell,
    Gate,
    GateMode,
    OnRollback,
    Plan,
    Stage,
    Step,
)
from stages.problems import Path, PlanError, Problem, Report, kind, render
from stages.windowfile import read_windows, windows_to_list
from stages.yamlsource import read_yaml

__all__ = [
    "PlanError",
    "Problem",
    "parse_plan",
    "parse_plan_data",
    "parse_stored_plan",
    "plan_size_problem",
    "plan_to_dict",
]

_PLAN_FIELDS = (
    *("rollout", "flag", "salt", "description", "interval", "min_evaluations"),
    *("max_gate_errors", "rollback_observe", "variants", "labels", "steps", "gates"),
    "false_rollback_budget",
    *("bake", "holdout"),
    *("windows", "dwell"),
)
_STEP_FIELDS = (
    *("stage", "percent", "regions", "hold", "approval", "on_rollback", "shadow", "gates"),
    "dwell",
)
_ROLLOUT_NAME = re.compile(r"[a-z0-9][a-z0-9\-_.]{0,62}")
_PERCENT_STAGES = (Stage.CANARY, Stage.GRADUATED)
_STAGE_ORDER = list(Stage)
_STEP_BACK = OnRollback.STEP_BACK
_MINUTE = timedelta(minutes=1)


def parse_plan(text: str) -> Plan:
    """A validated ``Plan`` from plan-file YAML; ``PlanError`` lists every problem with its line."""
    report = Report({})
    too_large = plan_size_problem(text)
    if too_large is not None:
        # Refused before it is read: reading is what a huge file would cost.
        raise PlanError([Problem("", too_large)])
    data = read_yaml(text, report)
    if report.problems and data is None:
        raise PlanError(report.problems)
    plan = _plan(report, data)
    if plan is None or report.problems or _stored_too_large(report, plan):
        raise PlanError(sorted(report.problems, key=lambda p: p.line or 0))
    return plan


def parse_plan_data(data: object) -> Plan:
    """A validated ``Plan`` from already decoded data (a JSON body); lines are ``None``."""
    return _from_data(Report({}), data)


def parse_stored_plan(data: object) -> Plan:
    """A plan read back from storage: validated as at apply but for the limits
    (``stages.limits``), which a plan stored before them may cross. Durations beyond
    them reach the scheduler, which isolates a rollout it cannot compute."""
    return _from_data(Report({}, limits=False), data)


def _from_data(report: Report, data: object) -> Plan:
    plan = _plan(report, data)
    if plan is None or report.problems or _stored_too_large(report, plan):
        raise PlanError(report.problems)
    return plan


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The canonical JSON-compatible form: ``parse_plan_data(plan_to_dict(p)) == p``."""
    out: dict[str, Any] = {"rollout": plan.rollout, "flag": plan.flag}
    if plan.salt is not None:
        out["salt"] = plan.salt
    if plan.description:
        out["description"] = plan.description
    out["interval"] = format_duration(plan.interval)
    out["min_evaluations"] = plan.min_evaluations
    out["max_gate_errors"] = plan.max_gate_errors
    out["rollback_observe"] = format_duration(plan.rollback_observe)
    out["variants"] = {"old": plan.old_variant, "new": plan.new_variant}
    if plan.labels:
        out["labels"] = dict(plan.labels)
    if plan.false_rollback_budget != DEFAULT_FALSE_ROLLBACK_BUDGET:
        out["false_rollback_budget"] = plan.false_rollback_budget
    if plan.bake is not None:
        out["bake"] = format_duration(plan.bake)
    if plan.holdout is not None:
        out["holdout"] = _plain(plan.holdout)
    # Only when set: a stored plan from before windows keeps its exact form.
    if plan.windows:
        out["windows"] = windows_to_list(plan.windows)
    if plan.dwell is not Dwell.ALWAYS:
        out["dwell"] = plan.dwell.value
    out["steps"] = _steps_to_dicts(plan.steps)
    out["gates"] = [_gate_to_dict(gate) for gate in plan.gates]
    return out


def plan_size_problem(plan: str | object) -> str | None:
    """What is wrong with the size of a plan's text (UTF-8), or of decoded data (as
    compact JSON), or ``None`` when it is within ``MAX_PLAN_BYTES``."""
    if isinstance(plan, str):
        return _too_large("the plan text", _bytes(plan))
    try:
        text = _compact_json(plan)
    except (RecursionError, ValueError):  # nested past the stack, or an int past str()
        return "the plan cannot be measured: it nests too deeply or holds too long a number"
    return _too_large("the plan", _bytes(text))


def _stored_too_large(report: Report, plan: Plan) -> bool:
    """Whether the stored form is over the limit: aliases and merge keys can make a
    short file long, and a stored plan is read again with ``parse_plan_data``."""
    size = _bytes(_compact_json(plan_to_dict(plan)))
    problem = _too_large("the plan as stored (aliases and defaults filled in)", size)
    return problem is not None and report.limit((), problem)


def _compact_json(data: object) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=repr)


def _bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _too_large(what: str, size: int) -> str | None:
    if size <= MAX_PLAN_BYTES:
        return None
    return f"{what} is {size} bytes, more than {MAX_PLAN_BYTES} (256 KiB)"


# --- the plan --------------------------------------------------------------------------

_ROLLOUT_RULE = (
    "lowercase letters, digits, '-', '_', '.', starting with a letter or digit, at most 63"
)
_FLAG_RULE = "letters, digits, '-', '_', '.', at most 128"
_INTERVAL = duration_between(MIN_INTERVAL, MAX_INTERVAL)


def _plan(report: Report, data: object) -> Plan | None:
    """The plan, or ``None`` when ``data`` is not a mapping; the caller checks ``report``."""
    fields = known_fields(report, (), data, _PLAN_FIELDS, "a plan")
    if fields is None:
        return None
    rollout = required(report, fields, (), "rollout", matching(_ROLLOUT_NAME, _ROLLOUT_RULE))
    flag = required(report, fields, (), "flag", _flag_key)
    old, new = _variants(report, fields.get("variants"))
    drafts = _drafts(report, fields.get("steps"))
    gates = _gates(report, ("gates",), fields.get("gates"))
    _check_gate_count(report, len(gates), drafts)
    _check_gate_names(report, [*gates, *(gate for draft in drafts for gate in draft.gates)])
    bake, holdout = read_bake(report, fields)
    steps = _widen(report, drafts)
    check_bake(report, holdout, steps, gates)
    return Plan(
        rollout=rollout or "",
        flag=flag or "",
        steps=steps,
        gates=tuple(gate for _, gate in gates),
        salt=field(report, fields, (), "salt", text, None),
        description=field(report, fields, (), "description", _description, ""),
        interval=field(report, fields, (), "interval", _INTERVAL, _MINUTE),
        min_evaluations=field(report, fields, (), "min_evaluations", count, 3),
        max_gate_errors=field(report, fields, (), "max_gate_errors", count, 4),
        rollback_observe=field(report, fields, (), "rollback_observe", duration, 10 * _MINUTE),
        old_variant=old,
        new_variant=new,
        labels=field(report, fields, (), "labels", labels, ()),
        false_rollback_budget=field(
            report, fields, (), "false_rollback_budget", _budget, DEFAULT_FALSE_ROLLBACK_BUDGET
        ),
        bake=bake,
        holdout=holdout,
        windows=field(report, fields, (), "windows", read_windows, ()),
        dwell=field(report, fields, (), "dwell", choice(Dwell), Dwell.ALWAYS),
    )


def _budget(report: Report, path: Path, value: object) -> float | None:
    budget = number(report, path, value)
    if budget is not None and not 0 < budget <= 0.2:
        report.add(path, f"a probability above 0 and at most 0.2, not {budget:g}")
        return None
    return budget


def _flag_key(report: Report, path: Path, value: object) -> str | None:
    # The flag's own rule (flags.codec): a plan may not create a flag the API refuses.
    key = matching(KEY_PATTERN, _FLAG_RULE)(report, path, value)
    if key in DOT_KEYS:
        report.add(path, f"{key!r} is not a valid name: '.' and '..' are not addressable in a URL")
        return None  # not a limit: the flag API never let such a flag exist
    return key


def _description(report: Report, path: Path, value: object) -> str | None:
    if not isinstance(value, str):
        report.add(path, f"must be a string, not {kind(value)}")
        return None
    return value


def _variants(report: Report, value: object) -> tuple[str, str]:
    path: Path = ("variants",)
    fields = {} if value is None else known_fields(report, path, value, ("old", "new"), "variants")
    if fields is None:
        return "off", "on"
    old = field(report, fields, path, "old", text, "off")
    new = field(report, fields, path, "new", text, "on")
    if old == new:
        report.add((*path, "new"), f"the new variant must differ from the old one ({old!r})")
    return old, new


# --- steps -----------------------------------------------------------------------------

PathGate = tuple[Path, Gate]


@dataclass(frozen=True)
class _Draft:
    """A step as written, before its effective exposure is known."""

    path: Path
    step: Step  # percent, regions and shadow filled in by _widen
    percent: float | None  # its own: canary/graduated as written, shadow 0, full 100
    regions: tuple[str, ...] | None  # the regions a regional step adds
    shadow: bool | None  # None: not written, carries on from the step before
    gates: list[PathGate]


def _drafts(report: Report, value: object) -> list[_Draft]:
    path: Path = ("steps",)
    if value is None:
        report.add(path, "steps is required")
        return []
    items = sequence(report, path, value, MAX_STEPS, "steps")
    if items == []:
        report.add(path, "a plan needs at least one step")
    drafts = [_draft(report, (*path, i), item) for i, item in enumerate(items or [])]
    return [draft for draft in drafts if draft is not None]


def _draft(report: Report, path: Path, value: object) -> _Draft | None:
    fields = known_fields(report, path, value, _STEP_FIELDS, "a step")
    if fields is None:
        return None
    stage = required(report, fields, path, "stage", choice(Stage))
    percent = field(report, fields, path, "percent", percentage, None)
    regions = field(report, fields, path, "regions", region_names, None)
    shadow = field(report, fields, path, "shadow", boolean, None)
    gates = _gates(report, (*path, "gates"), fields.get("gates"))
    step = Step(
        stage=stage or Stage.SHADOW,
        percent=0.0,
        hold=field(report, fields, path, "hold", duration, timedelta(0)),
        approval=field(report, fields, path, "approval", boolean, False),
        on_rollback=field(report, fields, path, "on_rollback", choice(OnRollback), _STEP_BACK),
        gates=tuple(gate for _, gate in gates),
        dwell=field(report, fields, path, "dwell", choice(Dwell), None),
    )
    if stage is None:
        return None
    own = _own_percent(report, path, stage, fields, percent)
    _check_regions_and_shadow(report, path, stage, fields, regions, shadow)
    return _Draft(path, step, own, regions, shadow, gates)


def _own_percent(
    report: Report, path: Path, stage: Stage, fields: Mapping[str, object], percent: float | None
) -> float | None:
    """The percent a step sets by its stage; ``None`` for regional (keeps the last) or invalid."""
    where = (*path, "percent")
    given = fields.get("percent") is not None
    if stage is Stage.SHADOW:
        if percent not in (None, 0):
            report.add(where, "a shadow step serves nobody the new side: leave percent out")
        return 0.0
    if stage is Stage.FULL:
        if percent not in (None, 100):
            report.add(where, "a full step serves everyone: leave percent out")
        return 100.0
    if stage is Stage.REGIONAL:
        if given:
            report.add(where, "a regional step keeps the last percent elsewhere: leave it out")
        return None
    if not given:
        report.add(where, f"a {stage} step needs a percent")
    elif percent is not None and not 0 < percent < 100:
        report.add(where, f"a {stage} step's percent is above 0 and below 100, not {percent:g}")
        return None
    return percent


def _check_regions_and_shadow(
    report: Report,
    path: Path,
    stage: Stage,
    fields: Mapping[str, object],
    regions: tuple[str, ...] | None,
    shadow: bool | None,
) -> None:
    given = fields.get("regions") is not None
    if stage is Stage.REGIONAL and not given:
        report.add((*path, "regions"), "a regional step needs regions")
    elif stage is Stage.REGIONAL and regions == ():
        report.add((*path, "regions"), "a regional step needs at least one region")
    elif stage is not Stage.REGIONAL and given:
        report.add((*path, "regions"), f"regions belong on regional steps, not {stage} steps")
    if shadow is False and stage is not Stage.FULL:
        report.add((*path, "shadow"), "only a full step can stop dual-writes (shadow: false)")


def _widen(report: Report, drafts: list[_Draft]) -> tuple[Step, ...]:
    """Steps with their effective exposure, checking that each one only widens it."""
    steps: list[Step] = []
    percent = 0.0
    released: list[str] = []
    stopped_at: Path | None = None  # where dual-writes stopped
    for before, draft in zip([None, *drafts], drafts, strict=False):
        # A step out of stage order has one problem, not a falling percent on top.
        in_order = before is None or _check_stage_order(report, draft, before.step.stage)
        percent = _next_percent(report, draft, percent, check=in_order)
        released += _new_regions(report, draft, released)
        stopped_at = _shadow_stop(report, draft, stopped_at)
        shadow = stopped_at is None
        step = replace(draft.step, percent=percent, regions=frozenset(released), shadow=shadow)
        steps.append(step)
    return tuple(steps)


def _check_stage_order(report: Report, draft: _Draft, before: Stage) -> bool:
    stage = draft.step.stage
    where = (*draft.path, "stage")
    if before is Stage.FULL and stage is not Stage.FULL:
        report.add(where, f"full steps come last: {stage} after full")
        return False
    if _STAGE_ORDER.index(stage) < _STAGE_ORDER.index(before):
        order = " -> ".join(_STAGE_ORDER)
        report.add(where, f"stages only move forward ({order}): {stage} after {before}")
        return False
    return True


def _next_percent(report: Report, draft: _Draft, percent: float, *, check: bool) -> float:
    if draft.percent is None:
        return percent
    if check and draft.step.stage in _PERCENT_STAGES and draft.percent < percent:
        where = (*draft.path, "percent")
        report.add(where, f"percent must not fall: {draft.percent:g} after {percent:g}")
    return draft.percent


def _new_regions(report: Report, draft: _Draft, released: list[str]) -> list[str]:
    if draft.step.stage is not Stage.REGIONAL or not draft.regions:
        return []
    new = [region for region in draft.regions if region not in released]
    where = (*draft.path, "regions")
    if not new:
        already = ", ".join(draft.regions)
        report.add(where, f"adds no new region: {already} already released")
    elif len(released) <= MAX_REGIONS < len(released) + len(new):
        total = len(released) + len(new)
        report.limit(where, f"a plan releases at most {MAX_REGIONS} regions; this makes {total}")
    return new


def _shadow_stop(report: Report, draft: _Draft, stopped_at: Path | None) -> Path | None:
    if draft.shadow is True and stopped_at is not None:
        where = (*draft.path, "shadow")
        report.add(where, f"dual-writes stopped at {render(stopped_at)} and cannot restart")
    if draft.shadow is False and stopped_at is None:
        return draft.path
    return stopped_at


# --- gates -----------------------------------------------------------------------------


def _gates(report: Report, path: Path, value: object) -> list[PathGate]:
    items = [] if value is None else sequence(report, path, value, MAX_GATES, "gates")
    where = [(*path, i) for i in range(len(items or []))]
    gates = [(at, read_gate(report, at, item)) for at, item in zip(where, items or [], strict=True)]
    return [(where, gate) for where, gate in gates if gate is not None]


def _check_gate_count(report: Report, plan_gates: int, drafts: list[_Draft]) -> None:
    # Each gate is a query per check: the bound is on all of them, not on each list.
    total = plan_gates
    for draft in drafts:
        total += len(draft.gates)
        if total > MAX_GATES:
            where = (*draft.path, "gates")
            message = f"a plan has at most {MAX_GATES} gates, its own and its steps'"
            report.limit(where, f"{message}; this makes {total}")
            return


def _check_gate_names(report: Report, gates: list[PathGate]) -> None:
    # Readings and audit events name gates: a step gate may not reuse a plan gate's name.
    seen: dict[str, Path] = {}
    for path, gate in gates:
        if gate.name in seen:
            first = render(seen[gate.name])
            report.add((*path, "name"), f"gate name {gate.name!r} is already used by {first}")
        else:
            seen[gate.name] = path


# --- back to data ----------------------------------------------------------------------


def _steps_to_dicts(steps: Sequence[Step]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    released: frozenset[str] = frozenset()
    for step in steps:
        item: dict[str, Any] = {"stage": step.stage.value}
        if step.stage in _PERCENT_STAGES:
            item["percent"] = _plain(step.percent)
        if step.stage is Stage.REGIONAL:
            item["regions"] = sorted(step.regions - released)
        released = step.regions
        item["hold"] = format_duration(step.hold)
        item["approval"] = step.approval
        item["on_rollback"] = step.on_rollback.value
        item["shadow"] = step.shadow
        if step.gates:
            item["gates"] = [_gate_to_dict(gate) for gate in step.gates]
        if step.dwell is not None:
            item["dwell"] = step.dwell.value
        out.append(item)
    return out


def _gate_to_dict(gate: Gate) -> dict[str, Any]:
    if gate.compare is not None:
        return _compare_to_dict(gate, gate.compare)
    out: dict[str, Any] = {"name": gate.name, "query": gate.query}
    if gate.baseline is not None:
        out["baseline"] = gate.baseline
    if gate.samples is not None:
        out["samples"] = gate.samples
        out["min_samples"] = _plain(gate.min_samples)
    out.update({name: _plain(value) for name, value in gate.thresholds().items()})
    out["for"] = format_duration(gate.sustain)
    return _common_to_dict(gate, out)


def _compare_to_dict(gate: Gate, compare: Comparison) -> dict[str, Any]:
    out: dict[str, Any] = {"name": gate.name, "kind": "compare"}
    if compare.histogram is not None and compare.slower_than is not None:
        out.update(histogram=compare.histogram, slower_than=_plain(compare.slower_than))
    else:
        out.update(events=compare.events, exposures=compare.exposures)
    out.update(worse_by=_plain(compare.worse_by), min_samples=_plain(gate.min_samples))
    out.update(on_regression=compare.on_regression, requires=compare.requires, by=compare.by)
    out.update(new=compare.new, old=compare.old, srm_tolerance=_plain(compare.srm_tolerance))
    out.update(user_spread=_plain(compare.user_spread))
    return _common_to_dict(gate, out)


def _common_to_dict(gate: Gate, out: dict[str, Any]) -> dict[str, Any]:
    out["delay"] = format_duration(gate.delay)
    if gate.stages:
        out["stages"] = [stage.value for stage in _STAGE_ORDER if stage in gate.stages]
    if gate.mode is not GateMode.ENFORCE:
        out["mode"] = gate.mode.value
    return out


def _plain(number: float) -> int | float:
    """``1`` rather than ``1.0`` where a person will read it."""
    return int(number) if number.is_integer() else number
