"""Scheduler benchmark: many active rollouts, each with three gates, checked every 30 s
by one replica against a real Prometheus; then the same with some rollouts whose
Prometheus hangs.

    python -m tests.benchmarks.scheduler [--rollouts 1000] [--minutes 3] [--write-docs]

The parent process runs what is not the controller: a scrape target with a few series,
Debian's Prometheus scraping it, and a loopback peer that never answers. Each scenario
runs in a child process of its own (so CPU and RSS are the controller's alone, and the
second scenario does not inherit the first one's peak): the real Scheduler, Rollouts and
Leases on a fresh SQLite file, with a gate source that sends the queries of rollouts
named ``hang-*`` to the hanging peer and every other rollout's to the real Prometheus.
Rollouts are started over one interval, like a fleet that has been running a while;
the first round (the start plus one interval of warm-up) is reported apart from the
steady-state window.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from controller.demo.prometheus_process import PrometheusProcess
from controller.gates.prometheus import GateSource, PrometheusGates
from controller.jobs.scheduler import LATENESS_SAMPLES, Scheduler
from controller.rollouts import Rollouts, parse_plan_input
from controller.settings import Settings
from controller.storage.leases import Leases
from controller.storage.store import Store
from stages.actions import Action
from stages.plan import Gate
from stages.state import GateReading
from tests.benchmarks.detection_latency import machine
from tests.benchmarks.docs_section import DOC, markers, replace_section
from tests.hostile import Connection, HostilePeer
from tests.metrics_target import MetricsTarget

ROOT = Path(__file__).resolve().parents[2]
START, END = markers("scheduler")
INTERVAL_S = 30
SCRAPE_INTERVAL = "5s"
HANGING_PREFIX = "hang-"
# Prometheus' own default for --query.max-concurrency (PrometheusProcess does not set it).
PROMETHEUS_QUERY_CONCURRENCY = 20
SCENARIOS = (0, 10)  # per cent of rollouts whose Prometheus hangs
SAMPLE_EVERY_S = 0.5

# `rollout!="…-none"` names the rollout in a matcher that every series still matches
# (they carry no rollout label), so each rollout's query is its own and gets a real value.
MATCH = 'variant="new",rollout!="${rollout}-none"'
ERROR_RATIO = (
    f'sum(rate(memory_operation_total{{status="error",{MATCH}}}[1m]))'
    f" / sum(rate(memory_operation_total{{{MATCH}}}[1m]))"
)
P99_MS = (
    f"histogram_quantile(0.99, sum by (le) "
    f"(rate(memory_operation_latency_ms_bucket{{{MATCH}}}[1m])))"
)
REQUEST_RATE = f"sum(rate(memory_operation_total{{{MATCH}}}[1m]))"
PLAN = """
rollout: {name}
flag: {name}
interval: {interval}s
min_evaluations: 1
steps:
  - {{stage: canary, percent: 1, hold: 30d}}
  - {{stage: full}}
gates:
  - {{name: error-ratio, query: '{error_ratio}', rollback_above: 0.05}}
  - {{name: p99-latency-ms, query: '{p99}', hold_above: 500}}
  - {{name: request-rate, query: '{rate}', hold_below: 1}}
