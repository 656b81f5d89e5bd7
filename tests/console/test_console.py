"""The admin console in a real headless Chromium, against a real gateway and azure-sim.

Each page is saved as a screenshot (see conftest.py). The flow: sign in, onboard a tenant
whose display name is markup, create a key and call the gateway with it, see the calls in the
tenant's usage, change its limits (and see the API's own message for a bad one), revoke the
key and see the next call refused, then sign out and see the old session refused.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect

from conftest import ADMIN_TOKEN, OPENAI_API_VERSION, sign_in

XSS = "<img src=x onerror=alert(1)>"
SLUG = "browser-co"


def chat(base: str, key: str) -> int:
    request = urllib.request.Request(
        f"{base}/openai/deployments/gpt-4o/chat/completions?api-version={OPENAI_API_VERSION}",
        data=json.dumps({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}).encode(),
        method="POST",
        headers={"content-type": "application/json", "api-key": key},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def admin_status(base: str, method: str, path: str, body: dict | None = None, headers=None) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{base}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else {}


def test_a_tenant_from_onboarding_to_a_revoked_key(page, gateway, shared_pools, screenshots):
    base = gateway.base_url

    # Not signed in: the console sends the browser to sign in.
    page.goto("/console")
    assert page.url.endswith("/console/login")
    page.screenshot(path=screenshots / "login.png", full_page=True)
    sign_in(page)
    page.wait_for_url("**/console")
    assert page.get_by_role("heading", name="Overview").is_visible()

    # Onboard, with markup for a name.
    page.goto("/console/tenants")
    page.get_by_label("Slug", exact=True).fill(SLUG)
    page.get_by_label("Display name").fill(XSS)
    page.get_by_label("OpenAI placement").select_option("shared")
    page.get_by_role("button", name="Onboard").click()
    page.wait_for_url(f"**/console/tenants/{SLUG}")
    assert page.locator("#display-name").inner_text() == XSS
    assert page.locator("#display-name img").count() == 0

    # A key, shown once, used from here.
    page.get_by_label("Name", exact=True).fill("browser-key")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#secret-value")
    secret.wait_for(state="visible")
    key = secret.input_value()
    assert key.startswith("bk_")
    page.get_by_role("button", name="Done").click()
    page.wait_for_load_state("load")
    assert key not in page.content(), "the key is shown once, never again"
    for _ in range(3):
        assert chat(base, key) == 200

    # The calls reach the usage chart (the ledger writes in the background).
    deadline = time.monotonic() + 30
    while True:
        page.goto(f"/console/tenants/{SLUG}")
        usage = page.locator("[data-usage]")
        try:
            expect(usage).to_have_attribute("data-loaded", "3", timeout=3000)
        except AssertionError:
            pass
        if usage.get_attribute("data-loaded") == "3":
            break
        assert time.monotonic() < deadline, f"usage shows {usage.get_attribute('data-loaded')} calls"
        time.sleep(0.5)
    assert page.locator("#usage-chart canvas").count() == 1, "uPlot drew the chart"
    page.get_by_label("By").select_option("model")
    # The figures as a table (behind a disclosure, for screen readers and keyboards).
    page.get_by_text("Figures as a table").click()
    expect(page.locator("#usage-table tbody tr").first.locator("td").nth(1)).to_have_text("gpt-4o")
    page.screenshot(path=screenshots / "tenant.png", full_page=True)

    # Limits: saved through the admin API; a bad one answered with the API's own message.
    limits = page.locator('[data-form="limits"]')
    limits.get_by_label("Requests per minute").fill("600")
    limits.get_by_role("button", name="Save limits").click()
    expect(page.locator("#limits .result")).to_have_text("Limits saved.")
    _, tenant = admin_status(base, "GET", f"/admin/v1/tenants/{SLUG}",
                             headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert tenant["limits"]["requests_per_minute"] == 600
    too_big = "100000000000000000000000"
    # What the console's script sends for it (JSON.stringify writes the number as 1e+23).
    raw = b'{"limits":{"tokens_per_minute":1e+23,"requests_per_minute":600,"monthly_tokens":null}}'
    request = urllib.request.Request(
        f"{base}/admin/v1/tenants/{SLUG}", data=raw, method="PATCH",
        headers={"content-type": "application/json", "authorization": f"Bearer {ADMIN_TOKEN}"})
    with pytest.raises(urllib.error.HTTPError) as answered:
        urllib.request.urlopen(request, timeout=10)
    assert answered.value.code == 422
    refusal = json.loads(answered.value.read())
    limits.get_by_label("Tokens per minute").fill(too_big)
    limits.get_by_role("button", name="Save limits").click()
    result = page.locator("#limits .result.error")
    result.wait_for()
    error = refusal["error"]
    expected = f"{error['field']}: {error['message']}" if error.get("field") else error["message"]
    assert result.inner_text() == expected

    # The key's own limits, on top of the tenant's.
    page.get_by_role("button", name="Limits of key browser-key").click()
    dialog = page.locator("#key-limits")
    dialog.get_by_label("Requests per minute").fill("5")
    dialog.get_by_role("button", name="Save key limits").click()
    expect(page.locator("#keys tbody tr", has_text="browser-key")).to_contain_text("5 rpm")

    # Revoke: confirmed by typing the slug; the next call is refused.
    page.get_by_role("button", name="Revoke key browser-key").click()
    page.get_by_label("Type the tenant's slug to confirm").fill(SLUG)
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("[data-revoke]")).to_have_count(0)
    assert chat(base, key) == 401

    # The other pages.
    page.goto(f"/console/tenants?q={SLUG[:7]}")
    row = page.locator("#tenants tbody tr", has_text=SLUG)
    assert row.count() == 1
    assert row.locator("td").nth(5).inner_text() == "3"
    page.screenshot(path=screenshots / "tenants.png", full_page=True)
    page.goto("/console/upstreams")
    member = page.locator("#members tbody tr", has_text="aoai-eastus/gpt-4o")
    assert member.locator(".breaker").inner_text() == "closed"
    page.screenshot(path=screenshots / "upstreams.png", full_page=True)
    page.goto("/console")
    page.screenshot(path=screenshots / "overview.png", full_page=True)


def test_state_changes_without_the_csrf_token_are_refused(page, gateway):
    sign_in(page)
    page.wait_for_url("**/console")
    csrf = page.locator("main").get_attribute("data-csrf")
    body = {"slug": "csrf-probe", "display_name": "probe"}
    refused = page.request.post("/admin/v1/tenants", data=body)
    assert refused.status == 403
    assert refused.json()["error"]["code"] == "forbidden"
    wrong = page.request.post("/admin/v1/tenants", data=body, headers={"x-csrf-token": "x" + csrf})
    assert wrong.status == 403
    assert page.request.get("/admin/v1/tenants/csrf-probe").status == 404, "nothing was created"
    # Sign-out is a form: without the token it is refused and the session lives on.
    assert page.request.post("/console/logout", form={"csrf": "wrong"}).status == 403
    assert page.request.get("/console/tenants", max_redirects=0).status == 200


def test_signing_out_ends_the_session_everywhere(page, context, browser, gateway):
    sign_in(page)
    page.wait_for_url("**/console")
    cookie = next(c for c in context.cookies() if c["name"] == "bulkhead_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/login")
    # The old cookie, replayed from another browser, opens nothing.
    other = browser.new_context(base_url=gateway.base_url)
    other.add_cookies([cookie])
    try:
        assert other.request.get("/console", max_redirects=0).status == 303
        assert other.request.get("/admin/v1/tenants").status == 401
    finally:
        other.close()


def test_a_tenant_key_does_not_open_the_console(page, gateway, shared_pools):
    status, _ = admin_status(gateway.base_url, "POST", "/admin/v1/tenants",
                             {"slug": "key-probe", "display_name": "probe"},
                             headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert status in (201, 202)
    _, created = admin_status(gateway.base_url, "POST", "/admin/v1/tenants/key-probe/keys",
                              {"name": "k"}, headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    sign_in(page, created["key"])
    assert page.url.endswith("/console/login")
    assert page.get_by_role("alert").inner_text() == "That is not the admin token."
    assert page.request.get("/console", max_redirects=0,
                            headers={"api-key": created["key"]}).status == 303


@pytest.mark.parametrize("width,height,name", [(390, 844, "phone")])
def test_pages_fit_a_phone_and_start_with_a_skip_link(browser, gateway, screenshots, width, height, name):
    context = browser.new_context(base_url=gateway.base_url, viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        sign_in(page)
        page.wait_for_url("**/console")
        for path in ["/console", "/console/tenants", "/console/upstreams"]:
            page.goto(path)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{path} is {overflow}px wider than the screen"
        page.screenshot(path=screenshots / f"tenants-{name}.png", full_page=True)
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    finally:
        context.close()
