"""A person who reaches the resource by another host name (127.0.0.1, as compose publishes it) still logs in."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.support.stack import Stack

pytestmark = pytest.mark.browser


def _public(url: str) -> str:
    """The registered redirect URIs use localhost; the stack's own URLs use 127.0.0.1."""
    return url.replace("127.0.0.1", "localhost")


@pytest.mark.deployment
def test_login_started_at_127_0_0_1_ends_logged_in(stack: Stack, context: BrowserContext, page: Page) -> None:
    start = stack.resource_url + "/"
    assert urlsplit(start).hostname == "127.0.0.1"
    page.goto(start)
    # The page moved the browser to the public URL before any login cookie was set.
    expect(page).to_have_url(_public(stack.resource_url) + "/")
    assert context.cookies(stack.resource_url) == []

    page.get_by_role("link", name="Log in").click()
    expect(page).to_have_url(re.compile(re.escape(_public(stack.issuer_url)) + r"/login"))
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("wonderland")
    page.get_by_role("button", name="Log in").click()

    expect(page).to_have_url(_public(stack.resource_url) + "/")
    expect(page.get_by_role("heading", name="Hello, alice")).to_be_visible()


@pytest.mark.deployment
def test_log_in_link_opened_at_127_0_0_1_ends_logged_in(stack: Stack, page: Page) -> None:
    page.goto(stack.resource_url + "/login")
    expect(page).to_have_url(re.compile(re.escape(_public(stack.issuer_url)) + r"/login"))
    page.get_by_label("Username").fill("bob")
    page.get_by_label("Password").fill("builder")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Hello, bob")).to_be_visible()