"""


def plan_text(name: str) -> str:
    return PLAN.format(
        name=name, interval=INTERVAL_S, error_ratio=ERROR_RATIO, p99=P99_MS, rate=REQUEST_RATE
    )


def rollout_names(count: int, hanging_percent: float) -> list[str]:
    """Hanging rollouts spread evenly among the others, as they would be in a fleet."""
    names = []
    for i in range(count):
        hangs = math.floor((i + 1) * hanging_percent / 100) > math.floor(i * hanging_percent / 100)
        names.append(f"{HANGING_PREFIX if hangs else 'r-'}{i:04d}")
    return names


def hang_until_hangup(conn: Connection) -> None:
    """Never answer, and hold the connection until the client gives up (its gate timeout):
    tests/hostile.py's ``hang`` holds it until the peer stops, which over minutes would pile
    up hundreds of idle threads in the peer."""
    conn.sock.settimeout(1.0)
    while not conn.stopping.is_set():
        try:
            if not conn.sock.recv(4096):
                return
        except TimeoutError:
            continue
        except OSError:
            return


# --- instruments (in the child) --------------------------------------------------------


class TimedLateness(deque[float]):
    """The scheduler's lateness samples, each also logged with when it was taken, so a
    window can pick its own."""

    def __init__(self, maxlen: int) -> None:
        super().__init__(maxlen=maxlen)
        self.log: list[tuple[float, float]] = []

    def append(self, value: float) -> None:
        super().append(value)
        self.log.append((time.monotonic(), value))


class MeasuredScheduler(Scheduler):
    """The real scheduler, with each pass's start, duration, lag and queued count logged."""

    pass_log: list[tuple[float, float, float, int]]

    def run_pass(self) -> list[str]:
        began = time.monotonic()
        queued = super().run_pass()
        self.pass_log.append((began, time.monotonic() - began, self.last_pass_lag, len(queued)))
        return queued


@dataclass
class CheckStart:
    at: float  # monotonic
    hanging: bool
    lateness: float  # seconds after the check was due (first check: after the start)
    first: bool


@dataclass
class Router:
    """The one GateSource of the replica: ``hang-*`` rollouts' queries go to the hanging
    peer, the others' to the real Prometheus. Logs each check's start per rollout (the
    first gate read of a check carries the check's ``now``, which becomes checked_at)."""

    healthy: GateSource
    hanging: GateSource
    interval: timedelta
    starts: list[CheckStart] = field(default_factory=list)
    reads: dict[bool, list[tuple[float, float]]] = field(
        default_factory=lambda: {True: [], False: []}
    )  # hanging -> (at, seconds)
    outcomes: dict[str, int] = field(default_factory=dict)
    values: dict[str, float | None] = field(default_factory=dict)  # a recent value per gate
    _started: dict[str, datetime] = field(default_factory=dict)
    _last_now: dict[str, datetime] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def started(self, name: str, at: datetime) -> None:
        with self._lock:
            self._started[name] = at

    def read(
        self,
        gate: Gate,
        variables: Mapping[str, str],
        now: datetime,
        *,
        deadline: float | None = None,
    ) -> GateReading:
        name = variables["rollout"]
        hanging = name.startswith(HANGING_PREFIX)
        began = time.monotonic()
        with self._lock:
            previous = self._last_now.get(name)
            if previous != now:  # the first gate of a new check
                self._last_now[name] = now
                due = previous + self.interval if previous else self._started.get(name, now)
                # Found up to 50 ms early by the pass, as the scheduler counts it: on time.
                late = max(0.0, (now - due).total_seconds())
                self.starts.append(CheckStart(began, hanging, late, previous is None))
        source = self.hanging if hanging else self.healthy
        reading = source.read(gate, variables, now, deadline=deadline)
        took = time.monotonic() - began
        with self._lock:
            self.reads[hanging].append((began, took))
            key = f"{'hanging' if hanging else 'healthy'} {reading.outcome.value}"
            self.outcomes[key] = self.outcomes.get(key, 0) + 1
            if not hanging:
                self.values[gate.name] = reading.value
        return reading

    def ping(self) -> bool:
        return self.healthy.ping()


def rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process, KiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def cpu_seconds_of(pid: int) -> float | None:
    """utime + stime of another process (no psutil), seconds; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def prometheus_pid() -> int | None:
    """Our child process named prometheus (PrometheusProcess keeps its Popen private)."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and comm == "prometheus":
            return int(entry.name)
    return None


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile; None without samples."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def spread(values: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        # Checks that missed their pass and were found by the next one (lateness only).
        "over_half_tick": sum(v > 0.5 for v in values) / len(values) if values else None,
        "mean": sum(values) / len(values) if values else None,
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


