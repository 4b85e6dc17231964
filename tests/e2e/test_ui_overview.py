"""The overview with many rollouts, in a real headless Chromium against a real ``rollout
serve``: each row says why a rollout stopped or holds (the recorded reason, the gate
behind it, who and when) and which gates apply when none does at its step; search,
status and label filters narrow 505 rollouts page by page, with and without
JavaScript; and times show in the viewer's zone (Asia/Kolkata here) with UTC on hover.
Every page is checked at 1280 and 375 px wide.

The server runs no scheduler: gate decisions are made by the core's own ``decide`` on
readings the test chooses and recorded through ``Rollouts.record_decision``, the path
the scheduler's tick takes, so a rollback needs no Prometheus and no waiting. The 500
ramp rollouts are applied through the ``Rollouts`` use case on the server's database
(the API answers each apply after rebuilding the evaluation snapshot: minutes for 500).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from controller.rollouts import Rollouts, parse_plan_input
from controller.storage.mapping import state_from_row
from controller.storage.store import Store
from controller.storage.tables import RolloutRow
from stages.actions import Action
from stages.decide import decide
from stages.decisions import Decision, Hold, Pause, RollBack
from stages.state import GateReading, Outcome
from tests.e2e.test_ui import LAPTOP, _ends_with, browser, sign_in  # noqa: F401
from tests.serving import Server, plan_yaml, running_server

ZONE = "Asia/Kolkata"  # +05:30: a conversion that forgets the half hour shows
NARROW = {"width": 375, "height": 812}
WIDTHS = {"laptop": LAPTOP, "phone": NARROW}
MANY = 500
TEAMS = ("memory", "search")
DASH = "\N{EN DASH}"  # between the first and last row shown
PAGE = 50  # controller.ui.overview_filter.PAGE_SIZE, as a person counts the rows

GATED = """
rollout: {name}
flag: {name}
interval: 1m
max_gate_errors: 1
steps:
  - {{stage: shadow, hold: 1h}}
  - {{stage: canary, percent: 1, hold: 1h}}
  - {{stage: graduated, percent: 25, hold: 1h}}
  - {{stage: full}}
gates:
  - name: error-rate
    query: 'sum(rate(errors_total{{variant="new"}}[5m]))'
    abort_above: 0.2
    stages: [canary, graduated]
  - name: p99-latency-ms
    query: 'histogram_quantile(0.99, sum by (le) (rate(latency_bucket[5m])))'
    hold_above: 250
    stages: [canary, graduated]
