"""The browser login's tokens are DPoP-bound (RFC 9449) to a key of the browser session: alone, a token is useless."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests
from playwright.sync_api import BrowserContext, Page, expect

from resource_server.session_key import decode
from shared.dpop_client import DPoPKey, ServerNonces
from tests.browser.test_login import log_in, public, resource_cookies
from tests.support.stack import Stack

pytestmark = pytest.mark.browser


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def _session_key(context: BrowserContext, stack: Stack) -> DPoPKey:
    key = decode(resource_cookies(context, stack)["rs_dpop"], ServerNonces())
    assert key is not None
    return key


def _logged_in(page: Page, name: str = "alice") -> None:
    expect(page.get_by_role("heading", name=f"Hello, {name}")).to_be_visible()


@pytest.mark.deployment
def test_the_browser_logins_tokens_are_bound_to_the_sessions_key(
    stack: Stack, context: BrowserContext, page: Page
) -> None:
    log_in(page, stack)
    _logged_in(page)
    # The name and address came from /userinfo, which takes the bound token only with a proof.
    expect(page.locator("#email")).to_have_text("alice@example.com")
    cookie = next(c for c in context.cookies(public(stack.resource_url)) if c["name"] == "rs_dpop")
    assert cookie["httpOnly"], cookie
    assert cookie["sameSite"] == "Lax", cookie
    key = _session_key(context, stack)
    assert _claims(resource_cookies(context, stack)["rs_access"])["cnf"] == {"jkt": key.jkt}

    # A second login is a second session: a key of its own.
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="You have been logged out")).to_be_visible()
    log_in(page, stack)
    _logged_in(page)
    assert _session_key(context, stack).jkt != key.jkt


def test_the_access_token_taken_from_the_cookie_is_refused_without_the_key(
    stack: Stack, context: BrowserContext, page: Page
) -> None:
    log_in(page, stack)
    _logged_in(page)
    token = resource_cookies(context, stack)["rs_access"]

    as_bearer = requests.get(f"{stack.resource_url}/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert as_bearer.status_code == 401, as_bearer.text
    assert as_bearer.headers["WWW-Authenticate"].startswith("DPoP "), as_bearer.headers
    alone = requests.get(f"{stack.resource_url}/api/me", cookies={"rs_access": token}, timeout=10)
    assert alone.status_code == 401, alone.text
    at_userinfo = requests.get(f"{stack.issuer_url}/userinfo", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert at_userinfo.status_code == 401, at_userinfo.text
    # The whole cookie jar (this browser) still has both.
    assert context.request.get(public(stack.resource_url) + "/api/me").status == 200


def test_refresh_keeps_the_key_and_a_retried_refresh_keeps_the_login(
    stack: Stack, context: BrowserContext, page: Page
) -> None:
    log_in(page, stack)
    _logged_in(page)
    key = _session_key(context, stack)
    old_refresh = resource_cookies(context, stack)["rs_refresh"]

    # The access cookie lives as long as its token: without it the page refreshes, with a proof by the key.
    context.clear_cookies(name="rs_access")
    page.reload()
    _logged_in(page)
    expect(page.locator("#email")).to_have_text("alice@example.com")
    cookies = resource_cookies(context, stack)
    assert cookies["rs_refresh"] != old_refresh
    assert _claims(cookies["rs_access"])["cnf"] == {"jkt": key.jkt}
    assert _session_key(context, stack).jkt == key.jkt

    # Another tab that still held the old refresh token (or a retry after a lost answer): within
    # the issuer's reuse grace it gets the same successor, bound to the same key; nobody is logged out.
    context.clear_cookies(name="rs_access")
    context.add_cookies([{"name": "rs_refresh", "value": old_refresh, "url": public(stack.resource_url)}])
    second = context.new_page()
    second.goto(public(stack.resource_url) + "/")
    _logged_in(second)
    assert resource_cookies(context, stack)["rs_refresh"] == cookies["rs_refresh"]
    page.reload()
    _logged_in(page)
