"""The web UI in a real headless Chromium against a real ``rollout serve``, whose
scheduler reads gates from a real Prometheus scraping a target with live traffic.

Set ``ROLLOUT_UPDATE_SCREENSHOTS=1`` to write the screenshots in ``docs/screenshots``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from controller.demo.prometheus_process import PrometheusProcess
from tests.metrics_target import MetricsTarget
from tests.serving import ROOT, Server, running_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "docs" / "screenshots"
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}

ERROR_RATIO = (
    'sum(rate(memory_operation_total{{status="error",variant="{v}"}}[5s]))'
    ' / sum(rate(memory_operation_total{{variant="{v}"}}[5s]))'
)
P99 = (
    "histogram_quantile(0.99, sum by (le) "
    '(rate(memory_operation_latency_ms_bucket{variant="new"}[5s])))'
)
SAMPLES = 'sum(increase(memory_operation_total{variant="new"}[5s]))'

# The runbook's plan with seconds for days: three quick steps, then a long canary.
MEMORY_LAYER = f"""
rollout: memory-layer
flag: memory-layer
interval: 1s
min_evaluations: 2
steps:
  - {{stage: shadow, hold: 2s}}
  - {{stage: canary, percent: 1, hold: 2s}}
  - {{stage: canary, percent: 2, hold: 2s}}
  - {{stage: canary, percent: 5, hold: 1h}}
  - {{stage: graduated, percent: 25, hold: 1h}}
  - {{stage: regional, regions: [us-west-1], hold: 1h}}
  - {{stage: full, approval: true, hold: 1h}}
  - {{stage: full, shadow: false}}
gates:
  - name: error-rate
    query: '{ERROR_RATIO.format(v="new")}'
    samples: '{SAMPLES}'
    min_samples: 10
    rollback_above: 0.05
    abort_above: 0.2
    for: 3s
  - name: error-rate-vs-baseline
    query: '{ERROR_RATIO.format(v="new")}'
    baseline: '{ERROR_RATIO.format(v="old")}'
    hold_above: 0.01
    rollback_above: 0.03
  - name: p99-latency-ms
    query: '{P99}'
    hold_above: 250
    abort_above: 500
