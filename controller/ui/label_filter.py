"""The overview's label filter: ``?label=team=memory`` (repeatable, or comma-separated
in one field, as the plain form sends it), every one must hold. A plain GET form, so
it works without JavaScript, and a filtered page's poller keeps the filter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from stages.freezes import FreezeInputError, parse_term


@dataclass(frozen=True, slots=True)
class LabelFilter:
    text: str  # what the field shows again
    selectors: tuple[tuple[str, str], ...]
    problem: str = ""

    def link(self, key: str, value: str) -> str:
        """The overview filtered by this label as well."""
        return "/?" + urlencode(self.params(self.adding(key, value)))

    def adding(self, key: str, value: str) -> tuple[tuple[str, str], ...]:
        """These selectors and ``key=value`` (which replaces another value of ``key``)."""
        terms = dict(self.selectors)
        terms[key] = value
        return tuple(terms.items())

    @staticmethod
    def params(selectors: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The query parameters that choose ``selectors`` again: one ``label`` each."""
        return [("label", f"{k}={v}") for k, v in selectors]


def chosen(raw: Sequence[str]) -> LabelFilter:
    items = [part.strip() for value in raw for part in value.split(",") if part.strip()]
    text = ", ".join(items)
    try:
        selectors = tuple(dict.fromkeys(parse_term(item, "label") for item in items))
    except FreezeInputError as exc:
        return LabelFilter(text, (), f"Label filter: {exc.message}.")
    return LabelFilter(text, selectors)
