"""Freezes and labels in the web UI, in a real headless Chromium against a real ``rollout
serve`` with its scheduler: freeze from the freezes page, see it on every held rollout
(overview row, rollout page banner), unfreeze; filter the overview by labels, also with
JavaScript off."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from tests.e2e.test_ui import LAPTOP, _ends_with, browser, ramp, sign_in  # noqa: F401
from tests.serving import Server, running_server

STEPS = "  - {stage: shadow, hold: 1s}\n  - {stage: canary, percent: 5, hold: 1h}\n"


def labelled(name: str, team: str) -> str:
    return ramp(name, STEPS) + f"labels: {{team: {team}, service: {name}}}\n"


@dataclass
class Stack:
    server: Server
    operator: str
    viewer: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"ROLLOUT_SCHEDULER": "true", "ROLLOUT_SCHEDULER_TICK": "0.25"}
    with (
        running_server(tmp_path_factory.mktemp("freeze-ui"), extra_env=env) as server,
        server.client() as api,
    ):
        for name, team in (("ui-memory", "memory"), ("ui-search", "search")):
            assert api.post("/api/v1/plans", json={"yaml": labelled(name, team)}).is_success
        yield Stack(server, server.token("operator", "alice"), server.token("viewer", "victor"))


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:  # noqa: F811
    context = browser.new_context(viewport=LAPTOP)
    context.set_default_timeout(15_000)
    yield context
    context.close()


def test_freeze_from_the_ui_shows_on_held_rollouts_and_unfreeze_ends_it(
    stack: Stack, context: BrowserContext
) -> None:
    page = sign_in(context, stack, stack.operator, "/ui/freezes")
    expect(page.locator('[data-freezes="none"]')).to_be_visible()
    form = page.locator("#freeze-form")
    form.get_by_label("Reason").fill("INC-123")
    form.get_by_label("Until").fill("2001-01-01T00:00:00Z")
    form.locator('button[data-action="freeze"]').click()
    expect(page.get_by_role("alert")).to_contain_text("until:")
    expect(form.get_by_label("Reason")).to_have_value("INC-123")  # kept for a retry
    expect(page.locator("tr[data-freeze]")).to_have_count(0)

    form.get_by_label("Until").fill("2h")
    form.get_by_label("Scope").fill("team=memory")
    form.locator('button[data-action="freeze"]').click()
    expect(page.locator("#flash")).to_contain_text("frozen: INC-123 until")
    row = page.locator("tr[data-freeze]")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("team=memory")
    expect(row).to_contain_text("ui-memory")

    with stack.server.client() as api:  # started now: its first hold ends while frozen
        assert api.post("/api/v1/rollouts/ui-memory/actions/start", json={}).is_success
    page.goto(stack.server.url + "/")
    held = page.locator('tr[data-rollout="ui-memory"]')
    expect(held.locator(".tag-frozen")).to_have_text("frozen: INC-123")
    expect(page.locator('tr[data-rollout="ui-search"] .tag-frozen')).to_have_count(0)
    held.get_by_role("link", name="ui-memory", exact=True).click()
    banner = page.locator("[data-frozen]")
    expect(banner).to_contain_text("frozen: INC-123 until")
    expect(banner).to_contain_text("by alice")
    # The scheduler holds the ready advance and says so.
    expect(page.locator(".summary .reason")).to_contain_text("ready to advance, but frozen")

    page.goto(stack.server.url + "/ui/freezes")
    page.locator('button[data-action="unfreeze"]').click()
    expect(page.locator("#flash")).to_contain_text("ended")
    page.goto(stack.server.url + "/ui/rollouts/ui-memory")
    expect(page.locator("[data-frozen]")).to_have_count(0)


def test_a_viewer_sees_freezes_but_no_form(stack: Stack, context: BrowserContext) -> None:
    page = sign_in(context, stack, stack.viewer, "/ui/freezes")
    expect(page.get_by_role("heading", name="Active")).to_be_visible()
    expect(page.locator("#freeze-form")).to_have_count(0)


def test_the_label_filter_works_without_javascript(stack: Stack, browser: Browser) -> None:  # noqa: F811
    context = browser.new_context(viewport=LAPTOP, java_script_enabled=False)
    context.set_default_timeout(15_000)
    try:
        page = sign_in(context, stack, stack.operator)
        expect(page.locator("tr[data-rollout]")).to_have_count(2)
        page.get_by_role("textbox", name="Labels").fill("team=memory")
        page.get_by_role("button", name="Filter").click()
        expect(page).to_have_url(_ends_with("/"))
        assert "label=team%3Dmemory" in page.url
        expect(page.locator("tr[data-rollout]")).to_have_count(1)
        expect(page.locator('tr[data-rollout="ui-memory"]')).to_be_visible()
        # A label tag adds itself to the filter: both must hold.
        page.locator('tr[data-rollout="ui-memory"] a[data-label-tag]', has_text="service=").click()
        expect(page.locator("tr[data-rollout]")).to_have_count(1)
        expect(page.get_by_role("textbox", name="Labels")).to_have_value(
            "team=memory, service=ui-memory"
        )
        page.get_by_role("textbox", name="Labels").fill("team")
        page.get_by_role("button", name="Filter").click()
        expect(page.get_by_role("alert")).to_contain_text("is not label=value")
    finally:
        context.close()
