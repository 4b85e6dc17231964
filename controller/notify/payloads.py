"""What a webhook delivery says and when it is tried again: pure functions of their
inputs (the event, the time, a random number), so the unit tests pass them in.

Two formats: ``json`` (one flat document a program reads) and ``slack`` (an
incoming-webhook message: ``text`` for notifications, ``blocks`` for the channel)."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

FIRST_RETRY = timedelta(seconds=1)
MAX_RETRY = timedelta(minutes=5)
# Each wait is 75 % to 100 % of the doubled one, so deliveries that failed together
# (a receiver down) do not all come back at the same moment.
JITTER = 0.25

# What a receiver's answer means for the delivery.
Verdict = Literal["delivered", "retry", "dead"]

# The receiver may be busy or rate-limiting: these 4xx are worth another try.
RETRYABLE_4XX = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class Position:
    """Where a rollout was or is: status and plan step (0-based, as in the API)."""

    status: str | None
    step: int | None
    label: str | None  # the step's stage and percent, e.g. "canary 5%"


@dataclass(frozen=True, slots=True)
class TransitionEvent:
    audit_id: int
    action: str
    actor: str
    at: datetime
    rollout: str
    flag: str
    reason: str
    before: Position
    after: Position
    # What users get after the transition; ``kill_switch: true`` (and 0 %) while the
    # flag is disabled.
    serving: dict[str, Any]


def json_payload(event: TransitionEvent, public_url: str | None) -> dict[str, Any]:
    return {
        "event": event.action,
        "rollout": event.rollout,
        "flag": event.flag,
        "from": _position(event.before),
        "to": _position(event.after),
        "serving": event.serving,
        "reason": event.reason,
        "actor": event.actor,
        "at": event.at.isoformat(),
        "audit_id": event.audit_id,
        "url": rollout_link(public_url, event.rollout),
    }


def _position(p: Position) -> dict[str, Any]:
    return {"status": p.status, "step": p.step, "stage": p.label}


def rollout_link(public_url: str | None, rollout: str) -> str | None:
    if not public_url:
        return None
    return f"{public_url.rstrip('/')}/ui/rollouts/{quote(rollout, safe='')}"


# emoji and past-tense verb of each event, for people reading a channel
_SLACK_WORDS: dict[str, tuple[str, str]] = {
    "rollback": (":rotating_light:", "rolled back"),
    "step_back": (":warning:", "stepped back"),
    "abort": (":no_entry:", "aborted"),
    "pause": (":double_vertical_bar:", "paused"),
    "await_approval": (":raised_hand:", "awaits approval"),
    "recover": (":large_green_circle:", "recovered"),
    "complete": (":tada:", "completed"),
    "bake": (":bread:", "began its bake after the last step"),
    "advance": (":arrow_forward:", "advanced"),
    "start": (":rocket:", "started"),
    "resume": (":arrow_forward:", "resumed"),
    "approve": (":white_check_mark:", "approved"),
    "retry": (":repeat:", "retried"),
}


def slack_payload(event: TransitionEvent, public_url: str | None) -> dict[str, Any]:
    summary = slack_summary(event)
    context = [
        f"by {_escape(event.actor)}",
        f"{event.before.status} \u2192 {event.after.status}",
        f"now serving {_serving_text(event.serving)}",
        f"audit #{event.audit_id}",
    ]
    link = rollout_link(public_url, event.rollout)
    if link:
        context.append(f"<{link}|open>")
    return {
        "text": summary,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": summary}},
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": " \u00b7 ".join(context)}],
            },
        ],
    }


def slack_summary(event: TransitionEvent) -> str:
    """``:rotating_light: *memory-layer* rolled back at canary 5%: <why>``"""
    emoji, verb = _SLACK_WORDS.get(event.action, (":information_source:", event.action))
    where = f" at {event.before.label}" if event.before.label else ""
    why = f": {_escape(event.reason)}" if event.reason else ""
    return f"{emoji} *{_escape(event.rollout)}* {verb}{where}{why}"


def _serving_text(serving: dict[str, Any]) -> str:
    if serving.get("kill_switch"):
        return "0% (kill switch: the flag is disabled)"
    if serving.get("step", -1) < 0:
        return "old to everyone"
    text = f"{serving.get('percent', 0):g}%"
    if serving.get("regions"):
        text += " + " + ",".join(serving["regions"])
    return text


def _escape(text: str) -> str:
    # Slack mrkdwn treats these three as markup (a reason like "0.04 > 0.02" has one).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True, slots=True)
class FreezeNotice:
    """A freeze made, ended or expired: its audit event and the freeze as the API shows it."""

    audit_id: int
    action: str  # freeze, unfreeze, freeze.expire
    actor: str
    at: datetime
    reason: str  # the audit event's sentence
    freeze: dict[str, Any]
    rollouts: list[str]  # those it held when the event was written


def freeze_json_payload(notice: FreezeNotice, public_url: str | None) -> dict[str, Any]:
    return {
        "event": notice.action,
        "freeze": notice.freeze,
        "rollouts": notice.rollouts,
        "reason": notice.reason,
        "actor": notice.actor,
        "at": notice.at.isoformat(),
        "audit_id": notice.audit_id,
        "url": f"{public_url.rstrip('/')}/ui/freezes" if public_url else None,
    }


_FREEZE_WORDS = {
    "freeze": (":ice_cube:", "Freeze"),
    "unfreeze": (":sunny:", "Unfrozen"),
    "freeze.expire": (":sunny:", "Freeze expired"),
}


def freeze_slack_payload(notice: FreezeNotice, public_url: str | None) -> dict[str, Any]:
    emoji, verb = _FREEZE_WORDS.get(notice.action, (":information_source:", notice.action))
    summary = f"{emoji} {verb}: {_escape(notice.reason)}"
    held = ", ".join(notice.rollouts) or "none now"
    context = [f"by {_escape(notice.actor)}", f"holds: {_escape(held)}"]
    context.append(f"audit #{notice.audit_id}")
    if public_url:
        context.append(f"<{public_url.rstrip('/')}/ui/freezes|open>")
    return {
        "text": summary,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": summary}},
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": " \u00b7 ".join(context)}],
            },
        ],
    }


def body_bytes(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, keys in a fixed order."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def signature(secret: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verdict(status_code: int) -> Verdict:
    """2xx: delivered. 408/425/429 and 5xx: try again. Any other answer (3xx, 4xx)
    says this request will never be accepted as it is (a removed Slack hook answers
    404, a wrong secret 401/403): dead at once, until a person retries it."""
    if 200 <= status_code < 300:
        return "delivered"
    if status_code >= 500 or status_code in RETRYABLE_4XX:
        return "retry"
    return "dead"


def retry_delay(attempts: int, rand: float, retry_after: float | None = None) -> timedelta:
    """The wait after the ``attempts``-th failed try: 1 s, 2 s, 4 s, ... doubling up to
    5 min, shortened by up to a quarter by ``rand`` in [0, 1). A receiver's
    ``Retry-After`` (seconds) is honoured when longer, up to the same cap."""
    doubled: timedelta = FIRST_RETRY * 2 ** min(max(attempts - 1, 0), 20)
    wait = min(doubled, MAX_RETRY) * (1 - JITTER * rand)
    if retry_after is not None and retry_after > 0:
        wait = max(wait, timedelta(seconds=retry_after))
    return min(wait, MAX_RETRY)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header; the HTTP-date form is ignored."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
