"""Response models of the REST API (pydantic, at the edge only): what ``/openapi.json``
says each route answers.

They describe the dicts the use cases build (``controller.storage.mapping``,
``controller.flagstore``, ``controller.audit``, ...); they add nothing and drop nothing.
So that the bytes on the wire stay those of the dicts:

- timestamps are ``str`` (already ISO 8601): pydantic would write ``Z`` for ``+00:00``;
- a number that may be an integer is ``Number`` (``int | float``): a ``float`` field
  turns ``5`` into ``5.0``;
- a key that is sometimes absent is optional, and its routes answer with
  ``response_model_exclude_unset`` so that it stays absent instead of becoming ``null``;
- what is open-ended (a plan, a flag's stored definition, audit details, a webhook's
  payload) is ``dict[str, Any]`` or keeps the keys the model does not name.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from controller.auth import Role
from stages.plan import Stage
from stages.state import Outcome, Status

Number = int | float
Timestamp = str  # ISO 8601 with its offset, as ``datetime.isoformat`` writes it


class Answer(BaseModel):
    # An answer model validates what the route built; a key it did not declare is
    # dropped by FastAPI, which tests/integration/test_openapi_answers.py guards against.
    model_config = ConfigDict(extra="ignore")


# -- errors --------------------------------------------------------------------


class Problem(Answer):
    field: str = Field(description="the field at fault: body.reason, steps[3].percent, ...")
    message: str
    line: int | None = Field(default=None, description="the plan file's line, when known")


class ErrorAnswer(Answer):
    """Every 4xx and 5xx body (controller/http/errors.py)."""

    error: str = Field(description="a code: invalid, not_found, version_conflict, ...")
    message: str
    problems: list[Problem] | None = Field(
        default=None, description="with 422 (and 400, 413, already_exists 409): each bad field"
    )
    current_version: int | None = Field(
        default=None, description="with version_conflict: the version to reload"
    )
    retry_after: int | None = Field(default=None, description="with rate_limited: seconds")


_ERROR_MEANING = {
    400: "the body or a header could not be read",
    401: "no token, an unknown one, a revoked one or an expired one",
    403: "the token's role may not",
    404: "no such resource",
    409: "a conflict with the current state (version_conflict, action_refused, "
    "already_exists, ...)",
    413: "the body is over ROLLOUT_MAX_BODY_BYTES",
    422: "a field is invalid; problems names each",
    429: "too many changes, or too many gate tests at once (Retry-After)",
    503: "the database is unavailable; nothing was changed (Retry-After)",
}
READ_ERRORS = (401, 403, 422, 503)
CHANGE_ERRORS = (400, 401, 403, 404, 409, 413, 422, 429, 503)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status with the error body's schema."""
    return {s: {"model": ErrorAnswer, "description": _ERROR_MEANING[s]} for s in statuses}


# -- rollouts ------------------------------------------------------------------


class Serving(Answer):
    """What users get now; with the kill switch on, 0 % and no regions."""

    stage: Stage
    step: int = Field(description="-1 while nothing is served (pending, aborted)")
    percent: Number
    regions: list[str]
    shadow: bool
    kill_switch: bool


class Bake(Answer):
    """The bake after the last step (docs/bake.md): gates still read, the holdout old."""

    started_at: Timestamp
    ends_at: Timestamp = Field(description="when it completes, if no gate holds it")
    seconds_left: float
    holdout_percent: Number | None = Field(description="users kept on the old side")
    summary: str = Field(description='e.g. "baking, 5d 3h left, holdout 1 %"')


class ChangeWindow(Answer):
    """The change windows that apply (docs/windows.md): automatic advances, completions
    and approvals happen only while one is open."""

    open: bool
    next_open: Timestamp | None = Field(
        description="when the next window opens (while open: the one after this one)"
    )
    next_close: Timestamp | None = Field(
        description="when the open (or next) window closes; null: not in the next two weeks"
    )
    source: str = Field(description="plan (its own windows) or setting (ROLLOUT_CHANGE_WINDOWS)")
    message: str | None = Field(
        description="while closed: outside change window, next opens Mon 09:00 Europe/Berlin"
    )