"""


def team_of(i: int) -> str:
    return TEAMS[i // 10 % 2]


def started(i: int) -> bool:
    return i % 3 == 0


@dataclass
class Stack:
    server: Server
    store: Store
    rollouts: Rollouts
    operator: str

    def act(self, name: str, action: Action, reason: str, actor: str = "test") -> None:
        self.rollouts.act(name, action, actor=actor, now=self.store.now(), reason=reason)

    def tick(self, name: str, readings: Callable[[datetime], list[GateReading]]) -> Decision:
        """One scheduler tick on chosen readings: the core decides, the shell records."""
        now = self.store.now()
        with self.store.read() as session:
            row = session.get(RolloutRow, name)
            assert row is not None
            state, row_version = state_from_row(row), row.row_version
        read = readings(now)
        decision = decide(state, read, now)
        self.rollouts.record_decision(name, row_version, decision, read, now)
        return decision


def reading(gate: str, outcome: Outcome, at: datetime, **fields: object) -> GateReading:
    return GateReading(gate=gate, outcome=outcome, at=at, query=f"{gate} query", **fields)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_server(tmp_path_factory.mktemp("overview")) as server:
        store = Store(server.database_url)
        rollouts = Rollouts(store, lambda: None)
        for i in range(MANY):
            labels = f"labels: {{team: {team_of(i)}}}\n"
            plan, source = parse_plan_input(plan_yaml(f"svc-{i:03d}") + labels, None)
            rollouts.apply(plan, source, "test", store.now())
        for name in ("gated-shadow", "gated-abort", "gated-broken", "gated-held", "gated-person"):
            plan, source = parse_plan_input(GATED.format(name=name), None)
            rollouts.apply(plan, source, "test", store.now())
        stack = Stack(server, store, rollouts, server.token("operator", "alice"))
        for i in range(MANY):
            if started(i):
                stack.act(f"svc-{i:03d}", Action.START, "kick-off")
        _gate_stories(stack)
        try:
            yield stack
        finally:
            store.dispose()


def _gate_stories(stack: Stack) -> None:
    for name in ("gated-shadow", "gated-abort", "gated-broken", "gated-held", "gated-person"):
        stack.act(name, Action.START, "kick-off, CHG-1")
    for name in ("gated-abort", "gated-broken", "gated-held", "gated-person"):
        stack.act(name, Action.ADVANCE, "into canary for the test")
    aborted = stack.tick(
        "gated-abort",
        lambda now: [
            reading(
                "error-rate",
                Outcome.ABORT,
                now,
                value=0.31,
                threshold="abort_above",
                threshold_value=0.2,
            ),
            reading("p99-latency-ms", Outcome.OK, now, value=120.0),
        ],
    )
    assert isinstance(aborted, RollBack), aborted
    broken = stack.tick(
        "gated-broken",
        lambda now: [
            reading("error-rate", Outcome.OK, now, value=0.01),
            reading("p99-latency-ms", Outcome.ERROR, now, error="connection refused"),
        ],
    )
    assert isinstance(broken, Pause), broken
    held = stack.tick(
        "gated-held",
        lambda now: [
            reading("error-rate", Outcome.OK, now, value=0.01),
            reading(
                "p99-latency-ms",
                Outcome.HOLD,
                now,
                value=312.0,
                threshold="hold_above",
                threshold_value=250,
            ),
        ],
    )
    assert isinstance(held, Hold), held
    stack.act("gated-person", Action.PAUSE, "p99 looks odd, INC-77", actor="alice (operator)")


@pytest.fixture(params=sorted(WIDTHS))
def context(request: pytest.FixtureRequest, browser: Browser) -> Iterator[BrowserContext]:  # noqa: F811
    context = browser.new_context(viewport=WIDTHS[request.param], timezone_id=ZONE)
    context.set_default_timeout(15_000)
    yield context
    context.close()


def no_sideways_scrolling(page: Page) -> None:
    width = page.viewport_size["width"] if page.viewport_size else 0
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def rows(page: Page) -> list[str]:
    return [
        str(n)
        for n in page.locator("tr[data-rollout]").evaluate_all(
            "rows => rows.map(r => r.getAttribute('data-rollout'))"
        )
    ]


# --- item 1: the row says why ----------------------------------------------------------


def test_a_stopped_rollout_shows_its_reason_its_gate_and_who(
    stack: Stack, context: BrowserContext
) -> None:
    page = sign_in(context, stack, stack.operator, "/?q=gated")
    expect(page.locator("tr[data-rollout]")).to_have_count(5)

    abort = page.locator('tr[data-rollout="gated-abort"]')
    expect(abort.locator(".badge")).to_have_text("rolled back")
    expect(abort.locator("[data-cause-gates]")).to_have_text("error-rate")
    expect(abort.locator("[data-cause-reason]")).to_contain_text(
        "abort: error-rate: 0.31 > abort_above 0.2"
    )
    expect(abort.locator("[data-cause-actor]")).to_have_text("rollback by controller")

    broken = page.locator('tr[data-rollout="gated-broken"]')
    expect(broken.locator(".badge")).to_have_text("paused")
    expect(broken.locator("[data-cause-gates]")).to_have_text("p99-latency-ms")
    expect(broken.locator("[data-cause-reason]")).to_contain_text(
        "gate source unavailable: p99-latency-ms: error: connection refused"
    )

    person = page.locator('tr[data-rollout="gated-person"]')
    expect(person.locator("[data-cause-reason]")).to_have_text("p99 looks odd, INC-77")
    expect(person.locator("[data-cause-gates]")).to_have_count(0)  # no gate: a person
    expect(person.locator("[data-cause-actor]")).to_have_text("pause by alice (operator)")

    # A hold is said once, where the row says what comes next.
    held = page.locator('tr[data-rollout="gated-held"]')
    expect(held.locator(".forecast")).to_have_text("holding: p99-latency-ms: 312 > hold_above 250")
    expect(held.locator(".light-hold")).to_contain_text("p99-latency-ms")
    no_sideways_scrolling(page)


def test_a_step_without_gates_says_which_apply_and_when(
    stack: Stack, context: BrowserContext
) -> None:
    page = sign_in(context, stack, stack.operator, "/?q=gated-shadow")
    row = page.locator('tr[data-rollout="gated-shadow"]')
    expect(row.locator(".badge")).to_have_text("running")
    expect(row.locator("[data-gates-later]")).to_have_text(
        "no gates at this step; gates from step 2 (canary 1%): error-rate, p99-latency-ms"
    )
    expect(row).not_to_contain_text("timed ramp")
    no_sideways_scrolling(page)
    # Only a plan without any gate is a timed ramp; the rollout page says the same.
    page.goto(stack.server.url + "/?q=svc-000")
    expect(page.locator('tr[data-rollout="svc-000"] [data-label="Gates"]')).to_have_text(
        "no gates (timed ramp)"
    )
    page.goto(stack.server.url + "/ui/rollouts/gated-shadow")
    expect(page.locator(".gates-now [data-gates-later]")).to_contain_text(
        "gates from step 2 (canary 1%)"
    )
    no_sideways_scrolling(page)


# --- item 12: search, filter, pages --------------------------------------------------


def expected(search: str = "", status: str = "", team: str = "") -> list[str]:
    """What the fixture made that the filter should show, by name."""
    names = []
    for i in range(MANY):
        name = f"svc-{i:03d}"
        if search and search not in name:
            continue
        if status and status != ("running" if started(i) else "pending"):
            continue
        if team and team != team_of(i):
            continue
        names.append(name)
    return names


def test_search_status_and_labels_narrow_without_javascript(
    stack: Stack,
    browser: Browser,  # noqa: F811
) -> None:
    for viewport in WIDTHS.values():
        context = browser.new_context(viewport=viewport, java_script_enabled=False)
        context.set_default_timeout(15_000)
        try:
            page = sign_in(context, stack, stack.operator)
            total = MANY + 5
            expect(page.locator("[data-showing]")).to_have_text(
                f"Showing 1{DASH}{PAGE} of {total} rollouts"
            )
            assert (
                rows(page)
                == sorted(
                    [
                        *expected(),
                        *(f"gated-{n}" for n in ("abort", "broken", "held", "person", "shadow")),
                    ]
                )[:PAGE]
            )
            no_sideways_scrolling(page)

            page.get_by_role("searchbox", name="Search").fill("svc-1")
            page.get_by_role("combobox", name="Status").select_option("running")
            page.get_by_role("textbox", name="Labels").fill("team=memory")
            page.get_by_role("button", name="Filter").click()
            expect(page).to_have_url(_ends_with("/"))
            assert "q=svc-1" in page.url and "status=running" in page.url
            assert "label=team%3Dmemory" in page.url
            want = expected("svc-1", "running", "memory")
            assert 0 < len(want) < PAGE
            expect(page.locator("tr[data-rollout]")).to_have_count(len(want))
            assert rows(page) == want
            expect(page.locator("[data-showing]")).to_have_text(
                f"Showing 1{DASH}{len(want)} of {len(want)} matching rollouts ({total} in all)"
            )
            # The counts are of the same search whatever the status: a link to each.
            pending = page.locator('a[data-status-count="pending"]')
            expect(pending).to_have_text(f"{len(expected('svc-1', 'pending', 'memory'))} pending")
            pending.click()
            assert "status=pending" in page.url and "q=svc-1" in page.url
            expect(page.locator("tr[data-rollout]")).to_have_count(
                len(expected("svc-1", "pending", "memory"))
            )
            no_sideways_scrolling(page)

            page.goto(stack.server.url + "/?status=sleeping")
            expect(page.get_by_role("alert")).to_contain_text("'sleeping' is not a status")
        finally:
            context.close()


def test_pages_of_fifty_with_a_count_and_the_filter_kept(
    stack: Stack, context: BrowserContext
) -> None:
    page = sign_in(context, stack, stack.operator, "/?label=team=search")
    want = expected(team="search")
    pages = -(-len(want) // PAGE)
    expect(page.locator("[data-showing]")).to_have_text(
        f"Showing 1{DASH}{PAGE} of {len(want)} matching rollouts ({MANY + 5} in all)"
    )
    expect(page.locator("[data-pager]")).to_contain_text(f"page 1 of {pages}")
    page.get_by_role("link", name="Next →").click()
    expect(page.locator("[data-showing]")).to_have_text(
        f"Showing {PAGE + 1}{DASH}{2 * PAGE} of {len(want)} matching rollouts ({MANY + 5} in all)"
    )
    assert "page=2" in page.url and "label=team%3Dsearch" in page.url
    assert rows(page) == want[PAGE : 2 * PAGE]
    page.goto(stack.server.url + f"/?label=team=search&page={pages}")
    assert rows(page) == want[(pages - 1) * PAGE :]
    expect(page.get_by_role("link", name="Next →")).to_have_count(0)
    no_sideways_scrolling(page)


def test_filtering_as_you_type_and_live_updates_keep_the_filter(
    stack: Stack, context: BrowserContext
) -> None:
    page = sign_in(context, stack, stack.operator)
    expect(page.locator("tr[data-rollout]")).to_have_count(PAGE)
    page.get_by_role("searchbox", name="Search").press_sequentially("svc-04")
    want = expected("svc-04")
    expect(page.locator("tr[data-rollout]")).to_have_count(len(want))
    expect(page).to_have_url(re.compile(r"/\?q=svc-04$"))
    assert rows(page) == want
    # A change made elsewhere arrives through the poller, still filtered.
    target = next(
        n for n in want if stack.rollouts.get(n, stack.store.now())["status"] == "running"
    )
    stack.act(target, Action.PAUSE, "paused elsewhere")
    expect(page.locator(f'tr[data-rollout="{target}"] .badge')).to_have_text(
        "paused", timeout=10_000
    )
    expect(page.locator("tr[data-rollout]")).to_have_count(len(want))
    expect(page.locator("[data-freshness]")).to_contain_text("updated")
    stack.act(target, Action.RESUME, "back for the next test")


# --- item 12: times in the viewer's zone ---------------------------------------------


UTC_TEXT = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC$")


def check_times(page: Page, at_least: int) -> None:
    """Each <time> shows its UTC instant in Asia/Kolkata, with the UTC text on hover."""
    times = page.locator("time[data-utc]")
    expect(times.first).to_have_attribute("data-local", "")
    found = times.evaluate_all(
        "ts => ts.map(t => [t.getAttribute('datetime'), t.getAttribute('title'), t.textContent])"
    )
    assert len(found) >= at_least
    for iso, title, text in found:
        instant = datetime.fromisoformat(iso.replace("Z", "+00:00"))
        assert title == f"{instant:%Y-%m-%d %H:%M:%S} UTC"
        local = instant.astimezone(ZoneInfo(ZONE))
        assert text == f"{local:%Y-%m-%d %H:%M:%S} GMT+5:30", (iso, text)


def test_times_show_in_the_viewers_zone_with_utc_on_hover(
    stack: Stack, context: BrowserContext
) -> None:
    page = sign_in(context, stack, stack.operator, "/?q=gated")
    check_times(page, at_least=3)  # the three transitions of the stopped rollouts
    no_sideways_scrolling(page)
    page.goto(stack.server.url + "/ui/rollouts/gated-abort")
    check_times(page, at_least=6)  # created, readings, plan revision, audit events
    expect(page.locator(".audit-table time").first).not_to_contain_text("UTC")
    no_sideways_scrolling(page)
    with stack.server.client() as api:
        made = api.post(
            "/api/v1/freezes",
            json={"reason": "INC-9 times", "until": "2h", "scope": ["rollout=svc-499"]},
        )
        assert made.status_code == 201, made.text
    try:
        page.goto(stack.server.url + "/ui/freezes")
        check_times(page, at_least=1)
        no_sideways_scrolling(page)
    finally:
        with stack.server.client() as api:
            assert api.delete(f"/api/v1/freezes/{made.json()['id']}").is_success
