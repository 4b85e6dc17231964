"""What ``ROLLOUT_WEBHOOKS`` holds: a JSON list of webhooks, validated at start.

A webhook's URL is treated as a secret (a Slack incoming-webhook URL is one): it is
left out of reprs, error messages and logs, which name the webhook instead."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, field_validator

from controller.rollouts import DECISION_ACTIONS
from stages.actions import Action

# Audit action names a webhook can subscribe to: the controller's own transitions and
# people's actions on a rollout. All of them move a rollout's status or step.
TRANSITION_EVENTS: frozenset[str] = frozenset(DECISION_ACTIONS.values()) | frozenset(
    a.value for a in Action
)
# A freeze made, ended or expired (docs/freezes.md): about many rollouts, not one.
FREEZE_EVENTS: frozenset[str] = frozenset({"freeze", "unfreeze", "freeze.expire"})
KNOWN_EVENTS = TRANSITION_EVENTS | FREEZE_EVENTS


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    url: HttpUrl = Field(repr=False)
    format: Literal["slack", "json"] = "json"
    # None: every transition, every manual action and every freeze event.
    events: frozenset[str] | None = None
    # With a secret, each delivery carries X-Rollout-Signature: sha256=<hmac of the body>.
    secret: SecretStr | None = None

    @field_validator("events")
    @classmethod
    def _known_events(cls, events: frozenset[str] | None) -> frozenset[str] | None:
        if events is None:
            return None
        if not events:
            raise ValueError("an empty list would send nothing; leave 'events' out for all")
        unknown = sorted(events - KNOWN_EVENTS)
        if unknown:
            raise ValueError(
                f"unknown event(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_EVENTS))}"
            )
        return events

    def wants(self, event: str) -> bool:
        return event in (self.events if self.events is not None else KNOWN_EVENTS)


def unique_names(webhooks: list[WebhookConfig]) -> list[WebhookConfig]:
    """Deliveries are stored under the webhook's name, so names must be unique."""
    seen: set[str] = set()
    for hook in webhooks:
        if hook.name in seen:
            raise ValueError(f"two webhooks are named {hook.name!r}; names must be unique")
        seen.add(hook.name)
    return webhooks
