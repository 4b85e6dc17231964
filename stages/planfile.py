"""Plan files: YAML text or decoded JSON in, a validated ``Plan`` out, every problem listed.

YAML is first read into plain data while the line of every node is remembered by
path, so plan files and API bodies (which have no lines) share one validation.
Validation never stops at the first problem: a rejected file lists them all, each
with its path (``steps[3].percent``) and, for YAML, its line.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any, TypeVar

import yaml

from stages.durations import format_duration, parse_duration
from stages.plan import Gate, OnRollback, Plan, Stage, Step

Path = tuple[str | int, ...]  # int: a list index
T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)
Reader = Callable[["_Report", Path, object], T | None]

_PLAN_FIELDS = (
    *("rollout", "flag", "salt", "description", "interval", "min_evaluations"),
    *("max_gate_errors", "rollback_observe", "variants", "labels", "steps", "gates"),
)
_STEP_FIELDS = ("stage", "percent", "regions", "hold", "approval", "on_rollback", "shadow", "gates")
_ABOVE = ("hold_above", "rollback_above", "abort_above")
_BELOW = ("hold_below", "rollback_below", "abort_below")
_GATE_FIELDS = (
    *("name", "query", "baseline", "samples", "min_samples"),
    *(*_ABOVE, *_BELOW, "for", "delay", "stages"),
)
_ROLLOUT_NAME = re.compile(r"[a-z0-9][a-z0-9\-_.]{0,62}")
_FLAG_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_PERCENT_STAGES = (Stage.CANARY, Stage.GRADUATED)
_STAGE_ORDER = list(Stage)
_STEP_BACK = OnRollback.STEP_BACK
_SECOND = timedelta(seconds=1)
_MINUTE = timedelta(minutes=1)
# An alias bomb ("billion laughs") must not expand without bound.
_MAX_NODES = 100_000


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a plan: where (``gates[1].rollback_above``), what, which line."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path or "plan"
        if self.line is not None:
            where = f"{where} (line {self.line})"
        return f"{where}: {self.message}"


class PlanError(ValueError):
    """A plan was rejected; ``problems`` lists everything wrong with it."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


def parse_plan(text: str) -> Plan:
    """A validated ``Plan`` from plan-file YAML; ``PlanError`` lists every problem with its line."""
    report = _Report({})
    data = _read_yaml(text, report)
    if report.problems and data is None:
        raise PlanError(report.problems)
    plan = _plan(report, data)
    if plan is None or report.problems:
        raise PlanError(sorted(report.problems, key=lambda p: p.line or 0))
    return plan


def parse_plan_data(data: object) -> Plan:
    """A validated ``Plan`` from already decoded data (a JSON body); lines are ``None``."""
    report = _Report({})
    plan = _plan(report, data)
    if plan is None or report.problems:
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
    out["steps"] = _steps_to_dicts(plan.steps)
    out["gates"] = [_gate_to_dict(gate) for gate in plan.gates]
    return out


# --- reporting -------------------------------------------------------------------------


class _Report:
    def __init__(self, lines: dict[Path, int]) -> None:
        self.lines = lines
        self.problems: list[Problem] = []

    def add(self, path: Path, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(_render(path), message, line or self._line(path)))

    def _line(self, path: Path) -> int | None:
        # A missing field has no line of its own: point at the mapping that lacks it.
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None


def _render(path: Path) -> str:
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else f".{key}" if out else key
    return out


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__} value"


