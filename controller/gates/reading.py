"""Reading a rollout's gates at one check: the variables a gate query may refer to and
one reading per gate that applies. The scheduler, ``rollout backtest`` and
``rollout test-gate`` all read through here, so they pass the same variables."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from controller.gates.prometheus import GateSource
from stages.plan import Gate
from stages.state import GateReading, RolloutState, serving


def query_variables(state: RolloutState, now: datetime) -> dict[str, str]:
    """What a gate query may refer to as ``${name}``. ``step_window`` is the time since
    the current step began, in whole seconds and at least 1 (a range selector of 0 is
    refused): a compare gate counts ``increase(...[${step_window}])`` over this step only."""
    step = state.plan.steps[state.step]
    began = state.step_started_at or now
    seconds = max(1, int((now - began).total_seconds()))
    return {
        "rollout": state.plan.rollout,
        "flag": state.plan.flag,
        "stage": step.stage.value,
        "step": str(state.step + 1),
        "percent": f"{serving(state).percent if state.baking else step.percent:g}",
        "new_variant": state.plan.new_variant,
        "old_variant": state.plan.old_variant,
        "step_window": f"{seconds}s",
    }


def read_gates(
    gates: GateSource, state: RolloutState, now: datetime, deadline: float | None = None
) -> list[GateReading]:
    variables = query_variables(state, now)
    return [read_gate(gates, gate, variables, now, state, deadline) for gate in state.gates_now()]


def read_gate(
    gates: GateSource,
    gate: Gate,
    variables: Mapping[str, str],
    now: datetime,
    state: RolloutState,
    deadline: float | None = None,
) -> GateReading:
    """One gate's reading. Only a compare gate is given the state (its evidence from
    earlier steps): a source that reads threshold gates only needs no ``state``."""
    if gate.compare is None:
        return gates.read(gate, variables, now, deadline=deadline)
    return gates.read(gate, variables, now, deadline=deadline, state=state)
