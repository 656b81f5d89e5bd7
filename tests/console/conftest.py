"""Fixtures of the console's browser tests: the SDK suite's emulator and gateway (loaded from
tests/sdk/conftest.py, so both suites start them the same way) and a headless Chromium.

Chromium: $CHROMIUM, else Debian's /usr/bin/chromium (Playwright drives it; no browser is
downloaded). Screenshots of every page go to $CONSOLE_SCREENSHOTS, else
<repo>/target/console-screenshots.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

_spec = importlib.util.spec_from_file_location("sdk_fixtures", REPO_ROOT / "tests/sdk/conftest.py")
assert _spec and _spec.loader
sdk = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sdk)

# Re-exported so pytest finds them here.
sim = sdk.sim
gateway = sdk.gateway
shared_pools = sdk.shared_pools
ADMIN_TOKEN = sdk.GATEWAY_ADMIN_TOKEN
OPENAI_API_VERSION = sdk.OPENAI_API_VERSION


def chromium_path() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.exit("chromium not found: install Debian's `chromium` package or set CHROMIUM", 2)
    return found


@pytest.fixture(scope="session")
def screenshots() -> Path:
    out = Path(os.environ.get("CONSOLE_SCREENSHOTS", REPO_ROOT / "target/console-screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            # CI runs as root, where Chromium's sandbox cannot start.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()


@pytest.fixture
def context(browser, gateway):
    context = browser.new_context(base_url=gateway.base_url, viewport={"width": 1280, "height": 900})
    yield context
    context.close()


@pytest.fixture
def page(context):
    page = context.new_page()
    dialogs: list[str] = []
    # A script dialog (alert) would mean injected markup ran.
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # Script errors and CSP violations; not the API's own 4xx answers, which a test provokes.
    page.on("console", lambda m: errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    yield page
    assert not dialogs, f"a script dialog opened: {dialogs}"
    assert not errors, f"the page logged errors: {errors}"


def sign_in(page, token: str = ADMIN_TOKEN) -> None:
    page.goto("/console/login")
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()