def defaults() -> dict[str, float]:
    fields = Settings.model_fields
    return {
        "workers": fields["scheduler_workers"].default,
        "tick": fields["scheduler_tick"].default,
        "gate_timeout": fields["gate_timeout"].default,
    }


# --- one scenario (the child) ----------------------------------------------------------


def run_scenario(
    *,
    rollouts_count: int,
    hanging_percent: float,
    minutes: float,
    prometheus_url: str,
    hanging_url: str,
    prometheus_pid: int | None,
) -> dict[str, Any]:
    settings = defaults()
    interval = timedelta(seconds=INTERVAL_S)
    workdir = Path(tempfile.mkdtemp(prefix="bench-scheduler-"))
    store = Store(f"sqlite:///{workdir / 'bench.db'}")
    store.prepare_schema(upgrade=False)
    rollouts = Rollouts(store, lambda: None)
    names = rollout_names(rollouts_count, hanging_percent)
    for name in names:
        plan, source = parse_plan_input(plan_text(name), None)
        rollouts.apply(plan, source, "bench", store.now())
    router = Router(
        PrometheusGates(prometheus_url, timeout_seconds=settings["gate_timeout"]),
        PrometheusGates(hanging_url, timeout_seconds=settings["gate_timeout"]),
        interval,
    )
    scheduler = MeasuredScheduler(
        store,
        rollouts,
        router,
        Leases(store, "bench-replica"),
        store.now,
        tick_seconds=settings["tick"],
        workers=int(settings["workers"]),
    )
    scheduler.pass_log = []
    lateness = TimedLateness(LATENESS_SAMPLES)
    scheduler.lateness = lateness

    samples: list[dict[str, float]] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(SAMPLE_EVERY_S):
            in_flight, oldest = scheduler.in_flight()
            rss, _ = rss_kib()
            threads = [t.name for t in threading.enumerate()]
            samples.append(
                {
                    "at": time.monotonic(),
                    "rss_kib": rss,
                    "in_flight": in_flight,
                    "oldest_s": oldest or 0.0,
                    "fast_threads": sum(n.startswith("scheduler-fast") for n in threads),
                    "slow_threads": sum(n.startswith("scheduler-slow") for n in threads),
                }
            )

    sampler = threading.Thread(target=sample, name="bench-sampler", daemon=True)
    load_start = os.getloadavg()
    t0 = time.monotonic()
    scheduler.start()
    sampler.start()
    for i, name in enumerate(names):  # the fleet starts over one interval
        pause = t0 + i * INTERVAL_S / len(names) - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        at = store.now()
        router.started(name, at)
        rollouts.act(name, Action.START, actor="bench", now=at)
    stagger_s = time.monotonic() - t0
    window_start = t0 + 2 * INTERVAL_S  # the start, then one interval of warm-up
    time.sleep(max(0.0, window_start - time.monotonic()))

    checks0, cpu0, prom0 = scheduler.checks, time.process_time(), _prom_cpu(prometheus_pid)
    wall0 = time.monotonic()
    time.sleep(minutes * 60)
    wall1 = time.monotonic()
    checks1, cpu1, prom1 = scheduler.checks, time.process_time(), _prom_cpu(prometheus_pid)
    rss_end, rss_peak = rss_kib()
    load_end = os.getloadavg()
    sampling.set()
    sampler.join(timeout=5)
    scheduler.stop(timeout=3.0)

    seconds = wall1 - wall0

    def inside(at: float) -> bool:
        return wall0 <= at < wall1

    def first_round(at: float) -> bool:
        return t0 <= at < wall0

    in_window = [s for s in samples if inside(s["at"])]
    passes_window = [p for p in scheduler.pass_log if inside(p[0])]
    passes_first = [p for p in scheduler.pass_log if first_round(p[0])]

    def starts(hanging: bool, when: Any, first: bool | None = None) -> list[float]:
        return [
            s.lateness
            for s in router.starts
            if s.hanging is hanging and when(s.at) and (first is None or s.first is first)
        ]

    return {
        "rollouts": rollouts_count,
        "hanging_rollouts": sum(n.startswith(HANGING_PREFIX) for n in names),
        "hanging_percent": hanging_percent,
        "settings": settings,
        "stagger_s": stagger_s,
        "window_s": seconds,
        "load_start": load_start,
        "load_end": load_end,
        "window": {
            "lateness_all": spread([v for at, v in lateness.log if inside(at)]),
            "lateness_healthy": spread(starts(False, inside)),
            "lateness_healthy_last_half": spread(
                starts(False, lambda at: inside(at) and at >= (wall0 + wall1) / 2)
            ),
            "lateness_hanging": spread(starts(True, inside)),
            "pass_lag": spread([p[2] for p in passes_window]),
            "pass_seconds": spread([p[1] for p in passes_window]),
            "passes": len(passes_window),
            "checks": checks1 - checks0,
            "checks_per_s": (checks1 - checks0) / seconds,
            "checks_started_healthy": len(starts(False, inside)),
            "checks_started_hanging": len(starts(True, inside)),
            "cpu_percent": 100 * (cpu1 - cpu0) / seconds,
            "prometheus_cpu_percent": (
                100 * (prom1 - prom0) / seconds if prom0 is not None and prom1 is not None else None
            ),
            "rss_mib_end": rss_end / 1024,
            "rss_mib_peak": rss_peak / 1024,
            "rss_mib_window_max": max((s["rss_kib"] for s in in_window), default=0) / 1024,
            "in_flight_max": max((s["in_flight"] for s in in_window), default=0),
            "oldest_in_flight_max_s": max((s["oldest_s"] for s in in_window), default=0.0),
            "fast_threads_max": max((s["fast_threads"] for s in in_window), default=0),
            "slow_threads_max": max((s["slow_threads"] for s in in_window), default=0),
            "healthy_read_s": spread([t for at, t in router.reads[False] if inside(at)]),
            "hanging_read_s": spread([t for at, t in router.reads[True] if inside(at)]),
        },
        "first_round": {
            "first_check_healthy": spread(starts(False, first_round, first=True)),
            "first_check_hanging": spread(starts(True, first_round, first=True)),
            "lateness_all": spread([v for at, v in lateness.log if first_round(at)]),
            "pass_lag": spread([p[2] for p in passes_first]),
            "fast_threads_max": max(
                (s["fast_threads"] for s in samples if first_round(s["at"])), default=0
            ),
        },
        "outcomes": router.outcomes,
        "values": router.values,
    }


