"""Which gates apply when, for a rollout at a step where none do: a plan whose gates
list the stages they check (``stages: [canary, graduated]``) is not a timed ramp just
because its shadow step reads nothing."""

from __future__ import annotations

from stages.plan import Plan


def _groups(plan: Plan, steps: range, seen: set[str]) -> list[str]:
    """For each step of ``steps`` where a gate first applies: "step N (label): a, b"."""
    out = []
    for i in steps:
        new = [g.name for g in plan.gates_for(i) if g.name not in seen]
        if new:
            out.append(f"step {i + 1} ({plan.steps[i].label()}): {', '.join(new)}")
            seen.update(new)
    return out


def gates_elsewhere(plan: Plan, step: int, *, baking: bool = False) -> str | None:
    """Where the gates are when none applies at ``step`` (1-based steps, as people
    count); ``None`` when some gate applies there, or the plan has none at all (a
    timed ramp: advanced on dwell alone)."""
    if plan.gates_for(step, baking=baking):
        return None
    declared = dict.fromkeys(
        [g.name for g in plan.gates] + [g.name for s in plan.steps for g in s.gates]
    )
    if not declared:
        return None
    later = _groups(plan, range(step + 1, len(plan.steps)), set())
    in_bake = [g.name for g in plan.gates_for(plan.last_step, baking=True)] if plan.bake else []
    bake_only = [
        name for name in in_bake if name not in {g.name for g in plan.gates_for(plan.last_step)}
    ]
    if not baking and bake_only:
        later.append(f"the bake after step {plan.last_step + 1}: {', '.join(bake_only)}")
    if later:
        return "no gates at this step; gates from " + "; from ".join(later)
    earlier = _groups(plan, range(step), set())
    if earlier:
        return "no gates at this step or later; gates applied at " + "; at ".join(earlier)
    return f"gates {', '.join(declared)} apply at no step of this plan"
