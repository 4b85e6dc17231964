"""The overview's search, status and label filter and its pages: what a query string
chooses, what a page holds, and the counts and links around it."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from controller.read_models import RolloutEntry
from controller.ui.overview_filter import PAGE_SIZE, OverviewFilter, chosen, select


def entry(
    name: str, status: str = "running", flag: str | None = None, **labels: str
) -> RolloutEntry:
    return RolloutEntry(name, flag or name, status, labels)


# 500 rollouts as a big installation has them: every 5th paused, teams by the tens.
MANY = [
    entry(
        f"svc-{i:03d}",
        "paused" if i % 5 == 0 else "running",
        team="memory" if i // 10 % 2 == 0 else "search",
    )
    for i in range(500)
]


def query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query)


def test_no_filter_shows_the_first_page_of_everything_with_counts() -> None:
    shown = select(MANY, chosen("", "", [], ""))
    assert shown.names == tuple(f"svc-{i:03d}" for i in range(PAGE_SIZE))
    assert (shown.total, shown.matched, shown.page, shown.pages) == (500, 500, 1, 10)
    assert (shown.first, shown.last) == (1, 50)
    assert dict(shown.by_status) == {"running": 400, "paused": 100}


def test_a_later_page_and_a_page_past_the_end() -> None:
    third = select(MANY, chosen("", "", [], "3"))
    assert (third.first, third.last, third.names[0]) == (101, 150, "svc-100")
    past = select(MANY, chosen("", "", [], "99"))  # rollouts deleted since the link
    assert (past.page, past.first, past.last) == (10, 451, 500)


def test_search_status_and_labels_all_narrow_and_counts_ignore_only_the_status() -> None:
    flt = chosen(" SVC-1 ", "paused", ["team=memory"], "")
    shown = select(MANY, flt)
    expected = [
        e.name
        for e in MANY
        if "svc-1" in e.name and e.status == "paused" and e.labels["team"] == "memory"
    ]
    assert list(shown.names) == expected and shown.matched == len(expected) == 10
    assert shown.total == 500 and shown.pages == 1
    # The counts say what choosing another status would show with the same search.
    same_search = [e for e in MANY if "svc-1" in e.name and e.labels["team"] == "memory"]
    assert dict(shown.by_status) == {
        "running": sum(e.status == "running" for e in same_search),
        "paused": sum(e.status == "paused" for e in same_search),
    }


def test_search_matches_the_flag_key_too_and_no_match_is_an_empty_first_page() -> None:
    entries = [entry("checkout", flag="payments-v2"), entry("search")]
    assert select(entries, chosen("PAYMENTS", "", [], "")).names == ("checkout",)
    none = select(entries, chosen("nothing", "", [], ""))
    assert (none.names, none.matched, none.pages, none.first, none.last) == ((), 0, 1, 0, 0)


@pytest.mark.parametrize(
    ("q", "status", "labels", "page", "problem"),
    [
        ("", "sleeping", [], "", "Status: 'sleeping' is not a status"),
        ("", "", ["team"], "", "is not label=value"),
        ("", "", [], "0", "Page: '0' is not a page number"),
        ("", "", [], "two", "Page: 'two' is not a page number"),
        ("", "", [], "-1", "Page: '-1' is not a page number"),
        ("x" * 201, "", [], "", "Search: at most 200 characters; it has 201"),
    ],
)
def test_a_bad_part_is_named_and_shows_nothing(
    q: str, status: str, labels: list[str], page: str, problem: str
) -> None:
    flt = chosen(q, status, labels, page)
    assert problem in flt.problem
    shown = select(MANY, flt)
    assert shown.names == () and shown.total == 500


def test_links_keep_the_rest_of_the_filter_and_start_again_at_page_one() -> None:
    flt = chosen("svc", "paused", ["team=memory"], "2")
    assert query(flt.at_page(3)) == [
        ("q", "svc"),
        ("status", "paused"),
        ("label", "team=memory"),
        ("page", "3"),
    ]
    assert query(flt.with_status("running")) == [
        ("q", "svc"),
        ("status", "running"),
        ("label", "team=memory"),
    ]
    assert query(flt.with_label("team", "search")) == [
        ("q", "svc"),
        ("status", "paused"),
        ("label", "team=search"),  # one value per label: the new one replaces it
    ]
    assert query(flt.with_label("env", "prod"))[-1] == ("label", "env=prod")
    assert flt.url(page=2, path="/ui/live/overview").startswith("/ui/live/overview?q=svc&")
    assert OverviewFilter().url() == "/" and not OverviewFilter().narrows


def test_a_link_round_trips_to_the_same_filter() -> None:
    flt = chosen("mem ory", "rolled_back", ["team=memory", "env=prod"], "4")
    again = dict[str, list[str]]()
    for key, value in query(flt.at_page(4)):
        again.setdefault(key, []).append(value)
    back = chosen(again["q"][0], again["status"][0], again["label"], again.get("page", [""])[0])
    assert back == flt
