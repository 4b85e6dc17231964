"""The CLI's retry arithmetic and the one-line summary that watch and wait print."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller.cli.follow import Look, summary
from controller.cli.transport import RetryPolicy, retry_after_seconds

NOW = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("-4", 0.0),
        ("Fri, 04 Dec 2026 18:00:10 GMT", 10.0),
        ("Fri, 04 Dec 2026 17:59:00 GMT", 0.0),  # in the past: now
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_seconds_or_an_http_date(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, NOW) == seconds


def test_the_server_s_retry_after_wins_but_is_capped() -> None:
    policy = RetryPolicy(max_delay=15)
    assert policy.delay(1, 2.0) == 2.0
    assert policy.delay(4, 0.0) == 0.0
    assert policy.delay(1, 3600.0) == 15


def test_without_retry_after_the_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(first_delay=0.5, max_delay=15)
    for attempt, base in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0)):
        for _ in range(50):
            assert base * 0.8 <= policy.delay(attempt, None) <= base * 1.2
    assert policy.delay(20, None) == 15


ROLLOUT = {
    "name": "m",
    "status": "running",
    "step": 1,
    "step_count": 3,
    "step_label": "canary 5%",
    "serving": {"step": 1, "percent": 5, "regions": [], "shadow": True},
    "last_outcomes": {"errors": "ok"},
    "reason": "dwell: 1h59m left",
    "seconds_in_step": 60,
}


def test_the_summary_ignores_the_dwell_countdown_while_running() -> None:
    later = {**ROLLOUT, "reason": "dwell: 1h58m left", "seconds_in_step": 120}
    assert summary(Look(NOW, ROLLOUT, [])) == summary(Look(NOW, later, []))
    assert summary(Look(NOW, ROLLOUT, [])) == (
        "rollout/m running at step 2/3 (canary 5%), serving 5% dual-write on, gates: errors=ok"
    )


def test_the_summary_says_why_a_rollout_stopped() -> None:
    paused = {**ROLLOUT, "status": "paused", "reason": "gate source unavailable"}
    assert summary(Look(NOW, paused, [])).endswith("; reason: gate source unavailable")
    gone = Look(NOW, None, [], error="cannot reach the server")
    assert summary(gone) == "server not answering (cannot reach the server); trying again"
