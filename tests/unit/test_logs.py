"""What ``rollout serve`` logs at each level. Seen from a fresh process: under pytest the
root logger already has handlers, so ``logging.basicConfig`` would change nothing here."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
SERVE = """
import logging, sys
from controller.logs import configure_logging
configure_logging(sys.argv[1])
log = logging.getLogger("controller.jobs.scheduler")
log.debug("pass took 3 ms")
log.info("rollout checkout: Advance: gates healthy")
log.warning("rollout checkout: gate read failed")
"""


def serve_log(level: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", SERVE, level],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stderr.splitlines()


def line(level: str, message: str) -> str:
    return f"{TIMESTAMP} {level} " + re.escape(f"controller.jobs.scheduler: {message}")


@pytest.mark.parametrize("level", ["info", "INFO"])
def test_at_info_a_decision_and_a_warning_are_logged_and_debug_is_not(level: str) -> None:
    lines = serve_log(level)
    assert len(lines) == 2, lines
    assert re.fullmatch(line("INFO", "rollout checkout: Advance: gates healthy"), lines[0])
    assert re.fullmatch(line("WARNING", "rollout checkout: gate read failed"), lines[1])


def test_debug_brings_the_debug_lines_back() -> None:
    lines = serve_log("debug")
    assert len(lines) == 3, lines
    assert re.fullmatch(line("DEBUG", "pass took 3 ms"), lines[0])


def test_warning_keeps_only_the_warning() -> None:
    lines = serve_log("warning")
    assert len(lines) == 1, lines
    assert re.fullmatch(line("WARNING", "rollout checkout: gate read failed"), lines[0])