"""


def ramp(name: str, steps: str) -> str:
    """A gate-less plan: it advances on dwell alone."""
    return f"rollout: {name}\nflag: {name}\ninterval: 1s\nsteps:\n{steps}"


SEARCH_RANKING = ramp(
    "search-ranking",
    "  - {stage: shadow, hold: 1h}\n"
    "  - {stage: canary, percent: 10, hold: 1h}\n"
    "  - {stage: full}\n",
)
BILLING_LEDGER = ramp(
    "billing-ledger",
    "  - {stage: shadow, hold: 1s}\n"
    "  - {stage: canary, percent: 5, approval: true, hold: 1h}\n"
    "  - {stage: full}\n",
)
CHECKOUT = ramp("checkout-v2", "  - {stage: canary, percent: 1, hold: 1h}\n  - {stage: full}\n")


@dataclass
class Stack:
    server: Server
    api: httpx.Client
    operator: str
    viewer: str

    def rollout(self, name: str) -> dict[str, Any]:
        return dict(self.api.get(f"/api/v1/rollouts/{name}").json())

    def act(self, name: str, action: str, reason: str) -> None:
        r = self.api.post(f"/api/v1/rollouts/{name}/actions/{action}", json={"reason": reason})
        assert r.status_code == 200, r.text

    def wait(self, name: str, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        view: dict[str, Any] = {}
        while time.monotonic() < deadline:
            view = self.rollout(name)
            if predicate(view):
                return
            time.sleep(0.25)
        raise AssertionError(f"{name}: timed out at {view.get('status')} {view.get('reason')}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("ui")
    with MetricsTarget() as target:
        target.set_traffic(variant="new", requests_per_second=200, error_ratio=0.004)
        target.set_traffic(variant="old", requests_per_second=200, error_ratio=0.003)
        with PrometheusProcess([target.address], scrape_interval="1s", workdir=workdir) as prom:
            prom.wait_for_series('memory_operation_total{variant="new"}', timeout=30)
            env = {
                "ROLLOUT_SCHEDULER": "true",
                "ROLLOUT_SCHEDULER_TICK": "0.25",
                "ROLLOUT_PROMETHEUS_URL": prom.url,
                "ROLLOUT_GATE_TIMEOUT": "2",
            }
            with running_server(workdir, extra_env=env) as server, server.client() as api:
                stack = Stack(server, api, server.token("operator", "alice"), "")
                stack.viewer = server.token("viewer", "victor")
                for plan in (MEMORY_LAYER, SEARCH_RANKING, BILLING_LEDGER, CHECKOUT):
                    assert api.post("/api/v1/plans", json={"yaml": plan}).status_code == 201
                time.sleep(5)  # let the 5 s rate windows fill with traffic first
                for name in ("memory-layer", "search-ranking", "billing-ledger"):
                    stack.act(name, "start", "kick-off, CHG-1234")
                yield stack


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run scripts/install-system-deps"
    with sync_playwright() as playwright:
        browser = _launch(playwright)
        yield browser
        browser.close()


def _launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport=LAPTOP)
    context.set_default_timeout(15_000)
    yield context
    context.close()


def sign_in(context: BrowserContext, stack: Stack, token: str, path: str = "/") -> Page:
    page = context.new_page()
    page.goto(stack.server.url + path)
    expect(page).to_have_url(_ends_with("/ui/signin"))
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    return page


def _ends_with(path: str) -> re.Pattern[str]:
    return re.compile(re.escape(path) + r"(\?.*)?$")


def screenshot(page: Page, name: str, *, full_page: bool = True) -> None:
    if os.environ.get("ROLLOUT_UPDATE_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = str(SCREENSHOTS / name)
    if not full_page:
        page.screenshot(path=path)
        return
    # Long pages are cut at the readings table: the history below adds bytes, not insight.
    height = min(int(page.evaluate("document.documentElement.scrollHeight")), 1900)
    clip = {"x": 0, "y": 0, "width": LAPTOP["width"], "height": height}
    page.screenshot(path=path, full_page=True, clip=clip)  # type: ignore[arg-type]


# --- tests ------------------------------------------------------------------------------


def test_sign_in_sets_an_http_only_cookie_and_shows_running_rollouts(
    stack: Stack, context: BrowserContext
) -> None:
    page = sign_in(context, stack, stack.operator)
    row = page.locator('tr[data-rollout="memory-layer"]')
    expect(row.locator(".badge")).to_have_text("running")
    expect(row.locator(".lights .light")).to_have_count(3)
    expect(page.locator('tr[data-rollout="checkout-v2"] .badge')).to_have_text("pending")
    expect(page.locator(".who-name")).to_contain_text("alice")
    cookie = next(c for c in context.cookies() if c["name"] == "rollout_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # page scripts cannot read the token


def test_signed_out_pages_go_to_sign_in_and_a_bad_token_is_refused(
    stack: Stack, context: BrowserContext
) -> None:
    page = sign_in(context, stack, "not-a-token", "/ui/rollouts/memory-layer")
    expect(page.get_by_role("alert")).to_contain_text("unknown or has been revoked")
    page.get_by_label("API token").fill(stack.operator)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(_ends_with("/ui/rollouts/memory-layer"))
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(_ends_with("/ui/signin"))
    page.goto(stack.server.url + "/ui/flags")
    expect(page.get_by_label("API token")).to_be_visible()


def test_pause_with_a_reason_changes_the_status_and_the_history(
    stack: Stack, context: BrowserContext
) -> None:
    page = sign_in(context, stack, stack.operator, "/ui/rollouts/search-ranking")
    expect(page.locator(".summary .badge")).to_have_text("running")
    actions = page.locator('[data-live="actions"]')
    # A reason is required: the browser will not submit the form without one.
    actions.locator('button[data-action="pause"]').click()
    expect(page.locator(".summary .badge")).to_have_text("running")
    page.get_by_label("Reason").first.fill("p99 looks odd, INC-77")
    actions.locator('button[data-action="pause"]').click()
    expect(page.locator("#flash")).to_contain_text("Done: pause")
    expect(page.locator(".summary .badge")).to_have_text("paused")
    latest = page.locator(".audit-table tbody tr").first
    expect(latest.locator(".action-name")).to_have_text("pause")
    expect(latest).to_contain_text("alice (operator)")
    expect(latest).to_contain_text("p99 looks odd, INC-77")
    assert stack.rollout("search-ranking")["status"] == "paused"
    expect(page.locator(".next")).to_contain_text("paused: waiting for a person")

    # Resume is offered now; a stale page acting on what it saw is refused with why.
    stack.act("search-ranking", "resume", "from the CLI")
    page.get_by_label("Reason").first.fill("resume from a stale page")
    actions.locator('button[data-action="resume"]').click()
    expect(page.get_by_role("alert")).to_contain_text("changed since you loaded it")
    expect(page.get_by_label("Reason").first).to_have_value("resume from a stale page")


def test_viewer_sees_no_actions_and_a_posted_action_is_refused(
    stack: Stack, context: BrowserContext
) -> None:
    page = sign_in(context, stack, stack.viewer, "/ui/rollouts/memory-layer")
    expect(page.locator(".summary .badge")).to_be_visible()
    expect(page.locator('[data-live="actions"]')).to_contain_text("actions need an operator")
    assert page.locator("[data-action]").filter(has=page.locator("button")).count() == 0
    expect(page.locator('button[data-action="abort"]')).to_have_count(0)
    # Post the form anyway, with this session's valid CSRF token taken from the page.
    csrf = page.locator('form[action="/ui/signout"] input[name="csrf"]').input_value()
    page.evaluate(
        """([csrf]) => {
            const form = document.createElement("form");
            form.method = "post";
            form.action = "/ui/rollouts/memory-layer/actions/abort";
            for (const [k, v] of [["csrf", csrf], ["reason", "viewer tries"]]) {
                const input = document.createElement("input");
                input.type = "hidden"; input.name = k; input.value = v;
                form.appendChild(input);
            }
            document.body.appendChild(form);
            form.submit();
        }""",
        [csrf],
    )
    expect(page.locator("h1")).to_have_text("Not allowed")
    expect(page.get_by_role("alert")).to_contain_text("role viewer, which may look but not act")
    assert stack.rollout("memory-layer")["status"] != "aborted"


def test_a_post_without_the_csrf_token_is_refused(stack: Stack, context: BrowserContext) -> None:
    page = sign_in(context, stack, stack.operator)
    expect(page.locator("h1")).to_have_text("Rollouts")
    response = page.request.post(
        stack.server.url + "/ui/rollouts/checkout-v2/actions/abort",
        form={"reason": "forged", "csrf": "0" * 64},
    )
    assert response.status == 403
    assert "security token" in response.text()
    assert stack.rollout("checkout-v2")["status"] == "pending"


def test_force_advance_needs_the_typed_rollout_name(stack: Stack, context: BrowserContext) -> None:
    page = sign_in(context, stack, stack.operator, "/ui/rollouts/checkout-v2")
    page.get_by_label("Reason").first.fill("start it")
    page.locator('button[data-action="start"]').click()
    expect(page.locator(".summary .badge")).to_have_text("running")
    page.get_by_text("Force an advance past breached gates").click()
    force = page.locator("details.force")
    force.get_by_label("Reason").fill("override for the test")
    force.get_by_label("to confirm").fill("checkout")
    force.get_by_role("button", name="Force advance").click()
    expect(page.get_by_role("alert")).to_contain_text("type the rollout name (checkout-v2)")
    assert stack.rollout("checkout-v2")["step"] == 0
    force = page.locator("details.force")
    force.get_by_label("Reason").fill("override for the test")
    force.get_by_label("to confirm").fill("checkout-v2")
    force.get_by_role("button", name="Force advance").click()
    expect(page.locator("#flash")).to_contain_text("Done: advance")
    assert stack.rollout("checkout-v2")["step"] == 1


def test_gate_charts_are_drawn_from_real_readings(stack: Stack, context: BrowserContext) -> None:
    stack.wait("memory-layer", lambda r: r["step"] >= 3, timeout=90)
    time.sleep(3)  # a few readings at the canary 5 % step as well
    page = sign_in(context, stack, stack.operator, "/ui/rollouts/memory-layer")
    chart = page.locator('svg.gate-chart[data-gate="p99-latency-ms"]')
    expect(chart).to_be_visible()
    assert chart.locator("g.point").count() >= 5
    assert chart.locator("path.value-line").get_attribute("d", timeout=1000).startswith("M")
    expect(chart.locator('g.threshold[data-threshold="hold_above"] line')).to_have_count(1)
    # The abort level is far above the values: named at the top edge, not drawn there.
    expect(chart.locator('g.threshold[data-threshold="abort_above"]')).to_contain_text("500")
    ok_points = chart.locator('g.point[data-outcome="ok"] circle')
    assert ok_points.count() >= 5
    relative = page.locator('svg.gate-chart[data-gate="error-rate-vs-baseline"]')
    expect(relative.locator("g.threshold")).to_have_count(2)

    percent = page.locator("svg.percent-chart")
    assert percent.locator("path.step-line").get_attribute("d", timeout=1000).count("V") >= 4
    expect(percent.locator('g.transition[data-action="advance"]')).to_have_count(3)
    expect(page.locator('.step-list li[aria-current="step"]')).to_contain_text("canary 5%")
    readings = page.locator(".readings tbody tr")
    expect(readings).to_have_count(3)
    expect(page.locator('.readings tr[data-gate="error-rate"]')).to_contain_text("variant=")
    expect(page.locator(".next")).to_contain_text("will advance to graduated 25% in")
    screenshot(page, "rollout.png")
    page.goto(stack.server.url + "/")
    expect(page.locator('tr[data-rollout="billing-ledger"] .badge')).to_have_text(
        "awaiting approval"
    )
    screenshot(page, "overview.png")


def test_updates_itself_without_losing_a_half_typed_reason(
    stack: Stack, context: BrowserContext
) -> None:
    page = sign_in(context, stack, stack.operator, "/ui/rollouts/search-ranking")
    if stack.rollout("search-ranking")["status"] != "running":
        stack.act("search-ranking", "resume", "back on for the live test")
        page.reload()
    expect(page.locator(".summary .badge")).to_have_text("running")
    page.get_by_label("Reason").first.fill("half-typed")
    page.locator("h1").click()  # focus elsewhere: the typed text alone must keep the form
    stack.act("search-ranking", "pause", "paused elsewhere")
    expect(page.locator(".summary .badge")).to_have_text("paused", timeout=10_000)
    expect(page.locator(".audit-table tbody tr").first).to_contain_text("paused elsewhere")
    expect(page.get_by_label("Reason").first).to_have_value("half-typed")
    expect(page.locator("[data-freshness]")).to_contain_text("updated")


def test_flags_page_evaluates_and_counts(stack: Stack, context: BrowserContext) -> None:
    for key in ("u-1", "u-2", "u-3"):
        r = stack.api.get("/api/v1/evaluate/memory-layer", params={"targetingKey": key})
        assert r.status_code == 200
    page = sign_in(context, stack, stack.viewer, "/ui/flags")
    row = page.locator('tr[data-flag="memory-layer"]')
    expect(page.locator("thead")).to_contain_text("since this process started")
    expect(row).to_contain_text("rollout memory-layer")
    counted = row.locator('[data-label="Evaluations"]').inner_text()
    assert sum(int(n) for n in counted.split() if n.isdigit()) >= 3
    page.get_by_label("Flag", exact=True).select_option("memory-layer")
    page.get_by_label("Pseudonym").fill("3f9a2c")
    page.get_by_label("Attributes").fill("region=eu-west-1")
    page.get_by_role("button", name="Evaluate").click()
    result = page.locator("[data-eval-result]")
    expect(result.locator(".eval-reason")).to_have_text("SPLIT")
    expect(result).to_contain_text("memory-layer: running")
    expect(page.get_by_role("heading", name="Kill switch")).to_have_count(0)  # viewer


def test_phone_width_has_no_sideways_scrolling(stack: Stack, browser: Browser) -> None:
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    try:
        page = sign_in(context, stack, stack.operator)
        expect(page.locator('tr[data-rollout="memory-layer"]')).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        screenshot(page, "overview-phone.png", full_page=False)
        page.goto(stack.server.url + "/ui/rollouts/memory-layer")
        expect(page.locator("svg.percent-chart")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        screenshot(page, "rollout-phone.png", full_page=False)
    finally:
        context.close()


def test_every_control_is_reachable_with_the_keyboard(
    stack: Stack, context: BrowserContext
) -> None:
    page = sign_in(context, stack, stack.operator, "/ui/rollouts/memory-layer")
    expect(page.locator(".summary .badge")).to_be_visible()
    reached: set[str] = set()
    for _ in range(40):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.getAttribute('data-action') || ''"))
        reached.add(page.evaluate("document.activeElement.id || ''"))
    assert {"reason", "pause", "abort", "rollback-immediate"} <= reached


def test_the_plan_history_shows_each_revision_with_its_changes(
    stack: Stack, context: BrowserContext
) -> None:
    wider = CHECKOUT.replace("hold: 1h}", "hold: 2h}")
    applied = stack.api.post("/api/v1/plans", json={"yaml": wider, "reason": "CHG-2 longer hold"})
    assert applied.status_code == 200 and applied.json()["revision"] == 2, applied.text
    page = sign_in(context, stack, stack.viewer, "/ui/rollouts/checkout-v2")
    rows = page.locator(".plan-table tbody tr")
    expect(rows).to_have_count(2)
    newest = rows.first
    expect(newest.locator("td").first).to_have_text("2")
    expect(newest).to_contain_text("CHG-2 longer hold")
    expect(newest.locator(".plan-changes li")).to_have_text(["step 1 (canary 1%): hold 1h -> 2h"])
    expect(rows.nth(1)).to_contain_text("created: 2 steps, 0 gates")
