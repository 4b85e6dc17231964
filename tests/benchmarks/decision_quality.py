"""Decision-quality benchmark: how often a plan's gates roll back a healthy canary, and
how often and how fast they catch a regression, over seeded simulated traffic.

    python -m tests.benchmarks.decision_quality [--runs 200] [--cells TEXT] [--write-docs]
        [--compare-plan docs/examples/memory-layer.yaml] [--workers 2] [--cache DIR]

Every cell (scenario x level) runs ``--runs`` seeded walks of each plan through the real
``stages.transitions.tick`` (see ``tests.benchmarks.traffic_sim`` for the model). Run k of
a cell uses seed (cell, k) whatever the plan, so both plans see the same users and the
same requests. Plans: "threshold", today's gates (tests/benchmarks/plans/threshold.yaml,
the example plan as it was before compare gates), and "compare", the plan given (the
example plan); the compare plan runs only once the simulator can read every gate kind it
uses.

With ``--cache DIR`` each finished cell is saved there as JSON, keyed by the plan's text,
the runs per cell and the source of the code that decides (stages/, the simulator), and a
later run reuses it: a long run that is cut off keeps its whole cells, and the docs can be
written once every cell is in. A change to any of those makes a new key, never a stale
figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from stages.plan import Plan
from stages.planfile import parse_plan
from tests.benchmarks import traffic_sim as sim
from tests.benchmarks.detection_latency import machine
from tests.benchmarks.docs_section import markers, replace_section

ROOT = Path(__file__).resolve().parents[2]
THRESHOLD_PLAN = ROOT / "tests" / "benchmarks" / "plans" / "threshold.yaml"
COMPARE_PLAN = ROOT / "docs" / "examples" / "memory-layer.yaml"
SECTION = "decision-quality"


@dataclass(frozen=True, slots=True)
class Task:
    plan: str  # "threshold" or "compare"
    plan_text: str
    scenario: int  # index into sim.SCENARIOS
    level: float
    run: int


def cell_name(scenario: sim.Scenario, level: float) -> str:
    return f"{scenario.name} @ {sim.LEVELS[level]}"


@cache
def _plan(text: str) -> Plan:
    return parse_plan(text)


def run_task(task: Task) -> tuple[Task, sim.RunResult, float]:
    """One run, and the CPU seconds it took (wall time depends on who else runs)."""
    began = time.process_time()
    scenario = sim.SCENARIOS[task.scenario]
    seed = sim.seed_for(cell_name(scenario, task.level), task.run)
    result = sim.simulate(_plan(task.plan_text), scenario, task.level, seed)
    return task, result, time.process_time() - began


def unreadable_gates(plan: Plan) -> list[str]:
    """Gates of a kind the simulator cannot read yet."""
    every = {g.name: g for i in range(len(plan.steps)) for g in plan.gates_for(i)}
    return [name for name, g in every.items() if sim.gate_kind(g) not in sim.READERS]


# --- summaries -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CellSummary:
    runs: int
    rolled_back: float  # share with a step back or abort decision before 50 %
    detect_median_min: float | None
    detect_p90_min: float | None
    bad_median: float | None
    bad_p90: float | None
    ends: dict[str, float]  # share of runs by how they ended
    pause_reasons: dict[str, int]
    first_by: dict[str, int]  # what the first rollback decision was, and at which percent
    new_share: float  # mean new-side request share over the level's step


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def reason_kind(reason: str) -> str:
    for prefix in ("gate source unavailable", "recovered", "abort", "rollback", "holding"):
        if prefix in reason:
            return prefix
    return reason.split(":")[0][:40]


def summarise(results: Sequence[sim.RunResult]) -> CellSummary:
    detected = [r.first_rollback_s / 60 for r in results if r.first_rollback_s is not None]
    bad = [float(r.bad_requests) for r in results]
    ends = Counter(r.end for r in results)
    n = len(results)
    return CellSummary(
        runs=n,
        rolled_back=len(detected) / n,
        detect_median_min=statistics.median(detected) if detected else None,
        detect_p90_min=_quantile(detected, 0.9),
        bad_median=statistics.median(bad) if bad else None,
        bad_p90=_quantile(bad, 0.9),
        ends={k: ends[k] / n for k in ("reached_50", "rolled_back", "paused", "stuck")},
        pause_reasons=dict(
            Counter(reason_kind(r.end_reason) for r in results if r.end == "paused")
        ),
        new_share=statistics.fmean(r.new_share for r in results),
        first_by=dict(
            Counter(
                f"{r.first_rollback_by} at {r.first_rollback_percent:g} %"
                for r in results
                if r.first_rollback_s is not None and r.first_rollback_percent is not None
            ).most_common(3)
        ),
    )


# --- running -------------------------------------------------------------------------------


def tasks_for(plans: dict[str, str], runs: int, cells: str | None) -> list[Task]:
    out = []
    for name, text in plans.items():
        for i, scenario in enumerate(sim.SCENARIOS):
            for level in sim.LEVELS:
                if cells and cells.lower() not in cell_name(scenario, level).lower():
                    continue
                out.extend(Task(name, text, i, level, k) for k in range(runs))
    return out


Results = dict[tuple[str, str], list[sim.RunResult]]


def run_all(
    tasks: list[Task],
    workers: int,
    on_cell: Callable[[Task, list[sim.RunResult], float], None] | None = None,
) -> tuple[Results, float]:
    """Every run's result by (plan, cell), in run order; and the CPU seconds of all runs.
    ``on_cell`` is called with each cell's runs (and their CPU seconds) once all are in."""
    results: dict[tuple[str, str], list[tuple[int, sim.RunResult]]] = {}
    per_cell = Counter((t.plan, t.scenario, t.level) for t in tasks)
    cell_cpu: dict[tuple[str, int, float], float] = {}
    cpu = 0.0
    began = time.monotonic()
    with multiprocessing.Pool(workers) as pool:
        for done, (task, result, seconds) in enumerate(pool.imap_unordered(run_task, tasks, 4), 1):
            key = (task.plan, cell_name(sim.SCENARIOS[task.scenario], task.level))
            results.setdefault(key, []).append((task.run, result))
            cpu += seconds
            cell = (task.plan, task.scenario, task.level)
            cell_cpu[cell] = cell_cpu.get(cell, 0.0) + seconds
            if on_cell is not None and len(results[key]) == per_cell[cell]:
                on_cell(task, [r for _, r in sorted(results[key], key=lambda x: x[0])],
                        cell_cpu[cell])  # fmt: skip
            if done % 100 == 0 or done == len(tasks):
                elapsed = time.monotonic() - began
                eta = elapsed / done * (len(tasks) - done)
                print(f"  {done}/{len(tasks)} runs, {elapsed:.0f} s, about {eta:.0f} s left",
                      flush=True)  # fmt: skip
    return {k: [r for _, r in sorted(v, key=lambda x: x[0])] for k, v in results.items()}, cpu


