"""Reading a plan's ``bake`` and ``holdout`` (``stages.bake``), and the checks that
need the rest of the plan: what the holdout does to dual-writes and to compare gates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

from stages.fields import duration_between, field, percentage
from stages.limits import MAX_DURATION
from stages.plan import Gate, Stage, Step
from stages.problems import Path, Report

# A holdout is a comparison group, not a second rollout: from half on, the "holdout"
# would be the bigger side.
MAX_HOLDOUT = 50.0
_BAKE = duration_between(timedelta(seconds=1), MAX_DURATION)


def read_bake(
    report: Report, fields: Mapping[str, object]
) -> tuple[timedelta | None, float | None]:
    bake = field(report, fields, (), "bake", _BAKE, None)
    holdout = field(report, fields, (), "holdout", _holdout, None)
    if holdout is not None and fields.get("bake") is None:
        report.add(
            ("holdout",),
            "a holdout is kept on the old side during the bake: set bake too (e.g. bake: 7d)",
        )
        return bake, None
    return bake, holdout


def _holdout(report: Report, path: Path, value: object) -> float | None:
    percent = percentage(report, path, value)
    if percent is not None and not 0 < percent < MAX_HOLDOUT:
        report.add(path, f"a holdout is a percent above 0 and below 50, not {percent:g}")
        return None
    return percent


def check_bake(
    report: Report,
    holdout: float | None,
    steps: Sequence[Step],
    gates: Sequence[tuple[Path, Gate]],
) -> None:
    if holdout is not None and steps and steps[-1].stage is not Stage.FULL:
        report.add(
            ("holdout",),
            f"a holdout is taken from everyone, after a full step: the last step is "
            f"{steps[-1].stage}, so leave holdout out (a bake alone may follow any step)",
        )
    elif holdout is not None and steps and not steps[-1].shadow:
        report.add(
            ("holdout",),
            "the holdout reads the old side, but the last step stops dual-writes "
            "(shadow: false), so the old side would miss every write since: keep dual-writes "
            "on at the last step, or leave holdout out",
        )
    if holdout is not None:
        return
    for path, gate in gates:
        if gate.compare is not None and Stage.FULL in gate.stages:
            report.add(
                (*path, "stages"),
                "a compare gate reads both sides, and at full only a bake's holdout is on "
                "the old side: add bake and holdout to the plan, or leave full out",
            )
