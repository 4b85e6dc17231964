"""``rollout backtest`` as a person runs it: a subprocess against a real Prometheus loaded
with known history; the lines it prints, its JSON, its exit codes, and one clear line
(never a traceback) for bad input. No controller server runs: it needs none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.demo.prometheus_process import free_port
from tests.backfilled_prometheus import History, backfilled_prometheus
from tests.integration.test_backtest import PLAN

MINUTE = timedelta(minutes=1)
T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=4)
END = T0 + 150 * MINUTE
HISTORY = History(
    begin=T0 - 30 * MINUTE,
    end=END,
    shares=((T0 - 30 * MINUTE, 0.10), (T0 + 30 * MINUTE, 0.25), (T0 + 60 * MINUTE, 0.50)),
    jump=T0 + 75 * MINUTE,
)


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def clock(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with backfilled_prometheus(HISTORY, tmp_path_factory.mktemp("history")) as url:
        yield url


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN)
    return path


def rollout(*args: str, prometheus: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    if prometheus is not None:
        env["ROLLOUT_PROMETHEUS_URL"] = prometheus
    return subprocess.run(
        [sys.executable, "-m", "controller", "backtest", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_timeline_as_text(prometheus: str, plan_file: Path) -> None:
    done = rollout("-f", str(plan_file), "--from", iso(T0), "--to", iso(END), prometheus=prometheus)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (f"backtest of checkout-v2: {clock(T0)} to {clock(END)}, a check every 1m")
    assert lines[1] == (
        f"{clock(T0 + 30 * MINUTE)}  step 1 (canary 10%) -> step 2 (canary 25%)  advance: "
        "dwell 30m done, 30 ok evaluations in a row: advancing to step 2 (canary 25%)"
    )
    assert lines[2].startswith(f"{clock(T0 + 60 * MINUTE)}  step 2 (canary 25%) -> step 3")
    assert lines[3].startswith(
        f"{clock(T0 + 77 * MINUTE)}  step 3 (graduated 50%) -> step 2 (canary 25%)  "
        "step_back: rollback: errors-vs-old: new "
    )
    assert lines[4].startswith(f"{clock(T0 + 87 * MINUTE)}  step 2 (canary 25%) -> step 1")
    assert lines[5].startswith(f"{clock(T0 + 97 * MINUTE)}  step 1 (canary 10%) -> rolled back")
    assert lines[6] == (
        f"ended: rolled back at {clock(T0 + 97 * MINUTE)}, after 98 checks; 0 gate errors, "
        "0 no-data readings"
    )
    assert len(lines) == 7


def test_the_timeline_as_json(prometheus: str, plan_file: Path) -> None:
    done = rollout(
        "-f", str(plan_file), "--from", iso(T0), "--to", iso(END), "--json",
        "--prometheus", prometheus,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert (body["ended"], body["checks"], body["gate_errors"]) == ("rolled back", 98, 0)
    assert body["final"] == {"status": "rolled_back", "step": 1, "step_index": 0}
    first = body["events"][0]
    assert first["at"] == iso(T0 + 30 * MINUTE)
    assert (first["action"], first["from_step"], first["to_step"]) == ("advance", 1, 2)
    assert (first["from_step_index"], first["to_step_index"], first["status"]) == (0, 1, "running")
    readings = {r["gate"]: r for r in first["readings"]}
    assert readings["error-rate"]["outcome"] == "ok"
    assert readings["errors-vs-old"]["compare"]["new"]["exposures"] > 0
    assert [e["action"] for e in body["events"]] == [
        "advance", "advance", "step_back", "step_back", "rollback",
    ]  # fmt: skip


def test_relative_times_and_holds(prometheus: str, plan_file: Path) -> None:
    # From T0 for 5 minutes, written relative to now: every check, holds included.
    ago = int((datetime.now(UTC) - T0) / MINUTE)
    done = rollout(
        "-f", str(plan_file), "--from", f"-{ago}m", "--to", f"now-{ago - 4}m", "-v",
        prometheus=prometheus,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    holds = [line for line in lines if "  hold: " in line]
    assert len(holds) == 5, done.stdout
    assert "no transition: it would have stayed where it started" in lines
    assert lines[-1].startswith("ended: reached --to at step 1 (canary 10%), running")


def test_a_plan_whose_query_fails_exits_1(prometheus: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(PLAN.replace("sum(rate(app_requests_total{variant", "sum(rate(((", 1))

    done = rollout("-f", str(broken), "--from", iso(T0), "--to", iso(END), prometheus=prometheus)

    assert done.returncode == 1
    assert "queries that fail" in done.stderr
    assert "gate error-rate (step 1): bad query:" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("change", "args", "code", "says"),
    [
        (("steps:", "stepz:"), (), 2, "the plan does not parse"),
        (('{variant="new",status', '{variant="${team}",status'), (), 2, "unknown variable ${team}"),
        (None, ("--from", "yesterday"), 2, "'yesterday' is not a time"),
        (None, ("--from", "-1h", "--to", "-2h"), 2, "is after --to"),
        (None, ("--step", "9"), 2, "--step 9: the plan has steps 1 to 4"),
        (None, ("--from", "-100d"), 2, "more than 100,000"),
    ],
)
def test_bad_input_is_one_clear_line(
    tmp_path: Path,
    change: tuple[str, str] | None,
    args: tuple[str, ...],
    code: int,
    says: str,
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.replace(*change) if change else PLAN)
    given = ("--from", "-1h", *args) if "--from" not in args else args

    done = rollout("-f", str(plan), *given, prometheus=f"http://127.0.0.1:{free_port()}")

    assert done.returncode == code, done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_prometheus_and_a_missing_file(plan_file: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    unreachable = rollout("-f", str(plan_file), "--from", "-1h", prometheus=url)
    missing = rollout("-f", str(plan_file.with_name("none.yaml")), "--from", "-1h")

    assert unreachable.returncode == 3
    assert unreachable.stderr.strip() == f"rollout: cannot reach Prometheus at {url} (--prometheus)"
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr
    assert "Traceback" not in unreachable.stderr + missing.stderr
