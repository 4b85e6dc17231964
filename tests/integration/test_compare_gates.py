"""Compare gates end to end: a real Prometheus scrapes a real target whose per-variant
``requests_total`` and ``errors_total`` counters the test drives, and ``rollout serve``
reads them over the current step (``increase(...[${step_window}])``) and decides.

A compare gate holds while undecided (and says how many more requests it needs), rolls
back a real regression, advances a healthy canary, and holds on a skewed split with
"assignment unhealthy", never rolling back. Its evidence is saved with the rollout and
loaded again after a restart, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from controller.demo.prometheus_process import PrometheusProcess
from controller.gates import history as gate_history
from controller.gates.prometheus import PrometheusGates
from controller.gates.reading import query_variables
from controller.jobs.scheduler import Scheduler
from controller.rollouts import Rollouts, parse_plan_input
from controller.storage.leases import Leases
from controller.storage.mapping import state_from_row
from controller.storage.store import Store
from controller.storage.tables import RolloutRow
from controller.ui.session import SESSION_COOKIE
from stages.actions import Action
from stages.compare import Side
from stages.gates import compare_reading
from stages.plan import Gate
from stages.query_templates import render_query
from stages.state import GateReading, Outcome, RolloutState
from tests.hostile import HostilePeer, Request, http_response, prometheus_json, respond
from tests.serving import ADMIN_TOKEN, Server, running_server
from tests.ui_sessions import ui_session
from tests.waiting import wait_until

TICK_S = 0.05
EVENTS = 'sum by (variant) (increase(errors_total{rollout="${rollout}"}[${step_window}]))'
EXPOSURES = 'sum by (variant) (increase(requests_total{rollout="${rollout}"}[${step_window}]))'
GATE = "errors-vs-old"


# Never acts: the new side's raw error ratio against an absolute level, read and shown.
OBSERVED = """
  - name: new-error-ratio
    mode: observe
    query: >-
      sum(increase(errors_total{rollout="${rollout}",variant="new"}[5s]))
      / sum(increase(requests_total{rollout="${rollout}",variant="new"}[5s]))
    rollback_above: 0.05
"""


def plan(
    name: str, *, percent: float = 50, hold: str = "2s", min_samples: int = 200, extra: str = ""
) -> str:
    """Shadow (no gates: a timed second), one canary step the compare gate judges, full.
    A margin of 5 points: a few thousand requests a side decide it in seconds."""
    return f"""
rollout: {name}
flag: {name}
interval: 1s
min_evaluations: 2
max_gate_errors: 5
rollback_observe: 2s
steps:
  - {{stage: shadow, hold: 1s}}
  - {{stage: canary, percent: {percent:g}, hold: {hold}}}
  - {{stage: full}}
