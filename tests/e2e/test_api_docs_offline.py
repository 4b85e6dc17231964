"""``/docs`` and ``/redoc`` render in a real headless Chromium with no network beyond
the controller itself: every request to another host is refused and recorded, and the
pages must render all the same."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Route, expect, sync_playwright

from tests.e2e.test_ui import CHROMIUM, CHROMIUM_ARGS, LAPTOP
from tests.serving import Server, running_server

# ReDoc's side-menu badge: its script asks the CDN for it and drops the image when that
# fails (onError), so offline the badge is simply not there.
REDOC_BADGE = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("docs-offline")) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def offline(browser: Browser, server: Server) -> Iterator[tuple[BrowserContext, list[str]]]:
    """A browser context that can reach the controller only; the refused URLs."""
    allowed = urllib.parse.urlsplit(server.url).netloc
    refused: list[str] = []

    def only_the_controller(route: Route) -> None:
        url = route.request.url
        if urllib.parse.urlsplit(url).netloc == allowed:
            route.continue_()
        else:
            refused.append(url)
            route.abort("internetdisconnected")

    context = browser.new_context(viewport=LAPTOP)
    context.route("**/*", only_the_controller)
    yield context, refused
    context.close()


def test_swagger_ui_renders_every_operation_from_the_app_alone(
    offline: tuple[BrowserContext, list[str]],
    server: Server,
) -> None:
    context, refused = offline
    page = context.new_page()

    page.goto(f"{server.url}/docs")

    expect(page.locator(".swagger-ui .info .title")).to_contain_text("rollout-controller")
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/rollouts").first).to_be_visible()
    assert page.locator(".opblock").count() > 20
    # The Authorize button is there (the bearer scheme of /openapi.json).
    expect(page.locator("button.authorize")).to_be_visible()
    assert refused == []


def test_redoc_renders_the_reference_from_the_app_alone(
    offline: tuple[BrowserContext, list[str]], server: Server
) -> None:
    context, refused = offline
    page = context.new_page()

    page.goto(f"{server.url}/redoc")

    expect(page.locator("h1", has_text="rollout-controller")).to_be_visible(timeout=20_000)
    expect(page.get_by_text("/api/v1/rollouts/{name}").first).to_be_attached()
    expect(page.locator('img[alt="redocly logo"]')).to_have_count(0)
    assert [url for url in refused if url != REDOC_BADGE] == []
