"""What the overview shows of many rollouts: a search on the name (or flag), a status,
labels (``controller.ui.label_filter``) and a page of ``PAGE_SIZE`` rows.

All of it travels in the query string (``/?q=mem&status=paused&label=team=memory
&page=2``), so the plain GET form works without JavaScript, a filtered page can be
shared as its URL, and the page's poller asks for the same rows again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

from controller.read_models import RolloutEntry
from controller.ui import label_filter
from controller.ui.label_filter import LabelFilter
from stages.freezes import labels_match
from stages.state import Status

PAGE_SIZE = 50  # rows a phone still scrolls through and the server renders in a blink
SEARCH_MAX_LENGTH = 200  # longer than any rollout name (63) or flag key (128)
STATUSES = tuple(s.value for s in Status)


@dataclass(frozen=True, slots=True)
class OverviewFilter:
    search: str = ""
    status: str = ""  # "" is every status
    labels: LabelFilter = field(default_factory=lambda: LabelFilter("", ()))
    page: int = 1
    problem: str = ""  # set: nothing is shown but the form and this

    @property
    def narrows(self) -> bool:
        """Whether some rollout could be left out (paging aside)."""
        return bool(self.search or self.status or self.labels.selectors)

    def matches(self, entry: RolloutEntry, *, any_status: bool = False) -> bool:
        needle = self.search.casefold()
        if needle and needle not in entry.name.casefold() and needle not in entry.flag.casefold():
            return False
        if self.status and not any_status and entry.status != self.status:
            return False
        return labels_match(dict(entry.labels), self.labels.selectors)

    def url(
        self,
        *,
        status: str | None = None,
        labels: Sequence[tuple[str, str]] | None = None,
        page: int = 1,
        path: str = "/",
    ) -> str:
        """This filter's overview with a part changed: a new filter starts at page 1."""
        params: list[tuple[str, str]] = []
        if self.search:
            params.append(("q", self.search))
        chosen_status = self.status if status is None else status
        if chosen_status:
            params.append(("status", chosen_status))
        params += LabelFilter.params(self.labels.selectors if labels is None else labels)
        if page > 1:
            params.append(("page", str(page)))
        return path + ("?" + urlencode(params) if params else "")

    def with_label(self, key: str, value: str) -> str:
        return self.url(labels=self.labels.adding(key, value))

    def with_status(self, status: str) -> str:
        return self.url(status=status)

    def at_page(self, page: int) -> str:
        return self.url(page=page)


def chosen(search: str, status: str, labels: Sequence[str], page: str) -> OverviewFilter:
    """The filter the query string asks for; a bad part is named in ``problem``."""
    by_labels = label_filter.chosen(labels)
    text = search.strip()
    wanted = status.strip()
    base = OverviewFilter(text[:SEARCH_MAX_LENGTH], wanted, by_labels)
    if by_labels.problem:
        return _with_problem(base, by_labels.problem)
    if len(text) > SEARCH_MAX_LENGTH:
        return _with_problem(
            base, f"Search: at most {SEARCH_MAX_LENGTH} characters; it has {len(text)}."
        )
    if wanted and wanted not in STATUSES:
        return _with_problem(
            OverviewFilter(base.search, "", by_labels),
            f"Status: {wanted!r} is not a status; one of {', '.join(STATUSES)}.",
        )
    number = page.strip() or "1"
    if not number.isdigit() or int(number) < 1 or len(number) > 9:
        return _with_problem(base, f"Page: {page!r} is not a page number (1, 2, 3, ...).")
    return OverviewFilter(base.search, wanted, by_labels, int(number))


def _with_problem(base: OverviewFilter, problem: str) -> OverviewFilter:
    return OverviewFilter(base.search, base.status, base.labels, 1, problem)


@dataclass(frozen=True, slots=True)
class OverviewSlice:
    """One page of the rollouts a filter matches, and the counts around it."""

    names: tuple[str, ...]  # this page's rollouts, by name
    total: int  # every rollout there is
    matched: int  # those the filter matches
    page: int  # 1-based, within 1..pages
    pages: int  # at least 1, even when nothing matched
    first: int  # the 1-based position of the page's first row (0: an empty page)
    # Per status, of the rollouts search and labels match whatever their status (so the
    # counts say what choosing another status would show), in the statuses' order.
    by_status: tuple[tuple[str, int], ...]

    @property
    def last(self) -> int:
        return self.first + len(self.names) - 1 if self.names else 0


def select(
    entries: Sequence[RolloutEntry], chosen: OverviewFilter, page_size: int = PAGE_SIZE
) -> OverviewSlice:
    """The page ``chosen`` asks for (the last one, past the end: rollouts deleted
    since the link was made should not leave an empty page)."""
    if chosen.problem:
        return OverviewSlice((), len(entries), 0, 1, 1, 0, ())
    any_status = [e for e in entries if chosen.matches(e, any_status=True)]
    matched = [e for e in any_status if not chosen.status or e.status == chosen.status]
    pages = max(1, -(-len(matched) // page_size))
    page = min(chosen.page, pages)
    start = (page - 1) * page_size
    shown = matched[start : start + page_size]
    counts = dict.fromkeys(STATUSES, 0)
    for entry in any_status:
        counts[entry.status] = counts.get(entry.status, 0) + 1
    return OverviewSlice(
        names=tuple(e.name for e in shown),
        total=len(entries),
        matched=len(matched),
        page=page,
        pages=pages,
        first=start + 1 if shown else 0,
        by_status=tuple((s, n) for s, n in counts.items() if n),
    )
