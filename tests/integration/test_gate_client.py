"""``PrometheusGates`` against a real Prometheus scraping a real target.

The target serves several variants at once, each at a fixed error ratio, so one
Prometheus start (its first scrape comes ~5 s after start) serves every case.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.demo.prometheus_process import PrometheusProcess
from controller.gates.prometheus import PrometheusGates
from stages.plan import Gate
from stages.state import GateReading, Outcome
from tests.metrics_target import MetricsTarget

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
WEIRD = 'we"ird\\ro\nll"out {x}'  # a quote, a backslash, a newline and braces
ERROR_RATIO = (
    'sum(rate(memory_operation_total{status="error",variant="${%s}"}[5s]))'
    ' / sum(rate(memory_operation_total{variant="${%s}"}[5s]))'
)
NEW_ERRORS = ERROR_RATIO % ("new_variant", "new_variant")
OLD_ERRORS = ERROR_RATIO % ("old_variant", "old_variant")
NEW_REQUESTS = 'sum(increase(memory_operation_total{variant="${new_variant}"}[5s]))'


def variables(new: str = "new", old: str = "old", rollout: str = "memory-layer") -> dict[str, str]:
    return {
        "rollout": rollout,
        "flag": "memory-layer",
        "stage": "canary",
        "step": "2",
        "percent": "1",
        "new_variant": new,
        "old_variant": old,
    }


@dataclass
class Stack:
    target: MetricsTarget
    prometheus: PrometheusProcess
    gates: PrometheusGates

    def read(self, gate: Gate, **names: str) -> GateReading:
        return self.gates.read(gate, variables(**names), NOW)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with MetricsTarget() as target:
        target.set_traffic(variant="new", requests_per_second=1000, error_ratio=0.04)
        target.set_traffic(variant="old", requests_per_second=1000, error_ratio=0.01)
        target.set_traffic(variant="clean", requests_per_second=1000, error_ratio=0.0)
        target.set_traffic(variant=WEIRD, requests_per_second=200, error_ratio=0.0)
        with (
            PrometheusProcess([target.address], scrape_interval="1s") as prometheus,
            PrometheusGates(prometheus.url, timeout_seconds=5.0) as gates,
        ):
            # rate() needs two scrapes of every series: 4 variants x 2 statuses.
            prometheus.wait_for_series("count(rate(memory_operation_total[5s])) == 8", 30)
            yield Stack(target, prometheus, gates)


def gate(query: str = NEW_ERRORS, **fields: Any) -> Gate:
    return Gate(name="error-rate", query=query, **fields)


LEVELS = {"hold_above": 0.001, "rollback_above": 0.02, "abort_above": 0.1}


def test_no_errors_reads_ok_with_everything_recorded(stack: Stack) -> None:
    reading = stack.read(gate(**LEVELS), new="clean")
    assert reading.outcome is Outcome.OK, reading
    assert reading.value == 0.0
    assert reading.error is None
    assert reading.threshold is None
    assert reading.at == NOW
    assert reading.gate == "error-rate"
    assert 'variant="clean"' in reading.query and "${" not in reading.query
    assert 0 < reading.duration_ms < 5000


@pytest.mark.parametrize(
    ("levels", "outcome", "threshold"),
    [
        ({"hold_above": 0.01, "rollback_above": 0.2}, Outcome.HOLD, "hold_above"),
        (
            {"hold_above": 0.001, "rollback_above": 0.02, "abort_above": 0.2},
            Outcome.ROLLBACK,
            "rollback_above",
        ),
        (
            {"hold_above": 0.001, "rollback_above": 0.01, "abort_above": 0.02},
            Outcome.ABORT,
            "abort_above",
        ),
        ({"hold_below": 0.5}, Outcome.HOLD, "hold_below"),
    ],
    ids=["hold", "rollback", "abort", "below"],
)
def test_four_percent_errors_cross_the_level_they_reach(
    stack: Stack, levels: dict[str, float], outcome: Outcome, threshold: str
) -> None:
    reading = stack.read(gate(**levels))
    assert (reading.outcome, reading.threshold) == (outcome, threshold), reading
    assert reading.threshold_value == levels[threshold]
    assert reading.value == pytest.approx(0.04, abs=0.01)


def test_baseline_gate_compares_new_against_old(stack: Stack) -> None:
    relative = gate(baseline=OLD_ERRORS, hold_above=0.001, rollback_above=0.01)
    reading = stack.read(relative)
    assert (reading.outcome, reading.threshold) == (Outcome.ROLLBACK, "rollback_above"), reading
    assert reading.value == pytest.approx(0.04, abs=0.01)
    assert reading.baseline == pytest.approx(0.01, abs=0.005)

    # The same gate is fine when new behaves like old.
    same = stack.read(relative, new="old")
    assert same.outcome is Outcome.OK, same
    assert same.value == pytest.approx(same.baseline, abs=0.005)  # read moments apart


def test_a_query_matching_no_series_is_no_data(stack: Stack) -> None:
    reading = stack.read(gate(**LEVELS), new="no-such-variant")
    assert reading.outcome is Outcome.NO_DATA, reading
    assert reading.value is None
    assert reading.error is None


def test_too_few_samples_is_no_data_even_when_breached(stack: Stack) -> None:
    reading = stack.read(gate(samples=NEW_REQUESTS, min_samples=1e9, **LEVELS))
    assert reading.outcome is Outcome.NO_DATA, reading
    assert reading.samples is not None and reading.samples > 100
    assert reading.value == pytest.approx(0.04, abs=0.01)

    enough = stack.read(gate(samples=NEW_REQUESTS, min_samples=100, **LEVELS))
    assert enough.outcome is Outcome.ROLLBACK, enough


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sum(rate(memory_operation_total[5s])", "bad query: "),
        (
            "rate(memory_operation_total[5s])",
            "query returned 8 series; aggregate it (sum, max) to one",
        ),
        ("memory_operation_total[5s]", "range vector"),
        ('"text"', "query returned a string"),
        ("scalar(sum(memory_operation_total))", "query returned a scalar"),
    ],
    ids=["bad promql", "several series", "range vector", "string", "scalar"],
)
def test_an_answer_that_is_not_one_number_is_an_error(
    stack: Stack, query: str, message: str
) -> None:
    reading = stack.read(gate(query, **LEVELS))
    assert reading.outcome is Outcome.ERROR, reading
    assert reading.error is not None and message in reading.error


def test_bad_query_error_carries_prometheus_message(stack: Stack) -> None:
    reading = stack.read(gate("sum(rate(memory_operation_total[5s])", **LEVELS))
    assert reading.error is not None
    assert "parse error" in reading.error and "unclosed left parenthesis" in reading.error


def test_a_bad_baseline_query_says_it_was_the_baseline(stack: Stack) -> None:
    reading = stack.read(gate(baseline="sum(", hold_above=0.001))
    assert reading.outcome is Outcome.ERROR
    assert reading.error is not None and reading.error.startswith("baseline: bad query: ")
    assert reading.value == pytest.approx(0.04, abs=0.01)  # the main query did answer


def test_unknown_template_variable_is_an_error_reading(stack: Stack) -> None:
    reading = stack.read(gate('sum(up{region="${region}"})', hold_above=1))
    assert reading.outcome is Outcome.ERROR
    assert reading.error is not None and "unknown variable ${region}" in reading.error


def test_weird_label_value_reaches_prometheus_intact(stack: Stack) -> None:
    # The target exports a variant whose name holds a quote, a backslash and a newline:
    # only an exact round trip through the escaping finds its traffic.
    requests = 'sum(rate(memory_operation_total{variant="${new_variant}"}[5s]))'
    reading = stack.read(gate(requests, hold_above=1e9), new=WEIRD)
    assert reading.outcome is Outcome.OK, reading
    assert reading.value is not None and reading.value > 0


def test_weird_label_value_in_a_regex_matcher_matches_only_itself(stack: Stack) -> None:
    # Real RE2: the braces and backslash of the name are escaped as regex syntax too.
    query = 'sum(rate(memory_operation_total{variant=~"${new_variant}"}[5s]))'
    reading = stack.read(gate(query, hold_above=1e9), new=WEIRD)
    assert reading.outcome is Outcome.OK, reading
    assert reading.value is not None and reading.value > 0
    # "n.w" as a regex would match "new"; escaped, it matches no variant at all.
    dotted = stack.read(gate(query, hold_above=1e9), new="n.w")
    assert dotted.outcome is Outcome.NO_DATA, dotted


def test_a_scalar_wrapped_in_vector_is_read(stack: Stack) -> None:
    reading = stack.read(gate("vector(scalar(count(up)))", hold_above=5))
    assert (reading.outcome, reading.value) == (Outcome.OK, 1.0), reading


def test_weird_rollout_name_is_valid_promql_and_reads_no_data(stack: Stack) -> None:
    query = 'count(up{job="${rollout}"})'
    reading = stack.read(gate(query, hold_above=0), rollout=WEIRD)
    assert reading.outcome is Outcome.NO_DATA, reading
    assert reading.query == 'count(up{job="we\\"ird\\\\ro\\nll\\"out {x}"})'

    demo = stack.read(gate(query, hold_above=5), rollout="demo")  # the scrape job's name
    assert (demo.outcome, demo.value) == (Outcome.OK, 1.0), demo


def test_ping_a_ready_prometheus(stack: Stack) -> None:
    assert stack.gates.ping() is True


def test_stopped_prometheus_is_an_error_reading_not_an_exception() -> None:
    with PrometheusProcess([]) as prometheus:
        url = prometheus.url
    with PrometheusGates(url, timeout_seconds=2.0) as gates:
        reading = gates.read(gate(hold_above=1), variables(), NOW)
        assert gates.ping() is False
    assert reading.outcome is Outcome.ERROR
    assert reading.error == f"prometheus unreachable at {url}: connection refused"
    assert reading.query.startswith("sum(rate(memory_operation_total")
    assert reading.duration_ms < 2000  # refused at once: no retries, no backoff


def test_a_server_that_never_answers_times_out() -> None:
    # A listening socket nobody accepts from: the connection succeeds, the answer never comes.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with PrometheusGates(url, timeout_seconds=0.5) as gates:
            reading = gates.read(gate(hold_above=1), variables(), NOW)
    assert reading.outcome is Outcome.ERROR
    assert reading.error == "timeout after 0.5s"
    assert 400 < reading.duration_ms < 3000
