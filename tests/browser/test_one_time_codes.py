"""A person turns on one-time codes on the issuer's account page, then logs in with one, in real Chromium.

The code is computed from the secret the page shows, as an authenticator app would (pyotp).
The account page's screenshot goes to test-artifacts/; docs/images/account.png is a copy of one.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.test_login import log_in, public
from tests.support.stack import Stack

pytestmark = pytest.mark.browser

PASSWORD = "a long enough password"


def _new_user(stack: Stack) -> str:
    name = f"totp-{uuid.uuid4().hex[:8]}"
    added = stack.issuer_cli("users", "add", name, "--scope", "profile", "--name", "Tess Totp", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    return name


def enroll(page: Page, stack: Stack, artifacts: Path) -> pyotp.TOTP:
    """Turn on one-time codes for the user logged in at the issuer, from its account page; return their TOTP."""
    page.goto(public(stack.issuer_url) + "/account")
    expect(page.locator("#totp-status")).to_contain_text("Off")
    expect(page.get_by_role("link", name="Passkeys")).to_have_attribute("href", "/account/passkeys")
    page.get_by_role("button", name="Set up one-time codes").click()
    expect(page.get_by_role("heading", name="Set up one-time codes")).to_be_visible()
    expect(page.get_by_role("img", name="QR code of your one-time code secret")).to_be_visible()
    totp = pyotp.TOTP(page.locator("#secret").inner_text().replace(" ", ""))
    expect(page.get_by_label("Code from your app")).to_be_focused()
    page.get_by_label("Code from your app").fill(totp.now())
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="One-time codes are on")).to_be_visible()
    codes = page.get_by_role("list", name="Your recovery codes").get_by_role("listitem")
    expect(codes).to_have_count(10)
    page.get_by_role("link", name="Back to your account").click()
    expect(page.locator("#totp-status")).to_contain_text("On since")
    expect(page.locator("#recovery-left")).to_have_text("10 left")
    page.screenshot(path=artifacts / f"account-{stack.backend}.png", full_page=True)
    return totp


def test_a_user_turns_on_one_time_codes_and_logs_in_with_one(
    stack: Stack, browser: Browser, page: Page, artifacts: Path
) -> None:
    username = _new_user(stack)
    log_in(page, stack, username, PASSWORD)
    expect(page.get_by_role("heading", name=f"Hello, {username}")).to_be_visible()
    totp = enroll(page, stack, artifacts)

    # A new browser: the password, then a second page asking for the code.
    fresh = browser.new_context()
    try:
        again = fresh.new_page()
        log_in(again, stack, username, PASSWORD)
        expect(again).to_have_url(re.compile(re.escape(public(stack.issuer_url)) + r"/login/code"))
        expect(again.get_by_role("heading", name="Enter your code")).to_be_visible()
        expect(again.get_by_label("Code")).to_be_focused()
        again.get_by_label("Code").fill("000000" if totp.now() != "000000" else "111111")
        again.get_by_role("button", name="Continue").click()
        expect(again.get_by_role("alert")).to_have_text("The code is incorrect or was already used.")
        # The step after the enrollment's code: a code never used yet (one step of drift is accepted).
        again.get_by_label("Code").fill(totp.at(time.time() + 30))
        again.get_by_role("button", name="Continue").click()
        expect(again).to_have_url(public(stack.resource_url) + "/")
        expect(again.get_by_role("heading", name=f"Hello, {username}")).to_be_visible()
    finally:
        fresh.close()
