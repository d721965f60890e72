"""Step-up (RFC 9470) in real Chromium: the resource's Admin page sends alice back to the issuer for a stronger login."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.test_login import log_in, public
from tests.support.sessions import session_cookie
from tests.support.stack import Stack

pytestmark = pytest.mark.browser


def test_admin_asks_for_a_second_factor_once_and_shows_the_answer_after_a_two_factor_login(
    stack: Stack, context: BrowserContext, page: Page
) -> None:
    """The two-factor issuer session is made by `LoginSessions.create` (tests.support.sessions): this test is about
    the step-up's round trip, not how the one-time code was proved (the TOTP login has its own browser tests)."""
    log_in(page, stack)
    expect(page.get_by_role("heading", name="Hello, alice")).to_be_visible()

    # A password login: the Admin page sends the browser to the issuer, which asks for a fresh login.
    page.get_by_role("link", name="Admin").click()
    expect(page).to_have_url(re.compile(re.escape(public(stack.issuer_url)) + r"/login"))
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("wonderland")
    page.get_by_role("button", name="Log in").click()
    # alice has no second factor: back at /admin once, told where to set one up, and left there.
    expect(page).to_have_url(public(stack.resource_url) + "/admin?stepped_up=1")
    enroll = page.locator("#admin-enroll")
    expect(enroll).to_be_visible()
    expect(enroll.get_by_role("link", name="your account at the issuer")).to_have_attribute(
        "href", f"{stack.public_issuer}/account"
    )

    # Her issuer session now proved a password and a one-time code: the next visit needs no form.
    (issuer_cookie,) = [c for c in context.cookies(public(stack.issuer_url)) if c["name"] == "issuer_session"]
    value = session_cookie(stack, "alice")
    context.add_cookies(
        [{"name": "issuer_session", "value": value, "domain": issuer_cookie["domain"], "path": issuer_cookie["path"]}]
    )
    page.goto(public(stack.resource_url) + "/admin")
    expect(page).to_have_url(public(stack.resource_url) + "/admin?stepped_up=1")
    expect(page.locator("#admin-message")).to_have_text("welcome, administrator")
    expect(page.locator("#admin-acr")).to_have_text("multi-factor")
