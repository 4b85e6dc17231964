"""What ``rollout demo`` shows: a live table on a terminal (rich), plain lines otherwise
(a log, a pipe, a test), nothing when quiet; and the summary at the end."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from controller.demo.service import SIDES, Traffic

if TYPE_CHECKING:
    from controller.demo.runner import DemoResult

# Automatic decisions that take exposure back.
ROLLBACK_ACTIONS = frozenset({"step_back", "rollback"})
# Narrower terminals get the tables one below the other.
SIDE_BY_SIDE_WIDTH = 140
# Plain output repeats traffic and gates this often, so a log shows the run's pulse.
PLAIN_PULSE_S = 10.0
# A threshold gate's levels, in the order they are shown (mildest first).
THRESHOLD_NAMES = (
    "hold_above",
    "rollback_above",
    "abort_above",
    "hold_below",
    "rollback_below",
    "abort_below",
)
OUTCOME_STYLES = {
    "ok": "green",
    "hold": "yellow",
    "no_data": "dim",
    "error": "magenta",
    "rollback": "bold red",
    "abort": "bold red",
}
STATUS_STYLES = {
    "running": "green",
    "rolling_back": "bold red",
    "rolled_back": "bold red",
    "paused": "yellow",
    "awaiting_approval": "yellow",
    "completed": "bold green",
    "aborted": "bold red",
}


@dataclass(frozen=True)
class Frame:
    """One poll's worth of what there is to show."""

    rollout: dict[str, Any]
    gates: list[dict[str, Any]]  # the newest evaluation of each gate
    traffic: Traffic
    elapsed: float


class Display(Protocol):
    def intro(self, lines: list[str]) -> None: ...
    def update(self, frame: Frame) -> None: ...
    def event(self, event: dict[str, Any]) -> None: ...
    def alert(self, event: dict[str, Any]) -> None: ...
    def note(self, text: str) -> None: ...
    def __enter__(self) -> Display: ...
    def __exit__(self, *exc: object) -> None: ...


def make_display(out: TextIO, *, quiet: bool = False) -> Display:
    if quiet:
        return QuietDisplay()
    if out.isatty():
        return LiveDisplay(out)
    return PlainDisplay(out)


# -- text shared by both forms ----------------------------------------------------------


def ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2%}"


def value_text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def event_text(event: dict[str, Any]) -> str:
    move = ""
    if event.get("to_status"):
        move = f" -> {event['to_status']} at step {_step(event.get('to_step'))}"
    return f"{event['actor']}: {event['action']}{move}: {event['reason'] or '-'}"


def serving_text(rollout: dict[str, Any]) -> str:
    serving = rollout["serving"]
    text = f"{serving['percent']:g}%"
    if serving["regions"] and serving["stage"] == "regional":
        text += f" + everyone in {', '.join(serving['regions'])}"
    return text + (", dual-write on" if serving["shadow"] else ", dual-write off")


def gate_line(gate: dict[str, Any], thresholds: dict[str, str] | None = None) -> str:
    limits = (thresholds or {}).get(gate["gate"])
    return f"{gate['gate']} {value_text(gate['value'])} {gate['outcome']}" + (
        f" ({limits})" if limits else ""
    )


def plan_gates(rollout: dict[str, Any]) -> list[dict[str, Any]]:
    """Every gate of the rollout's plan, its own and its steps', once each, in order."""
    plan = rollout.get("plan") or {}
    gates: dict[str, dict[str, Any]] = {}
    for gate in [
        *plan.get("gates", []),
        *(g for s in plan.get("steps", []) for g in s.get("gates", [])),
    ]:
        gates.setdefault(gate["name"], gate)
    return list(gates.values())


def thresholds_text(gate: dict[str, Any]) -> str:
    """What crossing means: ``rollback_above 400, abort_above 500``; for a compare gate
    its margin, ``worse_by 1.00 pp`` (percentage points of the new side's rate over the
    old's; of requests slower than ``slower_than`` for a latency comparison), and what a
    shown regression does when that is not a rollback."""
    if gate.get("kind") == "compare":
        text = f"worse_by {gate['worse_by'] * 100:.2f} pp"
        if gate.get("slower_than") is not None:
            text += f" (>{gate['slower_than']:g})"
        action = gate.get("on_regression", "rollback")
        return text if action == "rollback" else f"{text} -> {action}"
    return ", ".join(
        f"{name} {value_text(float(gate[name]))}"
        for name in THRESHOLD_NAMES
        if gate.get(name) is not None
    )


def thresholds_by_gate(rollout: dict[str, Any]) -> dict[str, str]:
    return {gate["name"]: thresholds_text(gate) for gate in plan_gates(rollout)}