def _prom_cpu(pid: int | None) -> float | None:
    return cpu_seconds_of(pid) if pid is not None else None


# --- the parent: Prometheus, the target, the hanging peer, the children ------------------


def wait_for_values(prometheus_url: str, timeout: float = 90.0) -> None:
    """Until every gate query of a plan returns a number (rate() needs two scrapes)."""
    plan, _ = parse_plan_input(plan_text("probe"), None)
    queries = [g.query.replace("${rollout}", "probe") for g in plan.gates]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(_has_value(prometheus_url, q) for q in queries):
            return
        time.sleep(1.0)
    raise SystemExit(f"Prometheus at {prometheus_url} gave no values for the gate queries")


def _has_value(url: str, query: str) -> bool:
    target = f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(target, timeout=5) as response:
            result = json.load(response)["data"]["result"]
    except (OSError, ValueError, KeyError):
        return False
    return bool(result) and result[0]["value"][1] not in ("NaN", "+Inf", "-Inf")


def run_child(
    args: argparse.Namespace, hanging_percent: float, urls: dict[str, Any]
) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "tests.benchmarks.scheduler",
        "--child",
        f"--rollouts={args.rollouts}",
        f"--minutes={args.minutes}",
        f"--hanging-percent={hanging_percent}",
        f"--prometheus-url={urls['prometheus']}",
        f"--hanging-url={urls['hanging']}",
    ]
    if urls["pid"] is not None:
        command.append(f"--prometheus-pid={urls['pid']}")
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, check=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    with (
        MetricsTarget() as target,
        PrometheusProcess([target.address], scrape_interval=SCRAPE_INTERVAL) as prometheus,
        HostilePeer(hang_until_hangup) as peer,
    ):
        target.set_traffic(variant="new", requests_per_second=50, error_ratio=0.01)
        target.set_traffic(variant="old", requests_per_second=50, error_ratio=0.01)
        wait_for_values(prometheus.url)
        urls = {"prometheus": prometheus.url, "hanging": peer.url, "pid": prometheus_pid()}
        for percent in args.scenarios:
            print(f"scenario: {percent:g} % hanging ...", file=sys.stderr, flush=True)
            result = run_child(args, percent, urls)
            print(summary(result), file=sys.stderr, flush=True)
            results.append(result)
    return results