def _show(value: object) -> str:
    """A value as quoted in a message, cut short: a body may hold anything."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


# --- YAML with lines -------------------------------------------------------------------


class _TooLarge(Exception):
    pass


def _read_yaml(text: str, report: _Report) -> object:
    try:
        return _compose(text, report)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        report.add((), f"YAML syntax error: character #x{exc.character:04x}: {exc.reason}", line)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        detail = ": ".join(part for part in (exc.context, exc.problem) if part)
        report.add((), f"YAML syntax error: {detail}", mark.line + 1 if mark else None)
    except yaml.YAMLError as exc:
        report.add((), f"YAML syntax error: {exc}")
    except _TooLarge:
        report.add((), f"the plan is too large (more than {_MAX_NODES} YAML nodes)", 1)
    except RecursionError:
        # PyYAML composes recursively: "[[[[...]]]]" thousands deep exhausts the stack.
        report.add((), "the plan nests too deeply", 1)
    return None


def _compose(text: str, report: _Report) -> object:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            report.add((), "the plan is empty", 1)
            return None
        return _NodeReader(loader, report).read(node, ())
    finally:
        loader.dispose()


class _NodeReader:
    """Plain data from a composed YAML node tree, noting each path's line on the way."""

    def __init__(self, loader: yaml.SafeLoader, report: _Report) -> None:
        self.loader = loader
        self.report = report
        self.budget = _MAX_NODES
        self.active: set[int] = set()

    def read(self, node: yaml.Node, path: Path) -> object:
        self.report.lines.setdefault(path, node.start_mark.line + 1)
        self.budget -= 1
        if self.budget < 0:
            raise _TooLarge
        if id(node) in self.active:
            self.report.add(path, "an alias refers to itself")
            return None
        self.active.add(id(node))
        try:
            return self._read(node, path)
        finally:
            self.active.discard(id(node))

    def _read(self, node: yaml.Node, path: Path) -> object:
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.read(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.loader.construct_object(node)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[object, object]:
        self._check_twice(node, path)
        # Resolves "<<" merge keys as SafeLoader does: merged pairs first, so the
        # fields written in this mapping override them (and their lines win).
        self.loader.flatten_mapping(node)
        out: dict[object, object] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node, path)
            if key is None:
                continue
            key_path = (*path, key) if isinstance(key, str) else path
            self.report.lines[key_path] = key_node.start_mark.line + 1
            out[key] = self.read(value_node, key_path)
        return out

    def _check_twice(self, node: yaml.MappingNode, path: Path) -> None:
        # PyYAML keeps the last of two equal keys silently; a plan should say so.
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            if (key_node.tag, key_node.value) in seen:
                where = (*path, key_node.value)
                self.report.add(where, "field given twice", key_node.start_mark.line + 1)
            seen.add((key_node.tag, key_node.value))

    def _key(self, node: yaml.Node, path: Path) -> object:
        if isinstance(node, yaml.ScalarNode):
            key = self.loader.construct_object(node)
            if key is not None:
                return key
        self.report.add(path, "field names must be plain strings", node.start_mark.line + 1)
        return None


# --- values ----------------------------------------------------------------------------


def _field(
    report: _Report, fields: Mapping[str, object], path: Path, key: str, read: Reader[T], default: T
) -> T:
    """The field read by ``read``, or ``default`` when absent (null counts as absent)."""
    value = fields.get(key)
    if value is None:
        return default
    result = read(report, (*path, key), value)
    return default if result is None else result


def _required(
    report: _Report, fields: Mapping[str, object], path: Path, key: str, read: Reader[T]
) -> T | None:
    value = fields.get(key)
    if value is None:
        report.add((*path, key), f"{key} is required")
        return None
    return read(report, (*path, key), value)


def _fields(
    report: _Report, path: Path, value: object, allowed: Sequence[str], what: str
) -> dict[str, object] | None:
    """The known fields of a mapping; every unknown one is a problem (typos like rolback_above)."""
    if not isinstance(value, Mapping):
        report.add(path, f"{what} must be a mapping, not {_kind(value)}")
        return None
    out: dict[str, object] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            report.add(path, f"field names must be strings, not {_show(key)}")
        elif key not in allowed:
            report.add((*path, key), _unknown(key, allowed))
        else:
            out[key] = item
    return out


def _unknown(key: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(allowed)})"
    return f"unknown field {key!r}{hint}"


def _text(report: _Report, path: Path, value: object) -> str | None:
    if isinstance(value, bool):
        # YAML 1.1 reads unquoted on/off/yes/no as booleans: variants: {old: off} is one.
        report.add(path, "must be a string, not a boolean (quote on/off/yes/no in YAML)")
        return None
    if not isinstance(value, str):
        report.add(path, f"must be a string, not {_kind(value)}")
        return None
    if not value.strip():
        report.add(path, "must not be empty")
        return None
    return value


def _matching(pattern: re.Pattern[str], rule: str) -> Reader[str]:
    def read(report: _Report, path: Path, value: object) -> str | None:
        text = _text(report, path, value)
        if text is not None and not pattern.fullmatch(text):
            report.add(path, f"{text!r} is not a valid name: {rule}")
            return None
        return text

    return read


