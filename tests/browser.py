"""Real Chromium for the staff console's tests: Debian's /usr/bin/chromium driven by Playwright
(never a downloaded browser), one fresh context (cookies, sessionStorage) per signed-in user.

Screenshots go to LINLI_TEST_ARTIFACTS (default var/test-artifacts/): those a test asks for,
and one of every open page when a test fails.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.support import PASSWORD, ROOT, Api

CHROMIUM = Path(os.environ.get("LINLI_CHROMIUM", "/usr/bin/chromium"))
TIMEOUT_MS = 10_000
# Console messages that are not page errors: the browser logs every refused request (a 409 the
# page shows to staff is an expected answer).
_EXPECTED = re.compile(r"Failed to load resource")


def artifacts_dir() -> Path:
    path = Path(os.environ.get("LINLI_TEST_ARTIFACTS") or ROOT / "var" / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One browser per test module: Playwright's sync API keeps its event loop marked as
    running in this thread while it is open, so the asyncio tests of other modules could not
    start theirs (asyncio.run() from a running event loop)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make debian-deps` as root (Debian chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            # The alarm must sound without a click first, as on the duty room's screen, where
            # the browser is set up to allow it.
            args=["--autoplay-policy=no-user-gesture-required"],
            timeout=30_000,
        )
        yield browser
        browser.close()


@dataclass
class Console:
    """Staff consoles in the browser, each signed in through the log-in form."""

    browser: Browser
    base_url: str
    name: str
    contexts: list[BrowserContext] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def open(self, username: str, path: str = "/console/", password: str = PASSWORD) -> Page:
        context = self.browser.new_context(
            base_url=self.base_url, locale="zh-CN", timezone_id="Asia/Shanghai"
        )
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"{username}: {error}"))
        page.on(
            "console",
            lambda message: (
                self.errors.append(f"{username}: {message.text}")
                if message.type == "error" and not _EXPECTED.search(message.text)
                else None
            ),
        )
        page.goto(path)
        page.wait_for_url("**/console/login**")
        page.get_by_label("用户名").fill(username)
        page.get_by_label("密码").fill(password)
        page.get_by_role("button", name="登录").click()
        page.wait_for_url(f"**{path}**")
        return page

    def screenshot(self, page: Page, name: str) -> Path:
        target = artifacts_dir() / f"{name}.png"
        page.screenshot(path=str(target), full_page=True)
        return target

    def close(self, failed: bool) -> None:
        for index, context in enumerate(self.contexts):
            if failed:
                for number, page in enumerate(context.pages):
                    with suppress(Exception):  # a crashed page: nothing to show
                        self.screenshot(page, f"failed-{self.name}-{index}-{number}")
            context.close()


@pytest.fixture
def console(chromium: Browser, api: Api, request: pytest.FixtureRequest) -> Iterator[Console]:
    failed_before = request.session.testsfailed
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
    opened = Console(chromium, api.base_url, name)
    yield opened
    opened.close(failed=request.session.testsfailed > failed_before)
