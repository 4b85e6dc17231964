"""Detection latency: how long from the start of a failure until the controller acts.

Runs the ``rollout demo`` machinery headless (controller, demo service, real Prometheus,
the packaged plan) several times, injects errors on the new side when the rollout
reaches a fixed step, and measures from the injection:

(a) until the first automatic rollback decision in the audit list;
(b) until every evaluation serves the old side.

    python -m tests.benchmarks.detection_latency [--runs 3] [--inject-at 4] [--no-write]

Prints min/median/max and replaces the dated "Detection latency" section of
docs/benchmarks.md (other sections are left as they are).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from controller.demo.runner import (
    DemoOptions,
    DemoResult,
    default_plan_text,
    injection_step,
    run_demo,
)
from stages.decide import format_duration
from stages.planfile import parse_plan
from tests.benchmarks.docs_section import DOC, markers, replace_section

ROOT = Path(__file__).resolve().parents[2]
START, END = markers("detection-latency")
SCRAPE_INTERVAL = "1s"  # what the demo's PrometheusProcess is given


@dataclass(frozen=True)
class Run:
    decision_s: float
    all_old_s: float
    first_action: str
    reason: str


def measure(inject_at: str) -> Run:
    result = run_demo(
        DemoOptions(port=0, inject_at=inject_at, interactive=False, quiet=True, timeout=240)
    )
    return run_from(result)


def run_from(result: DemoResult) -> Run:
    decision, all_old = result.detection_seconds, result.all_old_seconds
    if not result.expected or decision is None or all_old is None or not result.first_rollback:
        raise SystemExit(f"run did not end in an automatic rollback: {result.ended}")
    return Run(decision, all_old, result.first_rollback["action"], result.first_rollback["reason"])


def plan_settings() -> dict[str, str]:
    plan = parse_plan(default_plan_text())
    windows = sorted({w for g in plan.gates for w in re.findall(r"\[(\w+)\]", g.query)})
    sustains = sorted({format_duration(g.sustain) for g in plan.gates})
    return {
        "scrape interval": SCRAPE_INTERVAL,
        "plan interval": format_duration(plan.interval),
        "rate windows": ", ".join(windows),
        "for": ", ".join(sustains),
        "min_samples": ", ".join(sorted({f"{g.min_samples:g}" for g in plan.gates if g.samples})),
    }


def step_label(inject_at: str) -> str:
    plan = parse_plan(default_plan_text())
    index = injection_step(inject_at, plan)
    return plan.steps[index or 0].label()


def machine() -> dict[str, str]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "python": platform.python_version(),
    }


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match[1].strip() if match else "unknown"


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f} s"


def section(runs: list[Run], inject_at: str) -> str:
    host, settings = machine(), plan_settings()
    lines = [
        START,
        "## Detection latency",
        "",
        f"Measured {host['date']} with `python -m tests.benchmarks.detection_latency`: "
        f"{len(runs)} headless runs of `rollout demo` (controller, demo service at 40 "
        "requests/s, a real Prometheus, controller/demo/plan.yaml), errors injected on "
        f"the new side (15 % errors, 150-900 ms) when the rollout reached step {inject_at} "
        f"({step_label(inject_at)}).",
        "",
        "| from the injection until | min / median / max |",
        "|---|---|",
        f"| (a) the first automatic rollback decision (audit list) | "
        f"{spread([r.decision_s for r in runs])} |",
        f"| (b) every evaluation serves the old side | {spread([r.all_old_s for r in runs])} |",
        "",
        "Settings: " + "; ".join(f"{k} {v}" for k, v in settings.items()) + ".",
        "",
        f"Machine: {host['nproc']} CPUs ({host['cpu']}), Python {host['python']}.",
        "",
        "First decisions: " + "; ".join(f"{r.first_action} ({r.reason})" for r in runs) + ".",
        "",
        "What bounds it: a gate's level must first show in Prometheus (the demo service "
        "is scraped every 1s; a few slow operations lift the p99 over its abort threshold "
        "within a scrape or two, while the error ratio needs its 20s window to fill), then "
        "hold for the gate's `for` (4s: three readings at abort, 2s apart), plus up to "
        "one interval of phase. (b) equals (a) when the first decision is an immediate "
        "rollback: the controller refreshes its snapshot right after the decision, so the "
        "next evaluation already answers old.",
        END,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--inject-at", default="4", help="step number or stage name")
    parser.add_argument("--no-write", action="store_true", help="do not update the doc")
    args = parser.parse_args(argv)
    runs = []
    for n in range(1, args.runs + 1):
        run = measure(args.inject_at)
        print(
            f"run {n}: decision after {run.decision_s:.1f}s ({run.first_action}), "
            f"all old after {run.all_old_s:.1f}s",
            flush=True,
        )
        runs.append(run)
    text = section(runs, args.inject_at)
    print(text)
    if not args.no_write:
        replace_section("detection-latency", text)
        print(f"updated {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