class RolloutAnswer(Answer):
    name: str
    flag: str
    status: Status
    reason: str
    version: int = Field(description="send it back as an action's version (compare-and-swap)")
    step: int
    step_count: int
    step_label: str
    step_started_at: Timestamp | None
    seconds_in_step: float | None
    seconds_until_may_advance: float | None
    observe_until: Timestamp | None
    started_at: Timestamp | None
    ok_evaluations: int
    last_outcomes: dict[str, Outcome] = Field(description="gate name to its last outcome")
    serving: Serving
    bake: Bake | None = Field(default=None, description="in the bake after the last step")
    plan: dict[str, Any] = Field(description="the plan as stored (docs/plans.md)")
    window: ChangeWindow | None = Field(
        default=None, description="null when no change windows apply (advances at any time)"
    )
    created_at: Timestamp | None
    updated_at: Timestamp | None
    kill_switch: bool = Field(description="the rollout's flag is disabled")
    frozen_by: list[FrozenBy] = Field(description="active freezes in scope; empty: none")


class FrozenBy(Answer):
    """An active freeze that holds this rollout's advances (docs/freezes.md)."""

    id: int
    reason: str
    until: Timestamp
    created_by: str
    sentence: str = Field(description="frozen: INC-123 until 14:00 UTC by alice")


class RolloutList(Answer):
    rollouts: list[RolloutAnswer]


class PlanChange(Answer):
    """One difference between two plans (stages.plan_diff.Change)."""

    path: str = Field(description="as in a plan file: gates.error-rate.abort_above, steps[3].hold")
    kind: Literal["added", "removed", "changed"]
    before: Any = Field(description="null when added")
    after: Any = Field(description="null when removed")
    text: str = Field(description="the line a person reads: step 4 (canary 5%): hold 3d -> 2d")


class ApplyAnswer(Answer):
    outcome: Literal["created", "updated", "unchanged"]
    changes: list[str] = Field(description="what the new plan changed, in words")
    diff: list[PlanChange] = Field(default_factory=list, description="the same, as data")
    revision: int | None = Field(
        default=None, description="the plan revision this apply wrote; null when unchanged"
    )
    warnings: list[str] = Field(
        default_factory=list, description="e.g. gate query syntax unchecked: Prometheus down"
    )
    rollout: RolloutAnswer


class DryRunAnswer(Answer):
    outcome: Literal["valid"]
    would: Literal["created", "updated", "unchanged"] = Field(
        description="what the same apply would do now"
    )
    plan: dict[str, Any] = Field(description="the plan as it would be stored")
    changes: list[str] = Field(description="what it would change, in words")
    diff: list[PlanChange]
    warnings: list[str] = Field(description="said, and the plan would still apply")


class PlanDiffAnswer(Answer):
    rollout: str
    exists: bool = Field(description="false: applying the plan creates the rollout")
    revision: int | None = Field(description="the stored plan's revision it was compared with")
    changes: list[str] = Field(description="each difference in words; empty: none")
    diff: list[PlanChange]


class PlanRevision(Answer):
    revision: int
    applied_at: Timestamp
    actor: str
    reason: str
    summary: str = Field(description="what changed against the revision before, in one line")
    plan_hash: str = Field(description="sha256 of the canonical plan")
    changes: list[PlanChange] | None = Field(
        default=None, description="with ?changes=true: against the revision before"
    )


class PlanRevisions(Answer):
    rollout: str
    revisions: list[PlanRevision] = Field(description="oldest first")


class PlanRevisionDetail(PlanRevision):
    source: str = Field(description="the plan text as applied; empty for a JSON body")
    plan: dict[str, Any] = Field(description="the plan as stored (canonical)")
    previous: int | None
    changes: list[PlanChange] | None = Field(
        default=None, description="against the previous revision; empty for the first"
    )


# -- freezes -------------------------------------------------------------------


class FreezeAnswer(Answer):
    id: int
    reason: str
    until: Timestamp
    scope: dict[str, str] = Field(description="label (or rollout) to value; {}: every rollout")
    scope_text: str = Field(description="team=memory, ... or all rollouts")
    created_by: str
    created_at: Timestamp
    active: bool
    ended_at: Timestamp | None
    ended_by: str | None
    end_reason: str | None = Field(description="unfrozen or expired; null while active")
    sentence: str = Field(description="what each held rollout says")
    rollouts: list[str] = Field(description="the rollouts it holds now (active ones)")


class FreezeList(Answer):
    freezes: list[FreezeAnswer]


# -- audit ---------------------------------------------------------------------


class AuditEvent(Answer):
    id: int
    at: Timestamp
    actor: str
    action: str
    rollout: str | None
    flag: str | None
    from_status: str | None
    to_status: str | None
    from_step: int | None
    to_step: int | None
    version: int | None
    reason: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditEvents(Answer):
    events: list[AuditEvent]


class VerifyAnswer(Answer):
    ok: bool
    checked: int = Field(description="events checked")
    first_bad: int | None = Field(description="the id of the first bad event")
    problem: str | None


# -- gates ---------------------------------------------------------------------