def _number(report: _Report, path: Path, value: object) -> float | None:
    # A boolean is an int to Python, but "rollback_above: true" is a mistake.
    if isinstance(value, bool) or not isinstance(value, int | float):
        report.add(path, f"must be a number, not {_kind(value)}")
        return None
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        report.add(path, "must be a finite number")
        return None
    return number


def _at_least(minimum: float) -> Reader[float]:
    def read(report: _Report, path: Path, value: object) -> float | None:
        number = _number(report, path, value)
        if number is not None and number < minimum:
            report.add(path, f"must be at least {minimum:g}, not {number:g}")
            return None
        return number

    return read


def _count(report: _Report, path: Path, value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        report.add(path, f"must be a whole number, not {_kind(value)}")
        return None
    if value < 1:
        report.add(path, f"must be at least 1, not {value}")
        return None
    return value


def _boolean(report: _Report, path: Path, value: object) -> bool | None:
    if not isinstance(value, bool):
        report.add(path, f"must be true or false, not {_kind(value)}")
        return None
    return value


def _duration(report: _Report, path: Path, value: object) -> timedelta | None:
    if not isinstance(value, str | int | float):
        report.add(path, f"must be a duration like 90s or 1h30m, not {_kind(value)}")
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        report.add(path, str(exc))
        return None


def _at_least_duration(minimum: timedelta) -> Reader[timedelta]:
    def read(report: _Report, path: Path, value: object) -> timedelta | None:
        span = _duration(report, path, value)
        if span is not None and span < minimum:
            report.add(path, f"must be at least {format_duration(minimum)}")
            return None
        return span

    return read


def _choice(kind: type[E]) -> Reader[E]:
    def read(report: _Report, path: Path, value: object) -> E | None:
        names = [member.value for member in kind]
        if isinstance(value, str) and value in names:
            return kind(value)
        report.add(path, f"{_show(value)} is not one of: {', '.join(names)}")
        return None

    return read


def _list(report: _Report, path: Path, value: object) -> list[object] | None:
    if not isinstance(value, list | tuple):
        report.add(path, f"must be a list, not {_kind(value)}")
        return None
    return list(value)


def _percent(report: _Report, path: Path, value: object) -> float | None:
    number = _number(report, path, value)
    if number is None:
        return None
    if not 0 <= number <= 100:
        report.add(path, f"percent must be between 0 and 100, not {number:g}")
        return None
    # Bucketing resolves 0.01 %: a finer percent would silently round.
    if abs(number * 100 - round(number * 100)) > 1e-6:
        report.add(path, f"percent has at most 2 decimals (0.01 % steps), not {number:g}")
        return None
    return round(number, 2)  # 12.3400000001 from float arithmetic reads as 12.34


def _regions(report: _Report, path: Path, value: object) -> tuple[str, ...] | None:
    items = _list(report, path, value)
    if items is None:
        return None
    regions: list[str] = []
    for i, item in enumerate(items):
        region = _text(report, (*path, i), item)
        if region in regions:
            report.add((*path, i), f"region {region!r} listed twice")
        elif region is not None:
            regions.append(region)
    return tuple(regions) if len(regions) == len(items) else None


def _stage_set(report: _Report, path: Path, value: object) -> frozenset[Stage] | None:
    items = _list(report, path, value)
    if items is None:
        return None
    if not items:
        report.add(path, "list at least one stage, or leave stages out for all of them")
        return None
    stages = [_choice(Stage)(report, (*path, i), item) for i, item in enumerate(items)]
    return frozenset(s for s in stages if s is not None)


def _labels(report: _Report, path: Path, value: object) -> tuple[tuple[str, str], ...] | None:
    if not isinstance(value, Mapping):
        report.add(path, f"must be a mapping, not {_kind(value)}")
        return None
    labels: list[tuple[str, str]] = []
    for key, item in value.items():
        if not isinstance(key, str):
            report.add(path, f"label names must be strings, not {_show(key)}")
        elif not isinstance(item, str):
            report.add((*path, key), f"must be a string, not {_kind(item)}")
        else:
            labels.append((key, item))
    return tuple(labels)


# --- the plan --------------------------------------------------------------------------

_ROLLOUT_RULE = (
    "lowercase letters, digits, '-', '_', '.', starting with a letter or digit, at most 63"
)
_FLAG_RULE = "letters, digits, '-', '_', '.', at most 128"


def _plan(report: _Report, data: object) -> Plan | None:
    """The plan, or ``None`` when ``data`` is not a mapping; the caller checks ``report``."""
    fields = _fields(report, (), data, _PLAN_FIELDS, "a plan")
    if fields is None:
        return None
    rollout = _required(report, fields, (), "rollout", _matching(_ROLLOUT_NAME, _ROLLOUT_RULE))
    flag = _required(report, fields, (), "flag", _matching(_FLAG_KEY, _FLAG_RULE))
    old, new = _variants(report, fields.get("variants"))
    drafts = _drafts(report, fields.get("steps"))
    gates = _gates(report, ("gates",), fields.get("gates"))
    _check_gate_names(report, [*gates, *(gate for draft in drafts for gate in draft.gates)])
    return Plan(
        rollout=rollout or "",
        flag=flag or "",
        steps=_widen(report, drafts),
        gates=tuple(gate for _, gate in gates),
        salt=_field(report, fields, (), "salt", _text, None),
        description=_field(report, fields, (), "description", _description, ""),
        interval=_field(report, fields, (), "interval", _at_least_duration(_SECOND), _MINUTE),
        min_evaluations=_field(report, fields, (), "min_evaluations", _count, 3),
        max_gate_errors=_field(report, fields, (), "max_gate_errors", _count, 4),
        rollback_observe=_field(report, fields, (), "rollback_observe", _duration, 10 * _MINUTE),
        old_variant=old,
        new_variant=new,
        labels=_field(report, fields, (), "labels", _labels, ()),
    )


def _description(report: _Report, path: Path, value: object) -> str | None:
    if not isinstance(value, str):
        report.add(path, f"must be a string, not {_kind(value)}")
        return None
    return value


def _variants(report: _Report, value: object) -> tuple[str, str]:
    path: Path = ("variants",)
    fields = {} if value is None else _fields(report, path, value, ("old", "new"), "variants")
    if fields is None:
        return "off", "on"
    old = _field(report, fields, path, "old", _text, "off")
    new = _field(report, fields, path, "new", _text, "on")
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


def _drafts(report: _Report, value: object) -> list[_Draft]:
    path: Path = ("steps",)
    if value is None:
        report.add(path, "steps is required")
        return []
    items = _list(report, path, value)
    if items == []:
        report.add(path, "a plan needs at least one step")
    drafts = [_draft(report, (*path, i), item) for i, item in enumerate(items or [])]
    return [draft for draft in drafts if draft is not None]


def _draft(report: _Report, path: Path, value: object) -> _Draft | None:
    fields = _fields(report, path, value, _STEP_FIELDS, "a step")
    if fields is None:
        return None
    stage = _required(report, fields, path, "stage", _choice(Stage))
    percent = _field(report, fields, path, "percent", _percent, None)
    regions = _field(report, fields, path, "regions", _regions, None)
    shadow = _field(report, fields, path, "shadow", _boolean, None)
    gates = _gates(report, (*path, "gates"), fields.get("gates"))
    step = Step(
        stage=stage or Stage.SHADOW,
        percent=0.0,
        hold=_field(report, fields, path, "hold", _duration, timedelta(0)),
        approval=_field(report, fields, path, "approval", _boolean, False),
        on_rollback=_field(report, fields, path, "on_rollback", _choice(OnRollback), _STEP_BACK),
        gates=tuple(gate for _, gate in gates),
    )
    if stage is None:
        return None
    own = _own_percent(report, path, stage, fields, percent)
    _check_regions_and_shadow(report, path, stage, fields, regions, shadow)
    return _Draft(path, step, own, regions, shadow, gates)


def _own_percent(
    report: _Report, path: Path, stage: Stage, fields: Mapping[str, object], percent: float | None
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
    report: _Report,
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


def _widen(report: _Report, drafts: list[_Draft]) -> tuple[Step, ...]:
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


def _check_stage_order(report: _Report, draft: _Draft, before: Stage) -> bool:
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


def _next_percent(report: _Report, draft: _Draft, percent: float, *, check: bool) -> float:
    if draft.percent is None:
        return percent
    if check and draft.step.stage in _PERCENT_STAGES and draft.percent < percent:
        where = (*draft.path, "percent")
        report.add(where, f"percent must not fall: {draft.percent:g} after {percent:g}")
    return draft.percent


def _new_regions(report: _Report, draft: _Draft, released: list[str]) -> list[str]:
    if draft.step.stage is not Stage.REGIONAL or not draft.regions:
        return []
    new = [region for region in draft.regions if region not in released]
    if not new:
        already = ", ".join(draft.regions)
        report.add((*draft.path, "regions"), f"adds no new region: {already} already released")
    return new


def _shadow_stop(report: _Report, draft: _Draft, stopped_at: Path | None) -> Path | None:
    if draft.shadow is True and stopped_at is not None:
        where = (*draft.path, "shadow")
        report.add(where, f"dual-writes stopped at {_render(stopped_at)} and cannot restart")
    if draft.shadow is False and stopped_at is None:
        return draft.path
    return stopped_at


# --- gates -----------------------------------------------------------------------------


def _gates(report: _Report, path: Path, value: object) -> list[PathGate]:
    items = [] if value is None else _list(report, path, value)
    gates = [((*path, i), _gate(report, (*path, i), item)) for i, item in enumerate(items or [])]
    return [(where, gate) for where, gate in gates if gate is not None]


def _gate(report: _Report, path: Path, value: object) -> Gate | None:
    fields = _fields(report, path, value, _GATE_FIELDS, "a gate")
    if fields is None:
        return None
    name = _required(report, fields, path, "name", _text)
    query = _required(report, fields, path, "query", _text)
    if fields.get("min_samples") is not None and fields.get("samples") is None:
        report.add((*path, "min_samples"), "min_samples needs a samples query to count")
    gate = Gate(
        name=name or "",
        query=query or "",
        baseline=_field(report, fields, path, "baseline", _text, None),
        samples=_field(report, fields, path, "samples", _text, None),
        min_samples=_field(report, fields, path, "min_samples", _at_least(0), 0.0),
        sustain=_field(report, fields, path, "for", _duration, timedelta(0)),
        delay=_field(report, fields, path, "delay", _duration, timedelta(0)),
        stages=_field(report, fields, path, "stages", _stage_set, frozenset()),
        **_thresholds(report, path, fields),
    )
    # Without a name it cannot be checked for duplicates; its problem is reported.
    return gate if name is not None else None


def _thresholds(report: _Report, path: Path, fields: Mapping[str, object]) -> dict[str, float]:
    names = (*_ABOVE, *_BELOW)
    if all(fields.get(name) is None for name in names):
        report.add(path, f"a gate needs at least one threshold: {', '.join(names)}")
    values = {name: _field(report, fields, path, name, _number, None) for name in names}
    _check_order(report, path, values, _ABOVE, "at least")
    _check_order(report, path, values, _BELOW, "at most")
    return {name: value for name, value in values.items() if value is not None}


def _check_order(
    report: _Report,
    path: Path,
    values: Mapping[str, float | None],
    names: Sequence[str],
    relation: str,
) -> None:
    # hold, rollback, abort mark ever worse levels; checking neighbours covers every pair.
    present = [(name, value) for name in names if (value := values[name]) is not None]
    for (low, low_value), (high, high_value) in itertools.pairwise(present):
        wrong = high_value < low_value if relation == "at least" else high_value > low_value
        if wrong:
            report.add((*path, high), f"{high} must be {relation} {low} ({low_value:g})")


def _check_gate_names(report: _Report, gates: list[PathGate]) -> None:
    # Readings and audit events name gates: a step gate may not reuse a plan gate's name.
    seen: dict[str, Path] = {}
    for path, gate in gates:
        if gate.name in seen:
            first = _render(seen[gate.name])
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
        out.append(item)
    return out


def _gate_to_dict(gate: Gate) -> dict[str, Any]:
    out: dict[str, Any] = {"name": gate.name, "query": gate.query}
    if gate.baseline is not None:
        out["baseline"] = gate.baseline
    if gate.samples is not None:
        out["samples"] = gate.samples
        out["min_samples"] = _plain(gate.min_samples)
    out.update({name: _plain(value) for name, value in gate.thresholds().items()})
    out["for"] = format_duration(gate.sustain)
    out["delay"] = format_duration(gate.delay)
    if gate.stages:
        out["stages"] = [stage.value for stage in _STAGE_ORDER if stage in gate.stages]
    return out


def _plain(number: float) -> int | float:
    """``1`` rather than ``1.0`` where a person will read it."""
    return int(number) if number.is_integer() else number