# --- the cell cache ------------------------------------------------------------------------

_DECIDING_CODE = ("stages", "tests/benchmarks/traffic_sim.py", "tests/benchmarks/promql_sim.py")


@cache
def _code_digest() -> str:
    digest = hashlib.sha256()
    for name in _DECIDING_CODE:
        path = ROOT / name
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def _cache_file(
    directory: Path, plan: str, text: str, scenario: int, level: float, runs: int
) -> Path:
    key = hashlib.sha256(f"{text}|{runs}|{_code_digest()}".encode()).hexdigest()[:12]
    return directory / f"{plan}-s{scenario}-{level:g}-{runs}-{key}.json"


def load_cached(directory: Path, task: Task, runs: int) -> tuple[list[sim.RunResult], float] | None:
    path = _cache_file(directory, task.plan, task.plan_text, task.scenario, task.level, runs)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    results = [sim.RunResult(**{**r, "decisions": tuple(r["decisions"])}) for r in data["runs"]]
    return results, float(data["cpu"])


def save_cell(directory: Path, task: Task, results: list[sim.RunResult], cpu: float) -> None:
    path = _cache_file(directory, task.plan, task.plan_text, task.scenario, task.level,
                       len(results))  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    body = {"cpu": cpu, "runs": [dataclasses.asdict(r) for r in results]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body))
    tmp.replace(path)  # whole cells only, even if cut off while writing


# --- the docs section ----------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %".replace(".0 %", " %")


def _minutes(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f} min" if x < 120 else f"{x / 60:.1f} h"


