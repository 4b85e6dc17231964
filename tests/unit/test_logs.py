"""What ``rollout serve`` logs at each level: APScheduler's per-run lines only on debug."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from controller.logs import _QUIET_AT_INFO, configure_logging

EXECUTOR = logging.getLogger("apscheduler.executors.default")


@pytest.fixture(autouse=True)
def restore_levels() -> Iterator[None]:
    saved = {n: logging.getLogger(n).level for n in _QUIET_AT_INFO}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize("level", ["info", "INFO", "warning"])
def test_at_info_and_above_a_job_run_is_not_logged_but_a_missed_run_is(level: str) -> None:
    logging.getLogger("apscheduler.executors").setLevel(logging.NOTSET)
    configure_logging(level)
    # Set on the logger itself, so it holds whatever the root logger's level is.
    assert logging.getLogger("apscheduler.executors").level == logging.WARNING
    assert not EXECUTOR.isEnabledFor(logging.INFO)
    assert EXECUTOR.isEnabledFor(logging.WARNING)
    assert not logging.getLogger("apscheduler.scheduler").isEnabledFor(logging.INFO)


def test_debug_brings_the_scheduler_lines_back() -> None:
    configure_logging("info")
    configure_logging("debug")
    assert logging.getLogger("apscheduler.executors").level == logging.NOTSET
    assert logging.getLogger("apscheduler.scheduler").level == logging.NOTSET


def test_the_controller_own_lines_stay_at_info() -> None:
    configure_logging("info")
    assert logging.getLogger("controller.jobs.scheduler").level == logging.NOTSET