# NaN and infinity, which JSON has not, are written as text ("nan", "inf").
Measured = Number | str | None


class SideCounts(Answer):
    events: Measured = Field(description="events (errors, slow requests) this step")
    exposures: Measured = Field(description="requests this step")


class CompareAnswer(Answer):
    """A compare gate's reading: the new side against the old over the current step,
    pooled with the evidence of earlier steps (docs/concepts.md)."""

    verdict: str = Field(
        description="regression, not_worse, undecided, waiting or assignment_unhealthy"
    )
    sentence: str = Field(description="the reading in one sentence, as the CLI prints it")
    new: SideCounts
    old: SideCounts
    estimate: Measured = Field(description="rate(new) - rate(old), every step so far")
    low: Measured = Field(description="the anytime-valid interval's lower end")
    high: Measured
    margin: Measured = Field(description="worse_by: how much worse the new side may be")
    alpha: Measured = Field(description="this gate's share of the false-rollback budget")
    statistic: Measured = Field(description="z of (estimate - margin)")
    log_e: Measured = Field(description="log e-value of the exact regression test")
    needed: Measured = Field(description="about how many more new-side requests decide")
    share: Measured = Field(description="the new side's observed share of exposures")
    expected_share: Measured = Field(description="the share the step's percent says")
    srm_p: Measured = Field(description="p-value of the sample-ratio check")
    segments: int = Field(description="earlier steps whose evidence is pooled in")
    min_samples: Measured
    allowance: Measured = Field(
        default=None,
        description="how far who is on each side can move the gap by chance (user_spread "
        "scaled to the step), included in low..high; 0 without user_spread",
    )


class GateReadingAnswer(Answer):
    """One gate read now (nothing stored)."""

    gate: str
    at: Timestamp
    query: str
    value: Measured
    baseline: Measured
    samples: Measured
    threshold: str | None = Field(description="e.g. rollback_above")
    threshold_value: Number | None
    outcome: Outcome
    error: str | None
    duration_ms: Number
    compare: CompareAnswer | None = Field(description="a compare gate's reading; else null")


class GateEvaluationAnswer(Answer):
    """One stored evaluation of one gate. Its numbers come from float columns, so they
    are ``float``: 5000 of these in one answer, and a union of int and float costs."""

    id: int
    gate: str
    step: int
    at: Timestamp
    query: str
    value: float | str | None
    baseline: float | str | None
    samples: float | str | None
    threshold: str | None
    threshold_value: float | None
    # A stored string, not re-checked against today's outcomes: an old row stays readable.
    outcome: str = Field(description="ok, hold, no_data, error, rollback or abort")
    error: str | None
    duration_ms: float
    compare: CompareAnswer | None = Field(description="a compare gate's reading; else null")


class GateEvaluations(Answer):
    latest: list[GateEvaluationAnswer] = Field(description="the newest of each gate")
    history: list[GateEvaluationAnswer] = Field(description="newest first")


class WouldDecide(Answer):
    decision: str = Field(description="Advance, Hold, Pause, Rollback, ...")
    reason: str


class RolloutGateTest(Answer):
    rollout: str
    status: Status
    step: int
    readings: list[GateReadingAnswer]
    would_decide: WouldDecide


class GateTest(Answer):
    reading: GateReadingAnswer


# -- flags ---------------------------------------------------------------------


class FlagAnswer(Answer):
    """A flag's stored definition (docs/flags.md) with the server's fields. Keys of the
    definition that this model does not name are kept: it is the stored JSON."""

    model_config = ConfigDict(extra="allow")

    key: str
    type: str | None = None
    variants: dict[str, Any] | None = None
    default_variant: str | None = None
    enabled: bool | None = None
    salt: str | None = None
    description: str | None = None
    rules: list[dict[str, Any]] | None = None
    unreadable: str | None = Field(
        default=None, description="present when the stored value cannot be served"
    )
    version: int
    managed_by: str | None = Field(description="the rollout that drives the flag")
    created_at: Timestamp
    updated_at: Timestamp


class FlagList(Answer):
    flags: list[FlagAnswer]


class PutFlagAnswer(Answer):
    outcome: Literal["created", "updated", "unchanged"]
    flag: FlagAnswer


# -- tokens --------------------------------------------------------------------


class TokenAnswer(Answer):
    id: str
    name: str
    role: Role
    created_by: str
    created_at: Timestamp
    revoked_at: Timestamp | None
    expires_at: Timestamp | None = Field(description="null: never expires")
    expired: bool = Field(description="past expires_at: refused with 401")
    last_used_at: Timestamp | None = Field(
        description="the last request with this token; stored at most once a minute per "
        "token, so up to a minute behind on other replicas; null: never used"
    )


