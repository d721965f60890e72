"""Step-up (RFC 9470) in real Chromium: the resource's Admin page sends alice back to the issuer for a stronger login."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.test_login import log_in, public
from tests.browser.test_one_time_codes import PASSWORD, enroll
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


def test_a_password_login_is_refused_admin_until_the_user_sets_up_codes_and_steps_up_with_one(
    stack: Stack, page: Page, artifacts: Path
) -> None:
    """Issue 23, end to end with nothing made up: a password login gets no admin answer; once the user
    turns on one-time codes at the issuer, the Admin page's step-up asks for the password and a code,
    and then shows the answer."""
    username = f"stepup-{uuid.uuid4().hex[:8]}"
    added = stack.issuer_cli(
        "users", "add", username, "--scope", "profile admin", "--name", "Sam Stepup", stdin=PASSWORD + "\n"
    )
    assert added.returncode == 0, added.stderr
    log_in(page, stack, username, PASSWORD)
    expect(page.get_by_role("heading", name=f"Hello, {username}")).to_be_visible()

    page.get_by_role("link", name="Admin").click()
    expect(page).to_have_url(re.compile(re.escape(public(stack.issuer_url)) + r"/login"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#admin-enroll")).to_be_visible()  # no second factor yet: told where to set one up

    totp = enroll(page, stack, artifacts)
    page.goto(public(stack.resource_url) + "/admin")
    expect(page).to_have_url(re.compile(re.escape(public(stack.issuer_url)) + r"/login"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Enter your code")).to_be_visible()
    page.get_by_label("Code").fill(totp.at(time.time() + 30))  # the enrollment spent this step's code
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(public(stack.resource_url) + "/admin?stepped_up=1")
    expect(page.locator("#admin-message")).to_have_text("welcome, administrator")
    expect(page.locator("#admin-acr")).to_have_text("multi-factor")
