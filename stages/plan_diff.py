"""What changed between two plans, field by field, in lines a person reads.

Plans are compared in their canonical form (``stages.planfile.plan_to_dict``), so two
files that parse to the same plan have no difference. Steps are matched by what they
serve (stage, percent, regions): a step inserted in the middle is one step added, not
every later step changed. Gates are matched by name. Paths are the plan file's own
(``steps[3].hold``, 0-based like every plan problem); the lines number steps from 1,
as people count them: ``step 4 (canary 5%): hold 3d -> 2d``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from stages.plan import Plan
from stages.planfile import plan_to_dict

Kind = Literal["added", "removed", "changed"]

_TOP_FIELDS = (
    *("flag", "salt", "description", "interval", "min_evaluations", "max_gate_errors"),
    *("rollback_observe", "false_rollback_budget"),
    *("bake", "holdout"),
)
_STEP_FIELDS = ("stage", "percent", "regions", "hold", "approval", "on_rollback", "shadow")
_SHOWN_CHARS = 60


@dataclass(frozen=True, slots=True)
class Change:
    path: str  # where, as in a plan file: "gates.error-rate.abort_above", "steps[3].hold"
    kind: Kind
    before: Any  # None when added
    after: Any  # None when removed
    text: str  # the line a person reads

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "before": self.before,
            "after": self.after,
            "text": self.text,
        }


def diff_plans(old: Plan, new: Plan) -> tuple[Change, ...]:
    """Every difference from ``old`` to ``new``; empty when they are the same plan."""
    before, after = plan_to_dict(old), plan_to_dict(new)
    changes: list[Change] = []
    changes += _top_fields(before, after)
    changes += _mapping("variants", before.get("variants", {}), after.get("variants", {}))
    changes += _mapping("labels", before.get("labels", {}), after.get("labels", {}))
    changes += _steps(old, new, before["steps"], after["steps"])
    changes += _gates("gates", before["gates"], after["gates"])
    return tuple(changes)


def summary(changes: Sequence[Change], most: int = 3) -> str:
    """One line for a list of revisions: the first few changes and how many more."""
    if not changes:
        return "no change"
    shown = "; ".join(change.text for change in changes[:most])
    rest = len(changes) - most
    return shown + (f"; and {rest} more" if rest > 0 else "")


def created_summary(plan: Plan) -> str:
    gates = {g.name for g in plan.gates} | {g.name for s in plan.steps for g in s.gates}
    return f"created: {_count(len(plan.steps), 'step')}, {_count(len(gates), 'gate')}"


# --- plan fields -------------------------------------------------------------------------


def _top_fields(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    return [
        _changed(name, before.get(name), after.get(name), name)
        for name in _TOP_FIELDS
        if before.get(name) != after.get(name)
    ]


def _mapping(prefix: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    out: list[Change] = []
    for key in [*after, *(k for k in before if k not in after)]:
        path = f"{prefix}.{key}"
        if key not in before:
            out.append(
                Change(path, "added", None, after[key], f"{path}: added ({_show(after[key])})")
            )
        elif key not in after:
            out.append(Change(path, "removed", before[key], None, f"{path}: removed"))
        elif before[key] != after[key]:
            out.append(_changed(path, before[key], after[key], path))
    return out


# --- steps -------------------------------------------------------------------------------


def _steps(
    old: Plan, new: Plan, before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> list[Change]:
    matcher = difflib.SequenceMatcher(
        None, [_exposure(s) for s in before], [_exposure(s) for s in after], autojunk=False
    )
    out: list[Change] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        paired = min(i2 - i1, j2 - j1) if op in ("equal", "replace") else 0
        for k in range(paired):
            i, j = i1 + k, j1 + k
            where = _step_name(new, j, was=i)
            out += _step_fields(f"steps[{j}]", where, before[i], after[j])
        for i in range(i1 + paired, i2):
            path = f"steps[{i}]"
            out.append(
                Change(path, "removed", dict(before[i]), None, f"{_step_name(old, i)}: removed")
            )
        for j in range(j1 + paired, j2):
            text = f"{_step_name(new, j)}: added (hold {after[j]['hold']})"
            out.append(Change(f"steps[{j}]", "added", None, dict(after[j]), text))
    return out


def _exposure(step: Mapping[str, Any]) -> tuple[object, ...]:
    return (step["stage"], step.get("percent"), tuple(step.get("regions", ())))


def _step_name(plan: Plan, index: int, was: int | None = None) -> str:
    moved = f", was step {was + 1}" if was is not None and was != index else ""
    return f"step {index + 1} ({plan.steps[index].label()}{moved})"


def _step_fields(
    path: str, where: str, before: Mapping[str, Any], after: Mapping[str, Any]
) -> list[Change]:
    out = [
        _changed(f"{path}.{name}", before.get(name), after.get(name), f"{where}: {name}", " ")
        for name in _STEP_FIELDS
        if before.get(name) != after.get(name)
    ]
    return out + _gates(f"{path}.gates", before.get("gates", []), after.get("gates", []))


# --- gates -------------------------------------------------------------------------------


def _gates(
    prefix: str, before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> list[Change]:
    old = {g["name"]: g for g in before}
    new = {g["name"]: g for g in after}
    out: list[Change] = []
    for name in [*new, *(n for n in old if n not in new)]:
        path = f"{prefix}.{name}"
        if name not in old:
            text = f"{path}: added ({_gate_text(new[name])})"
            out.append(Change(path, "added", None, dict(new[name]), text))
        elif name not in new:
            out.append(Change(path, "removed", dict(old[name]), None, f"{path}: removed"))
        else:
            fields = [*new[name], *(f for f in old[name] if f not in new[name])]
            out += [
                _changed(f"{path}.{f}", old[name].get(f), new[name].get(f), f"{path}.{f}")
                for f in fields
                if f != "name" and old[name].get(f) != new[name].get(f)
            ]
    return out


def _gate_text(gate: Mapping[str, Any]) -> str:
    if gate.get("kind") == "compare":
        return f"compare, worse_by {_show(gate.get('worse_by'))}"
    levels = [f"{k} {_show(v)}" for k, v in gate.items() if k.endswith(("_above", "_below"))]
    return ", ".join(levels) or "no thresholds"


# --- words -------------------------------------------------------------------------------


def _changed(path: str, before: Any, after: Any, label: str, sep: str = ": ") -> Change:
    kind: Kind = "added" if before is None else "removed" if after is None else "changed"
    if isinstance(before, str) and isinstance(after, str):
        shown_before, shown_after = _texts(before, after)
    else:
        shown_before, shown_after = _show(before), _show(after)
    return Change(path, kind, before, after, f"{label}{sep}{shown_before} -> {shown_after}")


def _texts(before: str, after: str) -> tuple[str, str]:
    """Two texts, each cut to a window that starts a little before where they differ:
    two long queries that differ at the end must not look the same."""
    if max(len(before), len(after)) <= _SHOWN_CHARS and "\n" not in before + after:
        return _show(before), _show(after)
    same = next(
        (i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b),
        min(len(before), len(after)),
    )
    start = max(0, same - 20)
    return _window(before, start), _window(after, start)


def _window(text: str, start: int) -> str:
    part = text[start : start + _SHOWN_CHARS]
    shown = ("…" if start else "") + part + ("…" if start + _SHOWN_CHARS < len(text) else "")
    return repr(" ".join(shown.split("\n")))


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    text = str(value)
    if isinstance(value, str) and (len(text) > _SHOWN_CHARS or not text.strip() or "\n" in text):
        text = repr(text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…")
    return text


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


__all__ = ["Change", "created_summary", "diff_plans", "summary"]
