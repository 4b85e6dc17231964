"""The line ``rollout serve`` logs at start about Prometheus: which URL the gates read,
and whether it answers a query.

Bounded (``START_CHECK_SECONDS``), so start-up never waits long for a Prometheus that
hangs, and never fatal: a controller may well start before its Prometheus, and gates
already treat an unreachable one as ``error`` (hold, then pause), never as healthy.
"""

from __future__ import annotations

import logging

from controller.gates.prometheus import PrometheusGates

log = logging.getLogger(__name__)

START_CHECK_SECONDS = 2.0
SETTING = "ROLLOUT_PROMETHEUS_URL"
SET_UP = "docs/prometheus.md"


def log_prometheus_check(
    gates: PrometheusGates, *, configured: bool, timeout: float = START_CHECK_SECONDS
) -> str | None:
    """Log one line about ``gates``' Prometheus; returns what is wrong, None if nothing.

    ``configured``: whether the URL came from ``ROLLOUT_PROMETHEUS_URL`` (or another
    setting) rather than the built-in default.
    """
    try:
        problem = gates.query_problem(timeout)
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
    source = SETTING if configured else f"the default: {SETTING} is not set"
    if problem is not None:
        log.warning(
            "prometheus: cannot query %s (%s): %s. Gate readings are errors until it "
            "answers: rollouts with gates hold, then pause. Set-up: %s",
            gates.url,
            source,
            problem,
            SET_UP,
        )
    elif not configured:
        log.warning(
            "prometheus: %s is not set; gates read the default %s, which answers queries",
            SETTING,
            gates.url,
        )
    else:
        log.info("prometheus: %s answers queries (%s)", gates.url, SETTING)
    return problem
