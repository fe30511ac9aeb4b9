"""Browser fixtures: Debian's Chromium driven by Playwright (sync API), and the studio page served
by a real uvicorn server on the tiny random MusicGen.

    browser        session  Chromium, headless; fails when Playwright or /usr/bin/chromium is
                            missing, unless TUNESMITH_BROWSER_TESTS=0 (then the tests skip)
    studio         module   a server with local storage (tests/live_server.py) for this module
    open_page      test     a function(base_url, **context options) -> a fresh page; page errors
                            fail the test
    artifacts      session  the folder for screenshots: $TUNESMITH_ARTIFACTS or test-artifacts/

Playwright never downloads a browser here: it launches /usr/bin/chromium by path.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from live_server import Api, serve
from tunesmith.engine import MusicGenEngine

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
REPO = Path(__file__).resolve().parents[2]


if importlib.util.find_spec("playwright") is None:
    # the test modules import Playwright: without it they are skipped when asked, else refused
    if os.environ.get("TUNESMITH_BROWSER_TESTS") != "0":
        raise ImportError(
            "the browser tests need Playwright for Python (pip install playwright, no browser "
            "download) and /usr/bin/chromium; set TUNESMITH_BROWSER_TESTS=0 to skip them"
        )
    collect_ignore_glob = ["test_*.py"]


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (pip install playwright)"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    missing = _missing()
    if missing is not None:
        if os.environ.get("TUNESMITH_BROWSER_TESTS") == "0":
            pytest.skip(f"{missing}; TUNESMITH_BROWSER_TESTS=0")
        pytest.fail(f"{missing}; set TUNESMITH_BROWSER_TESTS=0 to skip the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, tiny_engine: MusicGenEngine) -> Iterator[Api]:
    with serve(tmp_path_factory.mktemp("studio"), tiny_engine) as api:
        yield api


@pytest.fixture(scope="session")
def artifacts() -> Path:
    folder = Path(os.environ.get("TUNESMITH_ARTIFACTS") or REPO / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Open the page at a base URL in a fresh context (its own localStorage); uncaught page
    errors and console errors fail the test."""
    contexts = []
    problems: list[str] = []

    def open_(base_url: str, **options: Any) -> Page:
        options.setdefault("viewport", {"width": 1280, "height": 900})
        context = browser.new_context(**options)
        context.set_default_timeout(20_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None,
        )
        page.goto(base_url + "/")
        return page

    yield open_
    for context in contexts:
        context.close()
    # A 401/422 the page handles still logs "Failed to load resource" in Chromium's console.
    unexpected = [p for p in problems if "Failed to load resource" not in p]
    assert not unexpected, unexpected
