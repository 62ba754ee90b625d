"""Browser tests: Playwright driving Debian's chromium against pytest-django's live server.

The browser is the system's `chromium` (installed by `make test-system-deps`, which `make test`
runs); a browser downloaded by `playwright install` is never used.
"""

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings

# Every wait is bounded: a page that never shows what a test expects fails the test in
# seconds instead of hanging the suite.
TIMEOUT_MS = 15_000

CHROMIUM_ARGS = [
    # Containers and CI runners often lack the user namespaces chromium's sandbox needs.
    "--no-sandbox",
    "--disable-gpu",
    # Docker's 64 MB /dev/shm makes tabs crash on long pages.
    "--disable-dev-shm-usage",
    # Tests must not talk to anything but the live server.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

DESKTOP = {"width": 1280, "height": 900}
MOBILE = {"width": 390, "height": 844}

SCREENSHOT_DIR = Path(settings.BASE_DIR) / "test-artifacts" / "screenshots"


def chromium_path() -> str | None:
    return shutil.which("chromium") or (
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None
    )


@pytest.fixture(scope="session")
def live_server():
    """pytest-django's live server, always on 127.0.0.1.

    Its default address, "localhost", may resolve to ::1 or to another interface; these
    tests must only ever listen on the loopback address.
    """
    from pytest_django.live_server_helper import LiveServer

    server = LiveServer("127.0.0.1")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def _allow_sync_orm_with_playwright() -> Iterator[None]:
    # Playwright's sync API keeps an asyncio event loop running in the test's thread while
    # the browser is open, so Django takes the test's (synchronous) ORM calls for calls
    # from async code and raises SynchronousOnlyOperation. They are not: allow them, and
    # only while this module's browser is open, so that no other test runs with it.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="module")
def browser(_allow_sync_orm_with_playwright):
    executable = chromium_path()
    if executable is None:
        pytest.fail(
            "Debian's chromium is not installed (no `chromium` on PATH): run "
            "`make test-system-deps` (`make test` runs it). Never `playwright install`.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, live_server):
    # French is the product's default language; the pages must read well in it.
    context = browser.new_context(viewport=DESKTOP, locale="fr-FR", base_url=live_server.url)
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


def _horizontal_overflow(page) -> list[str]:
    """Elements wider than the viewport, except what scrolls inside a .table-wrap."""
    return page.evaluate(
        """() => {
          const width = document.documentElement.clientWidth;
          const found = [];
          for (const el of document.body.querySelectorAll('*')) {
            if (el.closest('.table-wrap') && !el.classList.contains('table-wrap')) continue;
            const box = el.getBoundingClientRect();
            if (box.width === 0 || box.height === 0) continue;
            if (box.right > width + 1 || box.left < -1) {
              const cls = el.className && typeof el.className === 'string'
                ? '.' + el.className.trim().split(/\\s+/).join('.') : '';
              found.push(`${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}${cls}`
                + ` (${Math.round(box.left)}..${Math.round(box.right)} > ${width})`);
            }
          }
          return found.slice(0, 10);
        }"""
    )


@pytest.fixture
def snapshot() -> Callable[..., None]:
    """Save the page at 1280x900 and 390x844 as test-artifacts/screenshots/<name>-<width>.png.

    With `fits=True` (the accountants' pages), nothing may stick out of the viewport at
    either width; wide tables scroll inside their .table-wrap.
    """
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)

    def take(page, name: str, *, fits: bool = True) -> None:
        problems = {}
        for size in (DESKTOP, MOBILE):
            page.set_viewport_size(size)
            page.screenshot(path=SCREENSHOT_DIR / f"{name}-{size['width']}.png", full_page=True)
            if fits:
                overflow = _horizontal_overflow(page)
                if overflow:
                    problems[size["width"]] = overflow
        page.set_viewport_size(DESKTOP)
        assert not problems, f"{name}: elements wider than the viewport: {problems}"

    return take
