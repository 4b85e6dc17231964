"""Label selectors on rollouts (``team=memory``, repeatable, all must hold): the API's
``?label=``, the CLI's ``--label`` and the UI overview's filter (docs/plans.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from controller.errors import Invalid
from stages.freezes import FreezeInputError, labels_match, parse_term

Selector = tuple[str, str]


def parse_selectors(items: Sequence[str], field: str = "query.label") -> list[Selector]:
    """Each ``label=value``; every bad one is a problem naming ``field``."""
    selectors: list[Selector] = []
    problems: list[dict[str, object]] = []
    for item in items:
        try:
            selectors.append(parse_term(item, field))
        except FreezeInputError as exc:
            problems.append({"field": field, "message": exc.message})
    if problems:
        raise Invalid(f"invalid label filter ({field})", problems)
    return selectors


def view_labels(view: dict[str, Any]) -> dict[str, str]:
    labels = (view.get("plan") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def with_labels(views: Iterable[dict[str, Any]], selectors: Sequence[Selector]) -> list[Any]:
    """The rollout views whose plan labels hold every selector (all of them without any)."""
    return [v for v in views if labels_match(view_labels(v), selectors)]