class CreatedToken(TokenAnswer):
    token: str | None = Field(
        description="the secret, shown this once; null in a replayed (Idempotency-Key) answer"
    )


class TokenList(Answer):
    tokens: list[TokenAnswer]


# -- webhooks ------------------------------------------------------------------


class DeliveryAnswer(Answer):
    id: int
    delivery_id: str = Field(description="sent as X-Rollout-Delivery and Idempotency-Key")
    webhook: str
    event: str
    rollout: str | None
    audit_id: int | None
    status: str = Field(description="pending, delivered or dead")
    attempts: int
    created_at: Timestamp | None
    next_attempt_at: Timestamp | None = Field(description="while pending")
    delivered_at: Timestamp | None
    last_error: str | None
    claimed_by: str | None
    payload: dict[str, Any] = Field(description="the body sent (docs/webhooks.md)")


class DeliveryList(Answer):
    deliveries: list[DeliveryAnswer]


# -- alerts --------------------------------------------------------------------


class AlertOutcome(Answer):
    """What one alert did to one rollout, or (``rollout`` null) why it did nothing."""

    alert: str = Field(description="the alert's name (alertname)")
    fingerprint: str = Field(description="Alertmanager's fingerprint, or the plain form's id")
    status: Literal["firing", "resolved"]
    rollout: str | None
    action: Literal["hold", "rollback", "abort"] | None
    outcome: Literal["acted", "held", "refused", "replayed", "cleared", "resolved", "ignored"]
    message: str


class AlertRecord(Answer):
    """What one firing of an alert did to one rollout, as stored."""

    id: int
    alert: str
    fingerprint: str
    starts_at: Timestamp | None
    rollout: str
    action: Literal["hold", "rollback", "abort"]
    status: Literal["firing", "resolved"]
    holding: bool = Field(description="its hold stops the rollout's advances now")
    reason: str = Field(description="what a held rollout says")
    outcome: str = Field(description="what it did: held, acted, refused, and why")
    labels: dict[str, str]
    url: str
    source: Literal["alertmanager", "json"]
    received_at: Timestamp
    resolved_at: Timestamp | None


class AlertRecords(Answer):
    alerts: list[AlertRecord] = Field(description="newest first")


class AlertsAnswer(Answer):
    received: int = Field(description="alerts in the notification")
    results: list[AlertOutcome]


# -- what SDKs report, and impressions ------------------------------------------


class Tally(Answer):
    accepted: int
    ignored: int = Field(description="unknown flags or variants")


class ReportAnswer(Answer):
    counts: Tally
    impressions: Tally


class ImpressionAnswer(Answer):
    variant: str
    key_hash: str
    at: Timestamp


class FlagImpressions(Answer):
    flag: str
    capacity: int = Field(description="impressions kept per flag")
    dropped_by_sdks: int
    impressions: list[ImpressionAnswer] = Field(description="newest first")


# -- evaluation (written by controller/api/evaluation.py and the fast path) ---------


class EvaluationRollout(Answer):
    name: str
    status: str
    stage: str
    step: int
    percent: Number
    regions: list[str]
    shadow: bool


class EvaluationAnswer(Answer):
    """A native evaluation (camelCase, as OpenFeature clients expect)."""

    key: str
    value: Any
    variant: str | None
    reason: str
    errorCode: str | None = Field(default=None, description="FLAG_NOT_FOUND, ...")
    errorMessage: str | None = None
    flagVersion: int
    rollout: EvaluationRollout | None = None


class ServedRollout(Answer):
    rollout: str
    status: str
    stage: str
    step: int
    percent: Number
    regions: list[str]
    shadow: bool
    on_variant: str
    off_variant: str


class ServedFlag(Answer):
    """A flag as an SDK evaluates it: its definition, version and rollout overlay."""

    key: str
    type: str
    variants: dict[str, Any]
    default_variant: str
    enabled: bool
    salt: str | None
    description: str
    rules: list[dict[str, Any]]
    version: int
    rollout: ServedRollout | None


class SnapshotAnswer(Answer):
    revision: int
    flags: dict[str, ServedFlag] = Field(description="by flag key")


# -- health --------------------------------------------------------------------


class Health(Answer):
    status: Literal["ok"]


class Readiness(Answer):
    """``checks`` has ``database``, ``snapshot``, ``prometheus`` (reported, not required)
    and, on a replica that runs the scheduler, ``scheduler``; each has ``ok``."""

    ready: bool
    checks: dict[str, dict[str, Any]]