# --- the report --------------------------------------------------------------------------


def ms(value: float | int | None) -> str:
    return "-" if value is None else f"{value * 1000:,.0f} ms"


def secs(value: float | int | None) -> str:
    return "-" if value is None else f"{value:,.1f} s"


def row(label: str, figures: Mapping[str, Any], fmt: Any = ms, *, share: bool = False) -> str:
    over = figures["over_half_tick"]
    late = f"{100 * over:.1f} %" if share and over is not None else ""
    return (
        f"| {label} | {fmt(figures['p50'])} | {fmt(figures['p99'])} | "
        f"{fmt(figures['max'])} | {late} | {figures['n']:,} |"
    )


def summary(result: Mapping[str, Any]) -> str:
    w = result["window"]
    return (
        f"{result['rollouts']} rollouts, {result['hanging_rollouts']} hanging: "
        f"check lateness p50 {ms(w['lateness_healthy']['p50'])}, "
        f"p99 {ms(w['lateness_healthy']['p99'])} (healthy), "
        f"pass lag p99 {ms(w['pass_lag']['p99'])}, {w['checks_per_s']:.1f} checks/s, "
        f"CPU {w['cpu_percent']:.0f} %, RSS peak {w['rss_mib_peak']:.0f} MiB"
    )


def scenario_table(result: Mapping[str, Any]) -> list[str]:
    w, first = result["window"], result["first_round"]
    values = result["values"].items()
    hanging = result["hanging_rollouts"]
    title = (
        f"### {result['rollouts']:,} rollouts, {hanging} hanging ({result['hanging_percent']:g} %)"
    )
    lines = [
        title,
        "",
        f"Steady state: a window of {result['window_s']:.0f} s "
        f"after the start and one interval of warm-up.",
        "",
        "| figure | p50 | p99 | max | share > 500 ms | samples |",
        "|---|---:|---:|---:|---:|---:|",
        row("check lateness, all (scheduler.lateness)", w["lateness_all"], share=True),
        row("check lateness, healthy rollouts", w["lateness_healthy"], share=True),
        row(
            "check lateness, healthy rollouts, the window's last half",
            w["lateness_healthy_last_half"],
            share=True,
        ),
    ]
    if hanging:
        lines.append(
            row("check lateness, hanging rollouts", w["lateness_hanging"], secs, share=True)
        )
    lines += [
        row("pass lag (rollout_scheduler_lag_seconds)", w["pass_lag"]),
        row("pass duration", w["pass_seconds"]),
        row("gate read, healthy (real Prometheus)", w["healthy_read_s"]),
    ]
    if hanging:
        lines.append(row("gate read, hanging peer", w["hanging_read_s"], secs))
    prom_cpu = w["prometheus_cpu_percent"]
    lines += [
        "",
        "| figure | value |",
        "|---|---:|",
        f"| checks per second (completed) | {w['checks_per_s']:.2f} |",
        f"| interval a healthy rollout actually got (goal {INTERVAL_S} s) | "
        f"{kept_interval(result):.2f} s |",
        f"| checks started in the window: healthy / hanging | "
        f"{w['checks_started_healthy']:,} / {w['checks_started_hanging']:,} |",
        f"| controller CPU, % of one core | {w['cpu_percent']:.1f} |",
        f"| Prometheus CPU, % of one core | {'-' if prom_cpu is None else f'{prom_cpu:.1f}'} |",
        f"| RSS at the end / peak (VmHWM) | {w['rss_mib_end']:.0f} / {w['rss_mib_peak']:.0f} MiB |",
        f"| checks in flight, most at once | {w['in_flight_max']} |",
        f"| oldest check in flight, most | {w['oldest_in_flight_max_s']:.1f} s |",
        f"| worker threads, most: fast / slow lane | "
        f"{w['fast_threads_max']} / {w['slow_threads_max']} |",
        f"| load average (1 min) at start / end | "
        f"{result['load_start'][0]:.2f} / {result['load_end'][0]:.2f} |",
        "",
        f"First round (rollouts started over {result['stagger_s']:.0f} s, then one interval): "
        f"first check of a healthy rollout after its start p50 "
        f"{ms(first['first_check_healthy']['p50'])}, "
        f"p99 {ms(first['first_check_healthy']['p99'])}, "
        f"max {ms(first['first_check_healthy']['max'])}"
        + (
            f"; of a hanging one p50 {ms(first['first_check_hanging']['p50'])}, "
            f"max {ms(first['first_check_hanging']['max'])}"
            if hanging
            else ""
        )
        + f"; later checks in the first round late by p99 {ms(first['lateness_all']['p99'])}, "
        f"max {ms(first['lateness_all']['max'])}; pass lag p99 "
        f"{ms(first['pass_lag']['p99'])}; fast-lane threads at most {first['fast_threads_max']}.",
        "",
        "Gate outcomes over the run: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(result["outcomes"].items()))
        + "; last healthy values: "
        + ", ".join(f"{k} {v:.4g}" if v is not None else f"{k} none" for k, v in values)
        + ".",
        "",
    ]
    return lines


