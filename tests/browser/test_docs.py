"""The API docs (/docs: Swagger UI, /redoc: ReDoc) render in Chromium with no network beyond
the server: their scripts and styles come from the server itself. Both the API's app and the
SageMaker container's serve them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from live_server import Api, LiveServer
from tunesmith.aws.endpoint import create_endpoint_app
from tunesmith.config import load_settings
from tunesmith.engine import MusicGenEngine

REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@dataclass
class Offline:
    """A page whose requests reach 127.0.0.1 only; the others are aborted and remembered."""

    page: Page
    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def offline(browser: Browser) -> Iterator[Offline]:
    context = browser.new_context()
    context.set_default_timeout(20_000)
    seen = Offline(context.new_page())

    def only_loopback(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            seen.blocked.append(route.request.url)
            route.abort("internetdisconnected")

    context.route("**/*", only_loopback)
    seen.page.on("pageerror", lambda exc: seen.errors.append(str(exc)))
    yield seen
    context.close()


@pytest.fixture(scope="module")
def endpoint(
    tmp_path_factory: pytest.TempPathFactory, tiny_engine: MusicGenEngine
) -> Iterator[str]:
    """The SageMaker container's app (``tunesmith endpoint``) on a real server."""
    root: Path = tmp_path_factory.mktemp("endpoint")
    settings = load_settings(model=tiny_engine.model_name, local_dir=root)
    with LiveServer(create_endpoint_app(settings, engine=tiny_engine)) as server:
        yield server.base_url


@dataclass(frozen=True)
class Served:
    base_url: str
    operation: str  # a path its OpenAPI document has


@pytest.fixture(params=["api", "endpoint"])
def served(request: pytest.FixtureRequest) -> Served:
    if request.param == "api":
        studio: Api = request.getfixturevalue("studio")
        return Served(studio.base_url, "/generate")
    return Served(str(request.getfixturevalue("endpoint")), "/invocations")


def test_swagger_ui_lists_the_operations_offline(offline: Offline, served: Served) -> None:
    page = offline.page
    page.goto(served.base_url + "/docs")
    paths = page.locator(".opblock-summary-path")
    expect(paths.first).to_be_visible()
    assert served.operation in paths.all_inner_texts()
    assert offline.blocked == [] and offline.errors == []


def test_redoc_shows_the_api_title_offline(offline: Offline, served: Served) -> None:
    page = offline.page
    page.goto(served.base_url + "/redoc")
    expect(page.locator("h1").first).to_contain_text("tunesmith")
    expect(page.locator(".operation-type").first).to_be_visible()
    # ReDoc's "API docs by Redocly" logo is always fetched from its CDN, and hidden when it
    # cannot be: the only request allowed to fail
    assert set(offline.blocked) <= {REDOCLY_LOGO} and offline.errors == []
