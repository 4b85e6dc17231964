"""Alert mappings: which rollouts an incoming alert acts on, and how (pure).

A mapping file (``ROLLOUT_ALERT_MAPPINGS_FILE``, docs/alerts.md) lists mappings in
order. The first mapping whose ``match`` labels the alert carries and whose
``rollouts_by`` key the alert has decides, as routes do in Alertmanager:

- ``rollouts_by: rollout``: the rollout named by the alert's ``rollout`` label;
- ``rollouts_by: flag``: the rollout that drives the flag in its ``flag`` label;
- ``rollouts_by: labels``: every rollout whose plan labels equal the alert's labels
  for each name in ``plan_labels`` (``service=memory`` matches ``labels: {service:
  memory}``).

Its ``action`` (hold, rollback, abort) is what happens; a mapping without one takes
the alert's own ``action`` label, else its ``action`` annotation. Without a file the
one default mapping applies: the alert's ``rollout`` label names the rollout and its
``action`` label or annotation the action.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from stages.fields import boolean, choice, field, known_fields, label, required, sequence
from stages.fields import labels as label_map
from stages.problems import Path, PlanError, Problem, Report, show
from stages.yamlsource import read_yaml

MAX_MAPPINGS = 100
# Label values quoted in an audit reason, at most: an alert may carry dozens.
MAX_REASON_LABELS = 20


class AlertStatus(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class AlertAction(enum.StrEnum):
    HOLD = "hold"  # stop automatic advances while it fires
    ROLLBACK = "rollback"  # as a person's rollback (immediate unless the mapping says not)
    ABORT = "abort"  # as a person's abort: everyone old, for good


class RolloutsBy(enum.StrEnum):
    ROLLOUT = "rollout"
    FLAG = "flag"
    LABELS = "labels"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert of a notification, as received (Alertmanager's or the plain form)."""

    key: str  # Alertmanager's fingerprint, or the plain form's id
    name: str  # alertname
    status: AlertStatus
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime | None
    url: str = ""

    @property
    def occurrence(self) -> str:
        """What tells this firing of the alert from an earlier one with the same key:
        Alertmanager resends a firing alert every repeat_interval with the same
        fingerprint and startsAt, and a new firing has a new startsAt."""
        return self.starts_at.isoformat() if self.starts_at is not None else "-"


@dataclass(frozen=True, slots=True)
class AlertMapping:
    rollouts_by: RolloutsBy
    action: AlertAction | None = None  # None: the alert's own action label or annotation
    match: tuple[tuple[str, str], ...] = ()
    plan_labels: tuple[str, ...] = ()  # for rollouts_by: labels
    immediate: bool = True  # a rollback goes to the first step at once
    name: str = ""

    def matches(self, alert: Alert) -> bool:
        return all(alert.labels.get(k) == v for k, v in self.match)


DEFAULT_MAPPINGS = (AlertMapping(rollouts_by=RolloutsBy.ROLLOUT, name="default"),)


@dataclass(frozen=True, slots=True)
class RolloutRef:
    """What a mapping may select a rollout by."""

    name: str
    flag: str
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Target:
    rollout: str
    action: AlertAction
    immediate: bool
    mapping: str


@dataclass(frozen=True, slots=True)
class Routing:
    """Where a firing alert goes; ``why`` says, when it goes nowhere, why not."""

    targets: tuple[Target, ...]
    why: str = ""


def route(
    alert: Alert, mappings: Sequence[AlertMapping], rollouts: Sequence[RolloutRef]
) -> Routing:
    for index, mapping in enumerate(mappings):
        if not mapping.matches(alert):
            continue
        selected = _selected(mapping, alert, rollouts)
        if selected is None:  # the alert lacks the label this mapping selects by
            continue
        name = mapping.name or f"mappings[{index}]"
        action = mapping.action or _own_action(alert)
        if action is None:
            return Routing(
                (),
                f"mapping {name} takes the action from the alert, and it has no action "
                "label or annotation (hold, rollback or abort)",
            )
        if not selected:
            return Routing((), f"mapping {name}: {_no_rollout(mapping, alert)}")
        return Routing(tuple(Target(r.name, action, mapping.immediate, name) for r in selected))
    return Routing((), "no mapping matches the alert's labels")


def _selected(
    mapping: AlertMapping, alert: Alert, rollouts: Sequence[RolloutRef]
) -> list[RolloutRef] | None:
    labels = alert.labels
    if mapping.rollouts_by is RolloutsBy.ROLLOUT:
        wanted = labels.get("rollout")
        return None if wanted is None else [r for r in rollouts if r.name == wanted]
    if mapping.rollouts_by is RolloutsBy.FLAG:
        wanted = labels.get("flag")
        return None if wanted is None else [r for r in rollouts if r.flag == wanted]
    if any(k not in labels for k in mapping.plan_labels):
        return None
    return [r for r in rollouts if all(r.labels.get(k) == labels[k] for k in mapping.plan_labels)]


_ACTION_NAMES = frozenset(a.value for a in AlertAction)


def _own_action(alert: Alert) -> AlertAction | None:
    for source in (alert.labels, alert.annotations):
        raw = source.get("action")
        if raw is not None and raw in _ACTION_NAMES:
            return AlertAction(raw)
    return None