def kept_interval(result: Mapping[str, Any]) -> float:
    """Seconds between a healthy rollout's checks on average over the window: each
    check starts its lateness after the previous one's start plus the interval."""
    mean = result["window"]["lateness_healthy"]["mean"]
    return INTERVAL_S + mean if mean is not None else math.inf


def goal_line(result: Mapping[str, Any]) -> str:
    w = result["window"]
    check_p99 = w["lateness_healthy"]["p99"]
    lag_p99 = w["pass_lag"]["p99"]
    met = check_p99 is not None and check_p99 < 1 and lag_p99 is not None and lag_p99 < 1
    return (
        f"- {result['hanging_percent']:g} % hanging: healthy check lateness p99 "
        f"{ms(check_p99)}, pass lag p99 {ms(lag_p99)} (goal: both under 1 s): "
        f"{'met' if met else 'NOT met'}"
    )


def section(results: Sequence[Mapping[str, Any]], command: str) -> str:
    host = machine()
    settings = results[0]["settings"]
    lines = [
        START,
        "## Scheduler",
        "",
        f"Measured {host['date']} with `{command}` on {host['nproc']} CPUs ({host['cpu']}), "
        f"Python {host['python']}; the machine was shared with other work (load averages "
        "below).",
        "",
        f"One replica: the real Scheduler, Rollouts and Leases on a SQLite file, "
        f"{results[0]['rollouts']:,} active rollouts, each with 3 gates (error ratio, p99 "
        f"latency from a histogram, request rate) read every {INTERVAL_S} s against Debian's "
        f"Prometheus (scraping a target with a few series every {SCRAPE_INTERVAL}; "
        f"--query.max-concurrency at its default of {PROMETHEUS_QUERY_CONCURRENCY}). Each "
        "rollout's queries name it in a matcher that every series still matches, so each "
        "gets a real value. Plans hold for 30 days with `min_evaluations: 1`, so every "
        "rollout stays active. Settings (the defaults): "
        f"{int(settings['workers'])} workers, tick {settings['tick']:g} s, interval "
        f"{INTERVAL_S} s, gate timeout {settings['gate_timeout']:g} s (per query). In the "
        "second scenario, the queries of rollouts named `hang-*` go to a loopback peer "
        "that accepts the request and never answers (one Prometheus URL per replica, so the "
        "benchmark's gate source routes by rollout). Rollouts are started evenly over one "
        "interval, like a fleet that has been running a while; the figures are for a window "
        "after one more interval of warm-up, and the first round is summed up apart. Each "
        "scenario runs in a fresh process (CPU and RSS are the controller's alone; "
        "Prometheus, the target and the hanging peer run in the parent).",
        "",
    ]
    for result in results:
        lines += scenario_table(result)
    lines += list(map(goal_line, results))
    hanging = max(r["hanging_rollouts"] for r in results)
    slow_workers = int(settings["workers"])  # the slow lane is as big as the fast one
    check_s = 3 * settings["gate_timeout"]
    round_trip = (
        f"hanging rollouts x {check_s:g} s / {slow_workers} slow-lane workers "
        f"= {hanging * check_s / slow_workers:,.0f} s here"
    )
    lines += [
        "",
        "What the figures mean: *check lateness* is how long after its due time a check "
        "started; a check is due one interval after the pass that queued the one before "
        "(not after that check's start, so the wait for a worker does not add up from "
        "check to check). *Pass lag* is how late a pass began beyond its tick (the "
        "`rollout_scheduler_lag_seconds` metric). A check becomes due between passes and "
        "is found by the next one, which sits on the same 1 s grid as the pass that "
        "queued its predecessor, so lateness is the wait for a worker plus the pass's own "
        "lag. Hanging rollouts' checks take three gate timeouts each. The first one runs "
        "in the fast lane, which starts a thread in place of each worker stuck for 1 s "
        "(up to 16 x workers), so healthy checks do not wait behind them for long (the "
        "first-round figures of the second scenario). After that the hanging rollouts "
        "stay in the slow lane (as many workers as the fast lane), among themselves: "
        "their own checks fall behind their interval (a hanging rollout is read about "
        f"once every {round_trip}, so it takes that times `max_gate_errors` to be paused "
        "as gate source unavailable).",
        END,
    ]
    return "\n".join(lines)


