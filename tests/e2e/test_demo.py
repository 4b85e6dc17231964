"""``rollout demo`` end to end: the real command, a real Prometheus, the packaged plan.

Each run takes the plan's own holds (shadow 6s, the others 4-6s, gates every 2s):
about 45s with errors injected at step 4, about 90s for a whole healthy rollout.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.serving import ROOT

RUN_TIMEOUT_S = 280


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    return subprocess.run(
        [sys.executable, "-m", "controller", "demo", "--no-input", "--port", "0", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


@pytest.mark.timeout(RUN_TIMEOUT_S + 20)
def test_injected_errors_are_rolled_back_automatically_with_the_reason_shown() -> None:
    result = run_demo("--inject-errors-at", "4", "--timeout", "240")

    out = result.stdout
    assert result.returncode == 0, explain(result)
    assert "injecting errors on the new side at step 4 (canary 5%)" in out, explain(result)
    # The rollback is announced as it happens, with the gate and value behind it.
    alert = re.search(r"!!! AUTOMATIC ROLLBACK: controller: (step_back|rollback) .*", out)
    assert alert is not None, explain(result)
    # A threshold ("0.15 > abort_above 0.05") or a compare gate's sentence ("new 75.00 %
    # vs old 0.00 %, ... > 5.00 pp -> rollback; 10 vs 230 requests").
    threshold = r"[\d.]+ > (abort|rollback)_above"
    compared = r"new [\d.]+ % vs old [\d.]+ %.* > [\d.]+ pp -> (rollback|abort); [\d,]+ vs"
    assert re.search(rf"(abort|rollback): [\w-]+: (this step )?({threshold}|{compared})", alert[0])
    summary = out[out.index("== summary ==") :]
    assert re.search(r"first rollback decision: \d+\.\ds after injection", summary), summary
    assert re.search(r"every evaluation on the old side: \d+\.\ds after injection", summary)
    assert "final: rolled_back at step 1/12 (shadow)" in summary
    assert "result: as expected (a rollback after injected errors)" in summary


@pytest.mark.timeout(RUN_TIMEOUT_S + 20)
def test_without_errors_the_whole_runbook_completes() -> None:
    result = run_demo("--timeout", "240")

    out = result.stdout
    assert result.returncode == 0, explain(result)
    summary = out[out.index("== summary ==") :]
    assert "final: completed at step 12/12 (full (dual-write off))" in summary, summary
    # Every step was entered in order by the controller, and the approval was recorded.
    advances = re.findall(r"controller: advance -> running at step (\d+)", summary)
    assert advances == ["2", "3", "4", "5", "6", "7", "8", "9", "10", "12"], summary
    assert "approve -> running at step 11: auto-approved by rollout demo" in summary
    assert "AUTOMATIC ROLLBACK" not in out
    assert "errors injected: no" in summary
    assert "result: as expected (a completed rollout)" in summary


def test_a_bad_injection_step_is_refused_before_anything_starts() -> None:
    result = run_demo("--inject-errors-at", "13")

    assert result.returncode == 2, explain(result)
    assert "--inject-errors-at 13: steps are 1..12" in result.stderr
