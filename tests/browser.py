"""A headless Chromium for tests of pages a person opens: the docs page, later the playground.

`browser` is a session-wide Playwright Chromium, the system's `chromium` (Debian's package;
.ci/run installs it), so nothing is downloaded. The `visit` fixture is a function:
`visit(url, **context_options)` opens the page in a fresh browser context (a phone's
viewport, say) that records every request the
page makes and lets only those to the page's own server through: anything else is
refused and listed in `.foreign`, so a test can assert that a page works with no
request leaving the server. Contexts close when the test ends (no connection stays
open to delay the server's shutdown).

conftest.py offers both fixtures to every test module: one definition, so one browser for
the whole session (two session-wide Playwrights in one process cannot run).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

from tests.tools import need_program


@pytest.fixture(scope="session")
def browser():
    executable = need_program("chromium", "chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # No sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Visit:
    page: object
    requests: list[str] = field(default_factory=list)   # every URL the page asked for, in order
    foreign: list[str] = field(default_factory=list)    # those to any other server (refused)
    errors: list[str] = field(default_factory=list)     # uncaught script errors
    console: list[str] = field(default_factory=list)    # errors the page logged (failed loads included)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


@pytest.fixture
def visit(browser):
    contexts = []

    def open_page(url: str, timeout_s: float = 20.0, **context_options) -> Visit:
        context = browser.new_context(**context_options)
        contexts.append(context)
        return _open(context, url, timeout_s)

    yield open_page
    for context in contexts:
        context.close()


def _open(context, url: str, timeout_s: float) -> Visit:
    """Open `url` in `context`; requests to other origins are recorded and refused."""
    context.set_default_timeout(timeout_s * 1000)
    page = context.new_page()
    seen = Visit(page)
    home = _origin(url)

    def route(route):
        request_url = route.request.url
        seen.requests.append(request_url)
        if _origin(request_url) == home or request_url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            seen.foreign.append(request_url)
            route.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda error: seen.errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and seen.console.append(message.text))
    page.goto(url)
    return seen