def _no_rollout(mapping: AlertMapping, alert: Alert) -> str:
    if mapping.rollouts_by is RolloutsBy.LABELS:
        wanted = ", ".join(f"{k}={alert.labels[k]}" for k in mapping.plan_labels)
        return f"no rollout's plan has the labels {wanted}"
    key = mapping.rollouts_by.value
    what = "named" if key == "rollout" else "drives the flag"
    return f"no rollout {what} {alert.labels[key]!r}"


# -- sentences ---------------------------------------------------------------------------


def hold_reason(alert: Alert, received: datetime) -> str:
    """What a held rollout says: "alert HighErrorRate firing since 12:03 UTC
    (severity=page)"."""
    since = alert.starts_at if alert.starts_at is not None else received
    text = f"alert {alert.name} firing since {_clock(since, received)}"
    severity = alert.labels.get("severity")
    return f"{text} (severity={severity})" if severity else text


def audit_reason(alert: Alert, target: Target, received: datetime) -> str:
    """The audit event's reason: the alert's name, labels and URL, and what they did."""
    since = alert.starts_at if alert.starts_at is not None else received
    shown = sorted((k, v) for k, v in alert.labels.items() if k != "alertname")
    labels = ", ".join(f"{k}={v}" for k, v in shown[:MAX_REASON_LABELS])
    if len(shown) > MAX_REASON_LABELS:
        labels += f", and {len(shown) - MAX_REASON_LABELS} more"
    text = (
        f"alert {alert.name} firing since {_clock(since, received)} ({labels}): "
        f"{target.action} by mapping {target.mapping}"
    )
    return f"{text}; {alert.url}" if alert.url else text


def _clock(at: datetime, received: datetime) -> str:
    # The day only when it is not the day the alert came in: "since 12:03 UTC".
    if at.date() == received.date():
        return f"{at:%H:%M} UTC"
    return f"{at:%Y-%m-%d %H:%M} UTC"


# -- the mapping file --------------------------------------------------------------------

_FILE_FIELDS = ("mappings",)
_MAPPING_FIELDS = ("name", "match", "rollouts_by", "plan_labels", "action", "immediate")


class AlertMappingError(PlanError):
    """A mapping file was rejected; ``problems`` lists everything wrong with it."""


def parse_mappings(text: str) -> tuple[AlertMapping, ...]:
    """The mappings of a YAML file, or ``AlertMappingError`` with every problem by path
    and line."""
    report = Report({})
    if not text.strip():
        raise AlertMappingError([Problem("mappings", "the file is empty: list mappings", 1)])
    data = read_yaml(text, report)
    mappings = _mappings(report, data) if not report.problems else ()
    if report.problems:
        raise AlertMappingError(report.problems)
    return mappings


def _mappings(report: Report, data: object) -> tuple[AlertMapping, ...]:
    fields = known_fields(report, (), data, _FILE_FIELDS, "an alert mapping file")
    if fields is None:
        return ()
    items = required(report, fields, (), "mappings", _list)
    if items is None:
        return ()
    if not items:
        report.add(("mappings",), "list at least one mapping, or leave the file out")
    found = [_mapping(report, ("mappings", i), item) for i, item in enumerate(items)]
    return tuple(m for m in found if m is not None)


def _list(report: Report, path: Path, value: object) -> list[object] | None:
    return sequence(report, path, value, MAX_MAPPINGS, "mappings")


def _mapping(report: Report, path: Path, value: object) -> AlertMapping | None:
    fields = known_fields(report, path, value, _MAPPING_FIELDS, "a mapping")
    if fields is None:
        return None
    by = required(report, fields, path, "rollouts_by", choice(RolloutsBy))
    no_names: tuple[str, ...] = ()
    plan_labels = field(report, fields, path, "plan_labels", _names, no_names)
    if by is RolloutsBy.LABELS and not plan_labels:
        report.add(
            (*path, "plan_labels"),
            "rollouts_by: labels needs plan_labels: the label names an alert and a plan "
            "must agree on, e.g. [service]",
        )
    elif by is not None and plan_labels and by is not RolloutsBy.LABELS:
        report.add((*path, "plan_labels"), f"only for rollouts_by: labels, not {by.value}")
    action = field(report, fields, path, "action", _action, None)
    immediate = field(report, fields, path, "immediate", boolean, True)
    if "immediate" in fields and action not in (None, AlertAction.ROLLBACK):
        report.add((*path, "immediate"), "only for action: rollback")
    if by is None:
        return None
    return AlertMapping(
        rollouts_by=by,
        action=action,
        match=field(report, fields, path, "match", label_map, ()),
        plan_labels=plan_labels,
        immediate=immediate,
        name=field(report, fields, path, "name", label, ""),
    )


def _action(report: Report, path: Path, value: object) -> AlertAction | None:
    return choice(AlertAction)(report, path, value)


def _names(report: Report, path: Path, value: object) -> tuple[str, ...] | None:
    items = sequence(report, path, value, 20, "label names")
    if items is None:
        return None
    names: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item:
            report.add((*path, i), f"must be a label name, not {show(item)}")
        else:
            names.append(item)
    return tuple(names)
