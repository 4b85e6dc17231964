"""Logging set-up for ``rollout serve``: one line per event, never a token."""

from __future__ import annotations

import logging

# APScheduler logs two INFO lines for every run of every job: with a one-second tick
# that is most of the log and hides the controller's own lines (a decision, an outage).
# Its warnings (a missed or overlapping run) still show.
_QUIET_AT_INFO = ("apscheduler.executors", "apscheduler.scheduler")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Asked for debug, a person wants every scheduler line back.
    asked = logging.getLevelName(level.upper())
    quiet = logging.WARNING if asked >= logging.INFO else logging.NOTSET
    for name in _QUIET_AT_INFO:
        logging.getLogger(name).setLevel(quiet)
