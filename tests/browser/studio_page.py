"""What the studio page's browser tests share: waiting for the server, measuring the layout."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

# every element reaching past the viewport's right edge, and how wide the page scrolls
_OVERFLOW = """() => {
    const wide = [...document.querySelectorAll("body *")].filter((el) => {
        const box = el.getBoundingClientRect();
        return box.width > 0 && box.right > window.innerWidth + 0.5;
    }).map((el) => el.id || el.className || el.tagName);
    return { scroll: document.documentElement.scrollWidth, inner: window.innerWidth, wide };
}"""


def wait_ready(page: Page) -> None:
    expect(page.locator("#server-status")).to_have_attribute("data-state", "ok")


def overflow(page: Page) -> dict[str, Any]:
    """``scroll`` (the page's scroll width), ``inner`` (the viewport's) and ``wide`` (the
    elements past its right edge)."""
    measured: dict[str, Any] = page.evaluate(_OVERFLOW)
    return measured