def command_line(args: argparse.Namespace) -> str:
    """The command as the doc shows it: what changes the figures, not where they went."""
    words = ["python -m tests.benchmarks.scheduler"]
    if args.rollouts != 1000:
        words.append(f"--rollouts {args.rollouts}")
    if args.minutes != 3.0:
        words.append(f"--minutes {args.minutes:g}")
    if list(args.scenarios) != list(SCENARIOS):
        words.append("--scenarios " + " ".join(f"{p:g}" for p in args.scenarios))
    if args.write_docs:
        words.append("--write-docs")
    return " ".join(words)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=3.0, help="measured window")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument(
        "--scenarios", type=float, nargs="+", default=list(SCENARIOS), help="% hanging"
    )
    parser.add_argument("--results-file", help="save the measured figures here (JSON)")
    parser.add_argument("--from-results", help="report saved figures instead of measuring")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hanging-percent", type=float, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--prometheus-url", help=argparse.SUPPRESS)
    parser.add_argument("--hanging-url", help=argparse.SUPPRESS)
    parser.add_argument("--prometheus-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = run_scenario(
            rollouts_count=args.rollouts,
            hanging_percent=args.hanging_percent,
            minutes=args.minutes,
            prometheus_url=args.prometheus_url,
            hanging_url=args.hanging_url,
            prometheus_pid=args.prometheus_pid,
        )
        print(json.dumps(result), flush=True)
        return 0
    if args.from_results:
        saved = json.loads(Path(args.from_results).read_text())
        results, command = saved["results"], saved["command"]
    else:
        results = run_all(args)
        command = command_line(args)
    if args.results_file:
        Path(args.results_file).write_text(json.dumps({"command": command, "results": results}))
    text = section(results, command)
    print(text)
    if args.write_docs:
        replace_section("scheduler", text)
        print(f"updated {DOC.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
