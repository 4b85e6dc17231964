"""Webhook payloads, signatures, retry timing and configuration: pure functions, time
and randomness passed in."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from controller.notify.config import TRANSITION_EVENTS, WebhookConfig
from controller.notify.payloads import (
    MAX_RETRY,
    Position,
    TransitionEvent,
    body_bytes,
    json_payload,
    parse_retry_after,
    retry_delay,
    signature,
    slack_payload,
    slack_summary,
    verdict,
)
from controller.notify.webhooks import UrlRedactor
from controller.rollouts import DECISION_ACTIONS
from controller.settings import Settings, explain_settings_error
from stages.actions import Action

AT = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


def rollback_event(**overrides: object) -> TransitionEvent:
    fields: dict[str, object] = {
        "audit_id": 42,
        "action": "rollback",
        "actor": "controller",
        "at": AT,
        "rollout": "memory-layer",
        "flag": "memory-layer",
        "reason": "abort: error-rate: 0.041 > abort_above 0.02",
        "before": Position("running", 3, "canary 5%"),
        "after": Position("rolled_back", 3, None),
        "serving": {"stage": "shadow", "step": 0, "percent": 0.0, "regions": [], "shadow": True},
    }
    fields.update(overrides)
    return TransitionEvent(**fields)  # type: ignore[arg-type]


# -- payloads ---------------------------------------------------------------------------


def test_json_payload_says_what_moved_from_where_to_where_and_why() -> None:
    payload = json_payload(rollback_event(), "https://rollouts.example.com/")
    assert payload == {
        "event": "rollback",
        "rollout": "memory-layer",
        "flag": "memory-layer",
        "from": {"status": "running", "step": 3, "stage": "canary 5%"},
        "to": {"status": "rolled_back", "step": 3, "stage": None},
        "serving": {"stage": "shadow", "step": 0, "percent": 0.0, "regions": [], "shadow": True},
        "reason": "abort: error-rate: 0.041 > abort_above 0.02",
        "actor": "controller",
        "at": "2025-03-04T05:06:07+00:00",
        "audit_id": 42,
        "url": "https://rollouts.example.com/ui/rollouts/memory-layer",
    }


def test_json_payload_has_no_link_without_a_public_url() -> None:
    assert json_payload(rollback_event(), None)["url"] is None


def test_slack_summary_reads_like_the_runbook_and_escapes_markup() -> None:
    assert slack_summary(rollback_event()) == (
        ":rotating_light: *memory-layer* rolled back at canary 5%: "
        "abort: error-rate: 0.041 &gt; abort_above 0.02"
    )


@pytest.mark.parametrize(
    ("action", "before", "expected"),
    [
        ("pause", Position("running", 1, "canary 1%"), ":double_vertical_bar: *m* paused at canary 1%"),  # noqa: E501
        ("start", Position("pending", 0, None), ":rocket: *m* started"),
        ("complete", Position("running", 4, "full"), ":tada: *m* completed at full"),
        ("step_back", Position("running", 2, "canary 5%"), ":warning: *m* stepped back at canary 5%"),  # noqa: E501
        ("new-thing", Position("running", 0, "shadow"), ":information_source: *m* new-thing at shadow"),  # noqa: E501
    ],
)  # fmt: skip
def test_slack_summary_by_event(action: str, before: Position, expected: str) -> None:
    event = rollback_event(action=action, rollout="m", before=before, reason="")
    assert slack_summary(event) == expected


def test_every_subscribable_event_has_its_own_slack_wording() -> None:
    for action in TRANSITION_EVENTS:
        summary = slack_summary(rollback_event(action=action, reason=""))
        assert not summary.startswith(":information_source:"), action


def test_slack_payload_is_an_incoming_webhook_message_with_blocks_and_a_link() -> None:
    payload = slack_payload(rollback_event(), "https://rollouts.example.com")
    assert payload["text"] == slack_summary(rollback_event())
    section, context = payload["blocks"]
    assert section == {"type": "section", "text": {"type": "mrkdwn", "text": payload["text"]}}
    line = context["elements"][0]["text"]
    assert "by controller" in line
    assert "running \u2192 rolled_back" in line
    assert "now serving 0%" in line
    assert "audit #42" in line
    assert "<https://rollouts.example.com/ui/rollouts/memory-layer|open>" in line


def test_slack_context_names_regions_and_says_when_nothing_new_is_served() -> None:
    regional = {"stage": "regional", "step": 5, "percent": 50.0, "regions": ["eu-west-1"]}
    assert "now serving 50% + eu-west-1" in _context(rollback_event(serving=regional))
    aborted = {"stage": "shadow", "step": -1, "percent": 0.0, "regions": [], "shadow": False}
    assert "now serving old to everyone" in _context(rollback_event(serving=aborted))


def _context(event: TransitionEvent) -> str:
    return str(slack_payload(event, None)["blocks"][1]["elements"][0]["text"])


# -- signature and body -----------------------------------------------------------------


def test_body_is_compact_json_that_decodes_to_the_payload() -> None:
    payload = json_payload(rollback_event(), None)
    body = body_bytes(payload)
    assert json.loads(body) == payload
    assert b'": ' not in body and b', "' not in body
    assert body == body_bytes(dict(reversed(payload.items())))  # key order is fixed


def test_signature_is_the_hex_hmac_sha256_of_the_body_a_receiver_can_check() -> None:
    body = b'{"event":"pause"}'
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert signature("s3cret", body) == f"sha256={expected}"
    assert signature("other", body) != signature("s3cret", body)


# -- what an answer means ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (500, "retry"),
        (502, "retry"),
        (503, "retry"),
        (408, "retry"),
        (425, "retry"),
        (429, "retry"),
        (400, "dead"),
        (401, "dead"),
        (403, "dead"),
        (404, "dead"),
        (410, "dead"),
        (301, "dead"),
    ],
)
def test_verdict_of_each_answer(status: int, expected: str) -> None:
    assert verdict(status) == expected


# -- retry timing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [(1, 1), (2, 2), (3, 4), (4, 8), (9, 256), (10, 300), (20, 300), (500, 300)],
)
def test_waits_double_from_one_second_up_to_five_minutes(attempts: int, seconds: int) -> None:
    # rand 0 draws no jitter: exactly the doubled wait.
    assert retry_delay(attempts, 0.0) == timedelta(seconds=seconds)


@pytest.mark.parametrize("attempts", [1, 3, 8, 12])
def test_jitter_shortens_each_wait_by_at_most_a_quarter(attempts: int) -> None:
    doubled = retry_delay(attempts, 0.0)
    waits = [retry_delay(attempts, r / 10) for r in range(10)]
    assert waits == sorted(waits, reverse=True) and len(set(waits)) == 10
    assert doubled * 0.75 < waits[-1] <= waits[0] == doubled <= MAX_RETRY


def test_a_longer_retry_after_is_honoured_up_to_the_cap() -> None:
    assert retry_delay(1, 0.0, retry_after=30) == timedelta(seconds=30)
    assert retry_delay(5, 0.0, retry_after=1) == timedelta(seconds=16)
    assert retry_delay(1, 0.0, retry_after=3600) == MAX_RETRY


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        (None, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("-3", None),
    ],
)  # fmt: skip
def test_retry_after_header(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


# -- configuration ----------------------------------------------------------------------


def test_subscribable_events_are_every_controller_transition_and_every_action() -> None:
    assert set(DECISION_ACTIONS.values()) | {a.value for a in Action} == TRANSITION_EVENTS


def test_a_webhook_without_events_wants_every_transition_one_with_events_only_those() -> None:
    every = WebhookConfig(name="all", url="https://example.com/h")  # type: ignore[arg-type]
    assert all(every.wants(e) for e in TRANSITION_EVENTS)
    assert not every.wants("apply")
    some = WebhookConfig(name="bad-news", url="https://x.test/", events=["rollback", "abort"])  # type: ignore[arg-type]
    assert some.wants("rollback") and not some.wants("advance")


def test_the_url_is_not_in_the_repr_and_the_secret_is_masked() -> None:
    hook = WebhookConfig(
        name="ops",
        url="https://hooks.slack.com/services/T0/B0/xyzzy",  # type: ignore[arg-type]
        secret="hunter2",  # type: ignore[arg-type]
    )
    assert "xyzzy" not in repr(hook) and "hunter2" not in repr(hook)


def _settings_error(monkeypatch: pytest.MonkeyPatch, value: str) -> str:
    monkeypatch.setenv("ROLLOUT_WEBHOOKS", value)
    with pytest.raises(Exception) as caught:
        Settings()
    assert (
        isinstance(caught.value, ValidationError) or "SettingsError" in type(caught.value).__name__
    )
    return explain_settings_error(caught.value)  # type: ignore[arg-type]


def test_bad_webhooks_are_refused_at_start_naming_each_field_without_the_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hooks = [
        {"name": "ops", "url": "ftp://hooks.example.com/SECRETPATH", "format": "teams"},
        {"name": "x", "url": "https://ok.example.com/", "events": ["rolback"]},
        {"name": "y", "url": "https://ok.example.com/", "events": []},
        {"name": "z", "url": "https://ok.example.com/", "colour": "red"},
    ]
    text = _settings_error(monkeypatch, json.dumps(hooks))
    assert "ROLLOUT_WEBHOOKS[0].url:" in text
    assert "ROLLOUT_WEBHOOKS[0].format:" in text
    assert "ROLLOUT_WEBHOOKS[1].events:" in text and "rolback" in text
    assert "ROLLOUT_WEBHOOKS[2].events:" in text
    assert "ROLLOUT_WEBHOOKS[3].colour:" in text
    assert "SECRETPATH" not in text


def test_duplicate_names_and_broken_json_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    twice = [{"name": "ops", "url": "https://a.test/"}, {"name": "ops", "url": "https://b.test/"}]
    text = _settings_error(monkeypatch, json.dumps(twice))
    assert "ROLLOUT_WEBHOOKS:" in text and "'ops'" in text
    assert _settings_error(monkeypatch, '[{"name": ') == (
        "invalid settings:\n  - ROLLOUT_WEBHOOKS: not valid JSON"
    )


@pytest.mark.parametrize(
    "variable", ["ROLLOUT_WEBHOOK_RETENTION", "ROLLOUT_GATE_HISTORY_RETENTION"]
)
@pytest.mark.parametrize("value", ["a week", "0s", "-1d"])
def test_a_retention_that_is_not_a_positive_duration_is_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert explain_settings_error(caught.value).startswith(f"invalid settings:\n  - {variable}:")


def test_valid_webhooks_load_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "ROLLOUT_WEBHOOKS",
        json.dumps([{"name": "ops", "url": "https://a.test/h", "format": "slack", "secret": "s"}]),
    )
    (hook,) = Settings().webhooks
    assert (hook.name, str(hook.url), hook.format) == ("ops", "https://a.test/h", "slack")
    assert hook.secret is not None and hook.secret.get_secret_value() == "s"


# -- logs -------------------------------------------------------------------------------


def test_log_records_and_errors_name_the_webhook_not_its_url() -> None:
    hook = WebhookConfig(name="ops", url="https://hooks.slack.com/services/T0/B0/xyzzy")  # type: ignore[arg-type]
    redactor = UrlRedactor([hook])
    record = logging.LogRecord(
        "httpx", logging.INFO, __file__, 1, 'HTTP Request: %s %s "%s"',
        ("POST", "https://hooks.slack.com/services/T0/B0/xyzzy", "HTTP/1.1 200 OK"), None,
    )  # fmt: skip
    assert redactor.filter(record)
    assert record.getMessage() == 'HTTP Request: POST <webhook ops> "HTTP/1.1 200 OK"'
    assert redactor.redact("ConnectError for https://hooks.slack.com/services/T0/B0/xyzzy/") == (
        "ConnectError for <webhook ops>/"
    )