def _count(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def headline(summaries: dict[tuple[str, str], CellSummary], plans: Sequence[str]) -> list[str]:
    head = "| scenario | " + " | ".join(f"{p} {sim.LEVELS[lv]}" for p in plans for lv in sim.LEVELS)
    lines = [head + " |", "|---|" + "---:|" * (len(plans) * len(sim.LEVELS))]
    for scenario in sim.SCENARIOS:
        what = (
            "healthy canary rolled back (false rollback)"
            if scenario.healthy
            else f"{scenario.name} rolled back before 50 %"
        )
        cells = []
        for p in plans:
            for lv in sim.LEVELS:
                s = summaries.get((p, cell_name(scenario, lv)))
                cells.append("-" if s is None else _pct(s.rolled_back))
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    return lines


def details(summaries: dict[tuple[str, str], CellSummary], plan: str) -> list[str]:
    lines = [
        "| cell | rolled back before 50 % | time to first rollback, median / p90 "
        "| bad-side requests, median / p90 | reached 50 % | ended rolled_back | paused "
        "| stuck (30 d) | why paused | first rollback by (top 3) | new-side share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for scenario in sim.SCENARIOS:
        for lv in sim.LEVELS:
            s = summaries.get((plan, cell_name(scenario, lv)))
            if s is None:
                continue
            bad = "-" if scenario.healthy else f"{_count(s.bad_median)} / {_count(s.bad_p90)}"
            why = ", ".join(f"{k} {v}" for k, v in sorted(s.pause_reasons.items())) or "-"
            by = ", ".join(f"{k}: {v}" for k, v in s.first_by.items()) or "-"
            lines.append(
                f"| {cell_name(scenario, lv)} | {_pct(s.rolled_back)} "
                f"| {_minutes(s.detect_median_min)} / {_minutes(s.detect_p90_min)} | {bad} "
                f"| {_pct(s.ends['reached_50'])} | {_pct(s.ends['rolled_back'])} "
                f"| {_pct(s.ends['paused'])} | {_pct(s.ends['stuck'])} | {why} | {by} "
                f"| {100 * s.new_share:.2f} % |"
            )
    return lines


MODEL = f"""Model (tests/benchmarks/traffic_sim.py):
- {sim.USERS:,} users `user-0` .. `user-{sim.USERS - 1}`, on the new side when their bucket
  (flags/bucketing.py, the plan's salt) is below the step's percent, so widening keeps them
  there. Per run each user draws an error propensity from Beta({sim.PROPENSITY_A:g},
  {sim.PROPENSITY_B:g}) (mean 0.5 %) and a request weight from Gamma({sim.WEIGHT_SHAPE:g}, 1);
  a side's error probability is its users' request-weighted mean propensity (plus the
  regression on the new side), its share of requests its users' share of weight.
- {sim.PEAK_RPS:g} requests/s at {sim.PEAK_HOUR:g}:00, {sim.NIGHT_RPS:g} at night (a cosine
  day), from a random time of day per run; Poisson requests, binomial errors.
- Latency lognormal, median {sim.LATENCY_MEDIAN_MS:g} ms, true p99 {sim.OLD_P99_MS:g} ms; the
  p99 scenario scales the new side's to a true p99 of
  {sim.OLD_P99_MS + sim.LATENCY_SHIFT_MS:g} ms. Buckets: the demo service's
  (controller/demo/service.py), {", ".join(f"{b:g}" for b in sim.BOUNDS[:-1])} ms and +Inf.
- Scrapes every {sim.SCRAPE_S:g} s into cumulative counters per side (requests by status,
  latency buckets; circuit-breaker opens stay 0: nothing in the model trips a breaker).
  Counters begin {sim.WARMUP.total_seconds() / 3600:g} h before t0 with the previous step
  served.
- Gates read as Prometheus answers the plan's queries: rate/increase with Prometheus'
  extrapolation, sum, histogram_quantile with linear interpolation in the bucket and the
  +Inf rule (tests/benchmarks/promql_sim.py); values classified by `stages.gates.classify`.
  A compare gate's per-side counts over the step so far (`[${{step_window}}]`) are the
  counter now minus the counter at the step's start, read by `stages.gates.compare_reading`
  with the state's evidence.
- Checks every plan interval from t0 through the real `stages.transitions.tick`, from a
  rollout `running` at the level's step started at t0; a decision changes the split from
  the next scrape. A run ends at the 50 % step, rolled_back, paused, or after
  {sim.HORIZON.days} days (stuck).
- "Rolled back" counts any step back or abort decision before 50 %; time to first
  rollback is from t0, over the runs that had one; bad-side requests are the new side's
  requests from t0 until the run ended (0 once everyone is back on old).
"""


def section(
    summaries: dict[tuple[str, str], CellSummary],
    plans: dict[str, str],
    runs: int,
    seconds: float,
    cpu: float,
    skipped: str,
) -> str:
    start, end = markers(SECTION)
    m = machine()
    names = list(plans)
    out = [
        start,
        "## Decision quality",
        "",
        f"Measured {m['date']} with `python -m tests.benchmarks.decision_quality --write-docs` "
        f"(`make bench-decisions`): {runs} seeded runs per cell and plan, "
        f"{seconds / 60:.1f} minutes of wall time and {cpu / 60:.1f} CPU-minutes in 2 worker "
        f"processes on {m['nproc']} CPUs ({m['cpu']}, {platform.system()}, load average "
        f"{os.getloadavg()[0]:.1f} at the end: the machine was shared), "
        f"Python {m['python']}, at commit {_commit()}. "
        "Plans: " + "; ".join(f"{n}: `{p}`" for n, p in plans.items()) + f".{skipped}",
        "",
        *headline(summaries, names),
        "",
    ]
    for name in names:
        out += [f"### {name} plan, per cell", "", *details(summaries, name), ""]
    out += [MODEL, end]
    return "\n".join(out)


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    dirty = subprocess.run(["git", "diff", "--quiet", "--", "stages"], cwd=ROOT).returncode
    return out.stdout.strip() + (" (stages/ changed in the working tree)" if dirty else "")


def _shown(path: Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--cells", help="only cells whose name contains this, e.g. '@ 1%%'")
    parser.add_argument("--compare-plan", type=Path, default=COMPARE_PLAN)
    parser.add_argument("--threshold-plan", type=Path, default=THRESHOLD_PLAN)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--plans", default="threshold,compare", help="which to run (default both)")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--cache", type=Path, help="keep finished cells here and reuse them")
    args = parser.parse_args(argv)
    plans = {"threshold": args.threshold_plan}
    skipped = ""
    try:
        compare = parse_plan(args.compare_plan.read_text())
        missing = unreadable_gates(compare)
    except Exception as exc:  # a plan of a newer format: report, run the other
        missing = [f"plan does not parse here: {exc}"]
    if missing or not any(sim.gate_kind(g) == "compare" for g in compare.gates):
        why = ", ".join(missing) or "no compare gates"
        shown = _shown(args.compare_plan)
        skipped = f" The compare plan `{shown}` was not run ({why[:200]})."
        print(f"compare plan skipped: {why[:300]}", file=sys.stderr)
    else:
        plans["compare"] = args.compare_plan
    plans = {n: p for n, p in plans.items() if n in args.plans.split(",")}
    texts = {name: path.read_text() for name, path in plans.items()}
    tasks = tasks_for(texts, args.runs, args.cells)
    cached: Results = {}
    cached_cpu = 0.0
    if args.cache is not None:
        for task in [t for t in tasks if t.run == 0]:
            found = load_cached(args.cache, task, args.runs)
            if found is not None:
                cached[(task.plan, cell_name(sim.SCENARIOS[task.scenario], task.level))] = found[0]
                cached_cpu += found[1]
        tasks = [
            t for t in tasks
            if (t.plan, cell_name(sim.SCENARIOS[t.scenario], t.level)) not in cached
        ]  # fmt: skip
    print(f"{len(tasks)} runs: {', '.join(plans)} plan(s), {args.workers} workers"
          f"{f', {len(cached)} cells from the cache' if cached else ''}", flush=True)  # fmt: skip
    began = time.monotonic()
    cache_dir = args.cache

    def keep(task: Task, cell: list[sim.RunResult], cpu: float) -> None:
        if cache_dir is not None:
            save_cell(cache_dir, task, cell, cpu)
        print(f"  cell done: {task.plan} {cell_name(sim.SCENARIOS[task.scenario], task.level)}",
              flush=True)  # fmt: skip

    results, cpu = run_all(tasks, args.workers, keep) if tasks else ({}, 0.0)
    results = {**cached, **results}
    cpu += cached_cpu
    seconds = time.monotonic() - began
    summaries = {key: summarise(rs) for key, rs in results.items()}
    print(f"took {seconds:.0f} s wall, {cpu:.0f} CPU-seconds in the workers")
    print("\n".join(headline(summaries, list(plans))))
    for name in plans:
        print("\n".join(details(summaries, name)))
    if args.write_docs:
        shown = {n: _shown(p) for n, p in plans.items()}
        replace_section(SECTION, section(summaries, shown, args.runs, seconds, cpu, skipped))
        print("wrote the decision-quality section of docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