def traffic_line(traffic: Traffic) -> str:
    sides = ", ".join(
        f"{side} {traffic.requests[side]} ({ratio_text(traffic.error_ratio(side))} errors)"
        for side in SIDES
    )
    injecting = "ON" if traffic.injecting else "off"
    return f"requests: {sides}; errors injected: {injecting}"


def event_time(event: dict[str, Any]) -> datetime:
    at = datetime.fromisoformat(event["at"])
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def is_automatic_rollback(event: dict[str, Any]) -> bool:
    return event["actor"] == "controller" and event["action"] in ROLLBACK_ACTIONS


def _step(index: int | None) -> str:
    return "-" if index is None else str(index + 1)


def _clock() -> str:
    return datetime.now().strftime("%H:%M:%S")


# -- quiet ------------------------------------------------------------------------------


class QuietDisplay:
    def intro(self, lines: list[str]) -> None:
        pass

    def update(self, frame: Frame) -> None:
        pass

    def event(self, event: dict[str, Any]) -> None:
        pass

    def alert(self, event: dict[str, Any]) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def __enter__(self) -> QuietDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


# -- plain lines ------------------------------------------------------------------------


class PlainDisplay:
    """A line per change, plus a pulse of traffic and gates every few seconds."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._last_position: tuple[str, int] | None = None
        self._last_pulse = 0.0

    def _print(self, text: str) -> None:
        print(f"[{_clock()}] {text}", file=self._out, flush=True)

    def intro(self, lines: list[str]) -> None:
        for line in lines:
            print(line, file=self._out)
        self._out.flush()

    def update(self, frame: Frame) -> None:
        rollout = frame.rollout
        position = (rollout["status"], rollout["step"])
        if position != self._last_position:
            self._last_position = position
            self._print(
                f"{rollout['status']}: step {rollout['step'] + 1}/{rollout['step_count']} "
                f"{rollout['step_label']}, serving {serving_text(rollout)}"
            )
        if time.monotonic() - self._last_pulse >= PLAIN_PULSE_S:
            self._last_pulse = time.monotonic()
            self._print(traffic_line(frame.traffic))
            if frame.gates:
                limits = thresholds_by_gate(rollout)
                self._print("gates: " + "; ".join(gate_line(g, limits) for g in frame.gates))

    def event(self, event: dict[str, Any]) -> None:
        self._print(event_text(event))

    def alert(self, event: dict[str, Any]) -> None:
        self._print(f"!!! AUTOMATIC ROLLBACK: {event_text(event)}")

    def note(self, text: str) -> None:
        self._print(f"* {text}")

    def __enter__(self) -> PlainDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self._out.flush()


# -- live table -------------------------------------------------------------------------


class LiveDisplay:
    """A table redrawn ~4 times a second; events and notes scroll above it."""

    def __init__(self, out: TextIO) -> None:
        self._console = Console(file=out)
        self._live = Live(
            Text("starting..."), console=self._console, refresh_per_second=4, transient=False
        )

    def intro(self, lines: list[str]) -> None:
        for line in lines:
            self._console.print(line, highlight=False)

    def update(self, frame: Frame) -> None:
        self._live.update(render(frame, self._console.width))

    def event(self, event: dict[str, Any]) -> None:
        self._console.print(f"[dim]{_clock()}[/] {event_text(event)}", highlight=False)

    def alert(self, event: dict[str, Any]) -> None:
        title = f"AUTOMATIC ROLLBACK at {_clock()}"
        body = Text(event_text(event), style="bold")
        self._console.print(Panel(body, title=title, border_style="bold red"))

    def note(self, text: str) -> None:
        self._console.print(f"[dim]{_clock()}[/] [cyan]{text}[/]", highlight=False)

    def __enter__(self) -> LiveDisplay:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()


def render(frame: Frame, width: int = 160) -> RenderableType:
    rollout = frame.rollout
    status = rollout["status"]
    head = Text.assemble(
        ("rollout ", "bold"),
        (rollout["name"], "bold cyan"),
        "  ",
        (status.upper(), STATUS_STYLES.get(status, "")),
        f"  step {rollout['step'] + 1}/{rollout['step_count']}",
        f"  serving {serving_text(rollout)}",
        f"  t+{frame.elapsed:.0f}s",
    )
    reason = Text(f"why: {rollout['reason'] or '-'}", style="dim")
    steps, traffic = steps_table(rollout), traffic_table(frame)
    gates = gates_table(frame.gates, plan_gates(rollout))
    if width < SIDE_BY_SIDE_WIDTH:
        return Group(head, reason, steps, gates, traffic)
    grid = Table.grid(padding=(0, 3))
    grid.add_row(steps, Group(gates, traffic))
    return Group(head, reason, grid)


def steps_table(rollout: dict[str, Any]) -> Table:
    table = Table(title="steps", title_justify="left", box=None, pad_edge=False)
    for column in ("", "#", "step", "hold", "in step"):
        table.add_column(column, no_wrap=True)
    current, status = rollout["step"], rollout["status"]
    for index, step in enumerate(rollout["plan"]["steps"]):
        is_current = index == current
        marker = "▶" if is_current else ("✓" if index < current else "")
        style = f"bold {STATUS_STYLES.get(status, '')}" if is_current else "dim"
        in_step = rollout.get("seconds_in_step") if is_current else None
        table.add_row(
            marker,
            str(index + 1),
            _step_label(step),
            str(step.get("hold", "-")),
            f"{in_step:.1f}s" if in_step is not None else "",
            style=style if is_current or index < current else "",
        )
    return table


def _step_label(step: dict[str, Any]) -> str:
    stage = str(step["stage"])
    if "percent" in step and stage in ("canary", "graduated"):
        return f"{stage} {step['percent']:g}%"
    if step.get("regions"):
        return f"{stage} +{','.join(step['regions'])}"
    if stage == "full" and step.get("shadow") is False:
        return "full, dual-write off"
    return stage + (" (approval)" if step.get("approval") else "")


def gates_table(readings: list[dict[str, Any]], gates: list[dict[str, Any]] | None = None) -> Table:
    """Every gate of the plan with its thresholds, and its newest reading if it has one
    (the gates of a later stage have none yet)."""
    table = Table(title="gates (newest reading)", title_justify="left", box=None)
    for column in ("gate", "value", "outcome", "threshold", "step"):
        table.add_column(column, no_wrap=True, min_width=len(column))
    newest = {reading["gate"]: reading for reading in readings}
    limits = {gate["name"]: thresholds_text(gate) for gate in gates or []}
    for name in [*limits, *(n for n in newest if n not in limits)]:
        reading = newest.get(name)
        if reading is None:
            table.add_row(name, "-", Text("-", style="dim"), limits[name], "")
            continue
        outcome = reading["outcome"]
        crossed = reading.get("threshold") not in (None, "")
        table.add_row(
            name,
            value_text(reading["value"]),
            Text(outcome, style=OUTCOME_STYLES.get(outcome, "")),
            Text(limits.get(name, ""), style=OUTCOME_STYLES.get(outcome, "") if crossed else ""),
            _step(reading.get("step")),
        )
    if not limits and not newest:
        table.add_row("(no gates: a timed ramp)", "", "", "", "")
    return table


def traffic_table(frame: Frame) -> Table:
    traffic = frame.traffic
    injecting = Text("ON", style="bold red") if traffic.injecting else Text("off", style="green")
    table = Table(title="demo service traffic", title_justify="left", box=None)
    for column in ("side", "requests", "errors", "error ratio"):
        table.add_column(column)
    for side in SIDES:
        table.add_row(
            side,
            str(traffic.requests[side]),
            str(traffic.errors[side]),
            ratio_text(traffic.error_ratio(side)),
        )
    table.caption = Text.assemble("errors injected on the new side: ", injecting)
    return table


# -- summary ----------------------------------------------------------------------------


def summary_lines(result: DemoResult) -> list[str]:
    rollout = result.rollout
    lines = ["", "== summary ==", "path taken (time from start, actor, action, reason):"]
    for event in result.events:
        offset = (event_time(event) - result.started_at).total_seconds()
        mark = "!!" if is_automatic_rollback(event) else "  "
        lines.append(f"{mark} {offset:+7.1f}s  {event_text(event)}")
    lines.append(
        f"final: {rollout['status']} at step {rollout['step'] + 1}/{rollout['step_count']} "
        f"({rollout['step_label']}), serving {serving_text(rollout)}"
        + ("" if result.ended == rollout["status"] else f"; the demo ended by {result.ended}")
    )
    lines.append(traffic_line(result.traffic))
    lines.extend(_detection_lines(result))
    verdict = "as expected" if result.expected else "NOT as expected"
    wanted = "a rollback after injected errors" if result.injected else "a completed rollout"
    lines.append(f"result: {verdict} ({wanted})")
    return lines


def _detection_lines(result: DemoResult) -> list[str]:
    injected = result.traffic.injected_at
    if injected is None:
        return ["errors injected: no"]
    offset = (injected - result.started_at).total_seconds()
    lines = [f"errors injected at {offset:+.1f}s"]
    detection, all_old = result.detection_seconds, result.all_old_seconds
    if detection is None or result.first_rollback is None:
        lines.append("  first rollback decision: none")
    else:
        action = result.first_rollback["action"]
        lines.append(f"  first rollback decision: {detection:.1f}s after injection ({action})")
    if all_old is None:
        lines.append("  every evaluation on the old side: not reached")
    else:
        lines.append(f"  every evaluation on the old side: {all_old:.1f}s after injection")
    return lines


def print_summary(result: DemoResult, out: TextIO) -> None:
    print("\n".join(summary_lines(result)), file=out, flush=True)
