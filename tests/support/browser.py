"""A real headless Chromium (Debian's `chromium`, driven by Playwright), for pages users open: reports."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium")


@dataclass
class Visit:
    page: object
    requests: list[str] = field(default_factory=list)  # anything that is not file:// or data:
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)  # alert() and friends: an XSS got through

    def clean(self) -> None:
        assert self.dialogs == [], "a dialog opened: markup from the summary ran as script"
        assert self.page_errors == []
        assert self.console_errors == []
        assert self.requests == [], "the page tried to reach the network"

    def images(self) -> list[dict]:
        return self.page.eval_on_selector_all(  # type: ignore[attr-defined]
            "img", "els => els.map(e => ({src: e.src, complete: e.complete, width: e.naturalWidth}))")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no `chromium` on PATH: the browser tests need Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def visit(browser):
    """Open a file in a fresh page that records errors, dialogs and every non-local request."""
    context = browser.new_context()
    pages = []

    def open_(path: Path) -> Visit:
        page = context.new_page()
        v = Visit(page)
        pages.append(page)

        def route(r):
            if r.request.url.startswith(("file:", "data:")):
                r.continue_()
            else:
                v.requests.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.on("request", lambda req: None if req.url.startswith(("file:", "data:")) else v.requests.append(req.url))
        page.on("console", lambda m: v.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: v.page_errors.append(str(e)))
        page.on("dialog", lambda d: (v.dialogs.append(d.message), d.dismiss()))
        page.goto(path.as_uri(), wait_until="load")
        return v

    yield open_
    context.close()