gates:
  - name: {GATE}
    kind: compare
    events: '{EVENTS}'
    exposures: '{EXPOSURES}'
    worse_by: 0.05
    min_samples: {min_samples}
{extra}"""


# --- the target ------------------------------------------------------------------------


@dataclass
class _Rate:
    requests_per_second: float
    error_ratio: float
    carried: tuple[float, float] = (0.0, 0.0)  # fractions of a request and of an error


class VariantTarget:
    """``requests_total{rollout, variant}`` and ``errors_total{rollout, variant}``,
    grown every 50 ms at the rates the test sets, served on ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "requests", "Requests", ["rollout", "variant"], registry=self.registry
        )
        self.errors = Counter(
            "errors", "Failed requests", ["rollout", "variant"], registry=self.registry
        )
        self._rates: dict[tuple[str, str], _Rate] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self.registry))
        self._server.daemon_threads = True
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def set(
        self, rollout: str, variant: str, requests_per_second: float, error_ratio: float
    ) -> None:
        with self._lock:
            self._rates[(rollout, variant)] = _Rate(requests_per_second, error_ratio)
            # Exported at once, at zero: increase() needs the series before the step began.
            self.requests.labels(rollout=rollout, variant=variant)
            self.errors.labels(rollout=rollout, variant=variant)

    def __enter__(self) -> VariantTarget:
        self._threads = [
            threading.Thread(target=self._server.serve_forever, daemon=True),
            threading.Thread(target=self._grow, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._server.shutdown()
        for thread in self._threads:
            thread.join(timeout=5)
        self._server.server_close()

    def _grow(self) -> None:
        while not self._closed.wait(TICK_S):
            with self._lock:
                for (rollout, variant), rate in self._rates.items():
                    due = rate.requests_per_second * TICK_S + rate.carried[0]
                    count = int(due)
                    due_errors = count * rate.error_ratio + rate.carried[1]
                    errors = min(count, int(due_errors))
                    rate.carried = (due - count, due_errors - errors)
                    self.requests.labels(rollout=rollout, variant=variant).inc(count)
                    self.errors.labels(rollout=rollout, variant=variant).inc(errors)


def _handler_for(registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class MetricsHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return MetricsHandler


# --- the stack: target, Prometheus, rollout serve ------------------------------------------


@dataclass
class Stack:
    target: VariantTarget
    prometheus: PrometheusProcess
    server: Server
    client: httpx.Client

    def begin(self, name: str, text: str, traffic: Mapping[str, tuple[float, float]]) -> None:
        """Traffic first, scraped, then the plan applied and started."""
        for variant, (rps, errors) in traffic.items():
            self.target.set(name, variant, rps, errors)
        for variant in traffic:
            self.prometheus.wait_for_series(
                f'requests_total{{rollout="{name}",variant="{variant}"}}', timeout=30
            )
        r = self.client.post("/api/v1/plans", json={"yaml": text})
        assert r.status_code == 201, r.text
        r = self.client.post(f"/api/v1/rollouts/{name}/actions/start", json={"reason": "test"})
        assert r.status_code == 200, r.text

    def rollout(self, name: str) -> dict[str, Any]:
        return dict(self.client.get(f"/api/v1/rollouts/{name}").json())

    def readings(self, name: str, step: int) -> list[dict[str, Any]]:
        """The compare gate's stored readings at ``step``, oldest first."""
        body = self.client.get(
            f"/api/v1/rollouts/{name}/gates", params={"gate": GATE, "limit": 5000}
        ).json()
        return [r for r in reversed(body["history"]) if r["step"] == step]

    def automatic(self, name: str) -> list[dict[str, Any]]:
        events = self.client.get("/api/v1/audit", params={"rollout": name, "limit": 1000})
        return [e for e in reversed(events.json()["events"]) if e["actor"] == "controller"]

    def wait(
        self, name: str, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def check() -> bool:
            seen.update(self.rollout(name))
            return predicate(seen)

        try:
            wait_until(check, timeout, what, every=0.25)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; last: {seen.get('status')} at {seen.get('step')}: {seen.get('reason')}"
                f"\n{self.server.log.read_text()[-2000:]}"
            ) from None
        return seen


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("compare")
    with (
        VariantTarget() as target,
        PrometheusProcess([target.address], scrape_interval="1s", workdir=workdir) as prometheus,
    ):
        env = {
            "ROLLOUT_SCHEDULER": "true",
            "ROLLOUT_SCHEDULER_TICK": "0.25",
            "ROLLOUT_PROMETHEUS_URL": prometheus.url,
            "ROLLOUT_GATE_TIMEOUT": "2",
        }
        with running_server(workdir, extra_env=env) as server, server.client() as client:
            yield Stack(target, prometheus, server, client)


def test_a_healthy_canary_advances_when_the_new_side_is_not_worse(stack: Stack) -> None:
    stack.begin("healthy", plan("healthy"), {"new": (500, 0.01), "old": (500, 0.01)})
    final = stack.wait("healthy", lambda r: r["status"] == "completed", 60, "completed")
    assert final["serving"]["percent"] == 100
    moves = [(e["action"], e["to_step"]) for e in stack.automatic("healthy")]
    assert moves == [("advance", 1), ("advance", 2), ("complete", 2)]
    canary = stack.readings("healthy", step=1)
    last = canary[-1]["compare"]
    assert canary[-1]["outcome"] == "ok" and last["verdict"] == "not_worse"
    assert last["high"] < last["margin"] == 0.05  # the whole interval under the margin
    assert last["new"]["exposures"] >= 200 and last["old"]["exposures"] >= 200
    assert 0.4 < last["share"] < 0.6 and last["expected_share"] == 0.5
    assert "-> ok" in last["sentence"] and "requests" in last["sentence"]
    # The advance says why, with the reading behind it.
    advance = stack.automatic("healthy")[1]
    behind = next(r for r in advance["details"]["readings"] if r["gate"] == GATE)
    assert behind["outcome"] == "ok"
    # ... and the audit keeps the comparison's numbers, not just its outcome.
    assert behind["compare"]["verdict"] == "not_worse"
    assert behind["compare"]["new"]["exposures"] >= 200


def test_a_real_regression_is_rolled_back(stack: Stack) -> None:
    stack.begin("regress", plan("regress", hold="1h"), {"new": (500, 0.30), "old": (500, 0.01)})
    final = stack.wait("regress", lambda r: r["status"] == "rolled_back", 60, "rolled back")
    assert final["serving"]["percent"] == 0
    events = stack.automatic("regress")
    assert events[0]["action"] == "advance"
    back = events[1]
    assert back["from_step"] == 1 and back["to_step"] == 0
    assert GATE in back["reason"] and "-> rollback" in back["reason"]
    kept = next(r for r in back["details"]["readings"] if r["gate"] == GATE)["compare"]
    assert kept["verdict"] == "regression" and kept["low"] > kept["margin"]
    regression = [r for r in stack.readings("regress", step=1) if r["outcome"] == "rollback"]
    assert regression, "a reading at rollback"
    stats = regression[-1]["compare"]
    assert stats["verdict"] == "regression"
    assert stats["low"] > stats["margin"]  # the whole interval above the margin
    assert stats["new"]["events"] / stats["new"]["exposures"] > 0.2
    assert stats["log_e"] > 0


def test_an_undecided_comparison_holds_and_says_how_many_more_requests_it_needs(
    stack: Stack,
) -> None:
    # 10 % errors on both sides at 10 requests a second: far too few requests for an
    # interval 5 points wide, so the gate holds the rollout past its one-second dwell.
    stack.begin(
        "undecided",
        plan("undecided", hold="1s", min_samples=10, extra=OBSERVED),
        {"new": (10, 0.10), "old": (10, 0.10)},
    )

    def undecided() -> list[dict[str, Any]]:
        return [
            r for r in stack.readings("undecided", step=1) if r["compare"]["verdict"] == "undecided"
        ]

    wait_until(lambda: len(undecided()) >= 3, 45, "three undecided readings at the canary")
    view = stack.rollout("undecided")
    assert (view["status"], view["step"]) == ("running", 1)
    assert [e["action"] for e in stack.automatic("undecided")] == ["advance"]
    latest = undecided()[-1]
    assert latest["outcome"] == "hold"
    stats = latest["compare"]
    assert stats["needed"] is not None and stats["needed"] > 0
    assert stats["low"] < stats["margin"] < stats["high"]
    assert f"needs about {stats['needed']:,.0f} more new-side requests" in stats["sentence"]
    assert "needs about" in view["reason"]

    # The observe-only gate reads 10 % errors, over its level, and only says so.
    would = "observe only: new-error-ratio would rollback"
    wait_until(
        lambda: would in stack.rollout("undecided")["reason"],
        30,
        "the observe-only gate at its rollback level",
    )
    assert [e["action"] for e in stack.automatic("undecided")] == ["advance"]
    status = rollout_cli(stack.server, "status", "undecided")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    compare_line = next(line for line in lines if line.strip().startswith(f"{GATE}:"))
    assert f"{GATE}: hold: new " in compare_line and "more new-side requests" in compare_line
    observed = next(line for line in lines if line.strip().startswith("new-error-ratio:"))
    assert "observe only: would rollback" in observed and "rollback_above 0.05" in observed

    page = ui_page(stack.server, "/ui/rollouts/undecided")
    assert page.status_code == 200
    assert 'class="compare-sentence"' in page.text and "more new-side requests" in page.text
    assert "observe only: would rollback" in page.text
    assert 'class="interval outcome-hold"' in page.text  # the interval drawn over time


def test_a_skewed_split_holds_with_assignment_unhealthy_and_never_rolls_back(
    stack: Stack,
) -> None:
    # The step serves 50 %, but the new side has a tenth of the requests: the groups are
    # not what the split says, so even a far worse error rate is no verdict.
    stack.begin("skewed", plan("skewed"), {"new": (100, 0.30), "old": (900, 0.01)})

    def mismatched() -> list[dict[str, Any]]:
        return [
            r
            for r in stack.readings("skewed", step=1)
            if r["compare"]["verdict"] == "assignment_unhealthy"
        ]

    wait_until(lambda: len(mismatched()) >= 5, 45, "five assignment-unhealthy readings")
    view = stack.rollout("skewed")
    assert (view["status"], view["step"]) == ("running", 1)
    assert "assignment unhealthy" in view["reason"]
    assert [e["action"] for e in stack.automatic("skewed")] == ["advance"]
    at_canary = stack.readings("skewed", step=1)
    assert all(r["outcome"] in ("hold",) for r in at_canary)
    stats = mismatched()[-1]["compare"]
    assert stats["share"] < 0.2 and stats["expected_share"] == 0.5
    assert stats["srm_p"] < 0.001
    assert stats["sentence"].startswith("assignment unhealthy")


def rollout_cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        env=server.cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def ui_page(server: Server, path: str) -> httpx.Response:
    session = ui_session(server.database_url, ADMIN_TOKEN)
    return httpx.get(server.url + path, cookies={SESSION_COOKIE: session}, timeout=15)


# --- evidence survives a restart ------------------------------------------------------------

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
STORED_PLAN = f"""
rollout: kept
flag: kept
interval: 10s
min_evaluations: 2
steps:
  - {{stage: canary, percent: 10, hold: 30s}}
  - {{stage: graduated, percent: 50, hold: 1h}}
  - {{stage: full}}
gates:
  - name: {GATE}
    kind: compare
    events: '{EVENTS}'
    exposures: '{EXPOSURES}'
    worse_by: 0.05
"""


@dataclass
class CountingSource:
    """Per-side counts the test sets, through the real core's ``compare_reading``; it
    records the variables it was given."""

    new: Side = field(default_factory=lambda: Side(20, 1000))
    old: Side = field(default_factory=lambda: Side(180, 9000))
    windows: list[str] = field(default_factory=list)

    def read(
        self,
        gate: Gate,
        variables: Mapping[str, str],
        now: datetime,
        *,
        deadline: float | None = None,
        state: RolloutState | None = None,
    ) -> GateReading:
        assert state is not None and gate.compare is not None
        self.windows.append(variables["step_window"])
        query = render_query(gate.compare.events, variables)
        return compare_reading(gate, self.new, self.old, state, now, query=query)

    def ping(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def load(store: Store, name: str) -> RolloutState:
    with store.read() as session:
        row = session.get(RolloutRow, name)
        assert row is not None
        return state_from_row(row)


def check(store: Store, source: CountingSource, clock: Clock, seconds: float) -> None:
    clock.now += timedelta(seconds=seconds)
    rollouts = Rollouts(store, lambda: None)
    scheduler = Scheduler(store, rollouts, source, Leases(store, "r1"), clock)
    result = scheduler.check("kept")
    assert (result.error, result.skipped) == (None, None)


def test_evidence_is_saved_and_loaded_again_after_a_restart(store: Store) -> None:
    clock, source = Clock(), CountingSource()
    parsed, text = parse_plan_input(STORED_PLAN, None)
    rollouts = Rollouts(store, lambda: None)
    rollouts.apply(parsed, text, "test", clock.now)
    rollouts.act("kept", Action.START, actor="test", now=clock.now)
    check(store, source, clock, 10)
    check(store, source, clock, 10)
    assert source.windows == ["10s", "20s"]  # since the step began, in whole seconds
    before = load(store, "kept")
    kept = before.evidence[GATE]
    assert kept.step_information > 0 and kept.segments == 0

    # A restart: a new engine on the same database loads what the first one saved.
    again = Store(store.url)
    try:
        after = load(again, "kept")
        assert after.evidence == before.evidence
        with again.read() as session:
            latest = {r["gate"]: r for r in gate_history.latest(session, "kept")}
        stats = latest[GATE]["compare"]
        assert stats["new"] == {"events": 20, "exposures": 1000}
        assert stats["expected_share"] == 0.1 and stats["verdict"] in ("not_worse", "undecided")
        assert stats["sentence"].startswith("new 2.00 % vs old 2.00 %")

        # The dwell passes with the new side not worse: the canary's evidence is folded
        # into the graduated step's, and that is saved too.
        source.new, source.old = Side(100, 5000), Side(900, 45000)
        check(again, source, clock, 10)
        moved = load(again, "kept")
        assert moved.step == 1, moved.reason
        folded = moved.evidence[GATE]
        # Folded: the canary's latest contribution (five times the requests of the
        # reading saved before the restart) is now a finished segment.
        assert folded.segments == 1 and folded.information > kept.step_information
        assert folded.step_information == 0
        assert load(again, "kept").evidence == moved.evidence
        assert moved.last_outcomes[GATE] is Outcome.OK
    finally:
        again.dispose()


# --- the adapter: what the count answers mean ------------------------------------------------


def _vector(samples: Mapping[str, str], label: str = "variant") -> bytes:
    return http_response(
        prometheus_json(
            [{"metric": {label: side}, "value": [1.7e9, value]} for side, value in samples.items()]
        )
    )


def _compare_gate() -> tuple[Gate, RolloutState]:
    parsed, _ = parse_plan_input(STORED_PLAN, None)
    state = RolloutState(plan=parsed, step_started_at=T0)
    return parsed.gates[0], state


def read_against(answers: Callable[[Request], bytes], **kw: Any) -> GateReading:
    gate, state = _compare_gate()
    variables = {"rollout": "kept", "step_window": "60s", **kw.pop("variables", {})}
    with HostilePeer(respond(answers)) as peer:
        gates = PrometheusGates(peer.url, timeout_seconds=2)
        return gates.read(gate, variables, T0, state=kw.pop("state", state), **kw)


def by_query(events: bytes, exposures: bytes) -> Callable[[Request], bytes]:
    return lambda request: events if "errors_total" in request.params["query"] else exposures


def test_counts_are_summed_per_side_by_the_label_and_other_values_left_out() -> None:
    reading = read_against(
        by_query(
            _vector({"new": "20", "old": "180", "third": "999"}),
            _vector({"new": "1000", "old": "9000", "third": "1"}),
        )
    )
    assert reading.compare is not None, reading.error
    assert (reading.compare.new, reading.compare.old) == (Side(20, 1000), Side(180, 9000))
    assert reading.samples == 1000 and reading.value == pytest.approx(0.02)
    assert 'errors_total{rollout="kept"}[60s]' in reading.query  # both queries, rendered
    assert 'requests_total{rollout="kept"}[60s]' in reading.query


def test_no_series_or_a_missing_side_counts_zero() -> None:
    empty = http_response(prometheus_json([]))
    reading = read_against(by_query(empty, empty))
    assert reading.outcome is Outcome.HOLD and reading.compare is not None
    assert (reading.compare.new, reading.compare.old) == (Side(0, 0), Side(0, 0))
    assert reading.compare.verdict.value == "waiting"

    # No errors on the new side yet: its series is simply absent from the answer.
    reading = read_against(by_query(_vector({"old": "5"}), _vector({"new": "100", "old": "900"})))
    assert reading.compare is not None, reading.error
    assert (reading.compare.new, reading.compare.old) == (Side(0, 100), Side(5, 900))


@pytest.mark.parametrize("bad", ["NaN", "+Inf", "-3"])
def test_a_count_that_is_not_a_count_is_no_data_with_a_clear_error(bad: str) -> None:
    reading = read_against(by_query(_vector({"new": bad, "old": "1"}), _vector({"new": "1"})))
    assert reading.outcome is Outcome.NO_DATA and reading.compare is None
    assert reading.error is not None
    assert reading.error.startswith('events: the count for variant="new" is')
    assert "a count is a finite number at least 0" in reading.error


def test_answers_that_are_not_per_side_vectors_are_errors() -> None:
    scalar = http_response(prometheus_json([1.7e9, "3"], "scalar"))
    reading = read_against(by_query(_vector({"new": "1", "old": "1"}), scalar))
    assert reading.outcome is Outcome.ERROR
    assert reading.error is not None and reading.error.startswith(
        "exposures: query returned a scalar"
    )

    unlabelled = _vector({"": "5"}, label="job")
    reading = read_against(by_query(unlabelled, unlabelled))
    assert reading.outcome is Outcome.ERROR and reading.error is not None
    assert "no series has the label 'variant'" in reading.error


def test_a_compare_gate_without_the_state_or_its_window_is_an_error() -> None:
    answers = by_query(_vector({"new": "1"}), _vector({"new": "1"}))
    reading = read_against(answers, state=None)
    assert reading.outcome is Outcome.ERROR
    assert reading.error == "events: a compare gate is read with its rollout's state"
    gate, state = _compare_gate()
    with HostilePeer(respond(answers)) as peer:
        unwindowed = PrometheusGates(peer.url).read(gate, {"rollout": "kept"}, T0, state=state)
    assert unwindowed.outcome is Outcome.ERROR and unwindowed.error is not None
    assert "unknown variable ${step_window}" in unwindowed.error


def test_a_compare_gate_past_the_check_deadline_is_an_error() -> None:
    answers = by_query(_vector({"new": "1"}), _vector({"new": "1"}))
    reading = read_against(answers, deadline=time.monotonic() - 1)
    assert reading.outcome is Outcome.ERROR
    assert reading.error == "events: check deadline exceeded"


@pytest.mark.parametrize(
    ("elapsed", "window"),
    [(timedelta(0), "1s"), (timedelta(seconds=0.9), "1s"), (timedelta(seconds=3725.9), "3725s")],
)
def test_the_step_window_is_whole_seconds_since_the_step_began_and_at_least_one(
    elapsed: timedelta, window: str
) -> None:
    _, state = _compare_gate()
    assert query_variables(state, T0 + elapsed)["step_window"] == window
    # Not begun yet (a pending rollout tried now): the shortest window, never an error.
    assert query_variables(RolloutState(plan=state.plan), T0)["step_window"] == "1s"
