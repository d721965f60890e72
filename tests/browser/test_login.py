"""A person logs in through the issuer in real Chromium and sees their details on the resource."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.support.stack import Stack

pytestmark = pytest.mark.browser


def public(url: str) -> str:
    """Browsers use localhost (the registered redirect URIs), tests' HTTP clients 127.0.0.1."""
    return url.replace("127.0.0.1", "localhost")


def log_in(page: Page, stack: Stack, username: str = "alice", password: str = "wonderland") -> None:
    page.goto(public(stack.resource_url) + "/")
    page.get_by_role("link", name="Log in").click()
    expect(page).to_have_url(re.compile(re.escape(public(stack.issuer_url)) + r"/login"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def resource_cookies(context: BrowserContext, stack: Stack) -> dict[str, str]:
    """The resource's own cookies (cookies ignore ports, so the issuer's show up on localhost too)."""
    return {c["name"]: c["value"] for c in context.cookies(public(stack.resource_url)) if c["name"].startswith("rs_")}


@pytest.mark.deployment
def test_alice_logs_in_and_sees_her_details(stack: Stack, context: BrowserContext, page: Page, artifacts: Path) -> None:
    visited: list[str] = []
    page.on("request", lambda request: visited.append(request.url))
    log_in(page, stack)

    expect(page).to_have_url(public(stack.resource_url) + "/")
    expect(page.get_by_role("heading", name="Hello, alice")).to_be_visible()
    # Who logged in: the ID token the resource validated, with the name and address from the issuer's
    # /userinfo (the ID token is minimal), beside the access token's claims.
    expect(page.locator("#name")).to_have_text("Alice")
    expect(page.locator("#email")).to_have_text("alice@example.com")
    expect(page.locator("#username")).to_have_text("alice")
    expect(page.locator("#auth-time")).to_contain_text("UTC")
    expect(page.locator("#scope")).to_have_text("admin email openid profile")
    expect(page.locator("#expiry")).to_contain_text("UTC")
    expect(page.locator("table.claims")).to_contain_text(stack.public_issuer)
    expect(page.locator("table.claims")).to_contain_text("jwt-split-api")
    page.screenshot(path=artifacts / f"logged-in-{stack.backend}.png", full_page=True)

    cookies = context.cookies()
    assert {"rs_access", "rs_refresh", "rs_id", "issuer_session"} <= {c["name"] for c in cookies}
    assert all(c["httpOnly"] for c in cookies), cookies
    tokens = resource_cookies(context, stack)
    for name in ("rs_access", "rs_refresh"):
        assert not any(tokens[name] in url for url in visited), f"{name} appeared in a URL"
    assert page.evaluate("document.cookie") == ""  # nothing a script could read

    # The cookie is an access token like any other: the API accepts it.
    me = context.request.get(public(stack.resource_url) + "/api/me")
    assert me.status == 200
    assert me.json()["sub"] == stack.user_id("alice")  # the stable id, never the name
    assert me.json()["claims"]["preferred_username"] == "alice"


def test_wrong_password_keeps_you_on_the_login_page_and_sets_no_cookie(
    stack: Stack, context: BrowserContext, page: Page
) -> None:
    page.goto(public(stack.resource_url) + "/")
    page.get_by_role("link", name="Log in").click()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("not her password")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/login")) as posted:
        page.get_by_role("button", name="Log in").click()
    response = posted.value
    assert "set-cookie" not in response.headers
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.get_by_role("alert")).to_have_text("The username or password is incorrect.")
    assert resource_cookies(context, stack) == {}

    # An unknown user gets exactly the same message.
    page.get_by_label("Username").fill("nobody-here")
    page.get_by_label("Password").fill("whatever it is")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("The username or password is incorrect.")


def test_logout_ends_at_the_logged_out_page_and_ends_the_issuer_session(
    stack: Stack, context: BrowserContext, page: Page, artifacts: Path
) -> None:
    log_in(page, stack, "bob", "builder")
    expect(page.get_by_role("heading", name="Hello, bob")).to_be_visible()
    expect(page.locator("#name")).to_have_text("Bob")
    expect(page.locator("#email")).to_have_text("bob@example.com")
    old_refresh = resource_cookies(context, stack)["rs_refresh"]
    id_token = resource_cookies(context, stack)["rs_id"]
    page.get_by_role("button", name="Log out").click()

    # Through the issuer's end-session endpoint and straight back: no question asked.
    expect(page).to_have_url(re.compile(re.escape(public(stack.resource_url)) + r"/logged-out\?state="))
    expect(page.get_by_role("heading", name="You have been logged out")).to_be_visible()
    page.screenshot(path=artifacts / f"logged-out-{stack.backend}.png", full_page=True)
    assert resource_cookies(context, stack) == {}
    # The ID token went to the issuer in the end-session URL (the specification's GET binding): no log keeps it.
    logs = stack.issuer_logs() + stack.resource_logs()
    assert '"path": "/logout"' in logs  # the request was logged, without its query
    assert id_token not in logs
    assert old_refresh not in logs

    # The issuer session ended too: logging in again asks for the password.
    page.goto(public(stack.resource_url) + "/login")
    expect(page).to_have_url(re.compile(re.escape(public(stack.issuer_url)) + r"/login"))
    expect(page.get_by_label("Password")).to_be_visible()

    # And the refresh token the browser held was revoked: brought back, it logs nobody in.
    context.add_cookies([{"name": "rs_refresh", "value": old_refresh, "url": public(stack.resource_url)}])
    page.goto(public(stack.resource_url) + "/")
    expect(page.get_by_role("link", name="Log in")).to_be_visible()
    assert resource_cookies(context, stack) == {}


def test_tampered_cookie_means_logged_out(stack: Stack, context: BrowserContext, page: Page) -> None:
    log_in(page, stack)
    expect(page.get_by_role("heading", name="Hello, alice")).to_be_visible()
    token = resource_cookies(context, stack)["rs_access"]
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
    context.add_cookies([{"name": "rs_access", "value": forged, "url": public(stack.resource_url)}])

    page.reload()
    expect(page.get_by_role("link", name="Log in")).to_be_visible()
    assert "rs_access" not in resource_cookies(context, stack)


def test_unregistered_redirect_uri_gets_an_error_page_not_a_redirect(stack: Stack, page: Page) -> None:
    query = urlencode(
        {
            "response_type": "code",
            "client_id": "resource-web",
            "redirect_uri": "https://evil.example/callback",
            "state": "x",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        }
    )
    response = page.goto(f"{public(stack.issuer_url)}/authorize?{query}")
    assert response is not None
    assert response.status == 400
    assert page.url.startswith(public(stack.issuer_url))
    expect(page.get_by_role("heading", name="Invalid redirect")).to_be_visible()

    unknown = page.goto(f"{public(stack.issuer_url)}/authorize?client_id=evil&redirect_uri=https://evil.example/")
    assert unknown is not None
    assert unknown.status == 400
    assert page.url.startswith(public(stack.issuer_url))


def test_login_post_without_csrf_token_is_refused(stack: Stack, context: BrowserContext, page: Page) -> None:
    page.goto(public(stack.issuer_url) + "/login")  # the browser holds an issuer session cookie
    refused = context.request.post(
        public(stack.issuer_url) + "/login",
        form={"username": "alice", "password": "wonderland"},
        max_redirects=0,
    )
    assert refused.status == 400
    assert "security token" in refused.text()
    # And the browser is still not logged in.
    page.goto(public(stack.issuer_url) + "/logout")
    expect(page.get_by_text("You are not logged in.")).to_be_visible()


def test_repeated_failed_logins_are_rate_limited(stack: Stack, page: Page) -> None:
    page.goto(public(stack.issuer_url) + "/login")
    statuses = []
    for _ in range(4 * stack.workers * 5):  # more than any worker's per-account allowance
        # A name of its own: the lock-out lasts a minute for this name from this address, and the
        # stack is shared with other tests that log in as the demo users.
        page.get_by_label("Username").fill("guessed-name")
        page.get_by_label("Password").fill("guessing wrong")
        with page.expect_response(lambda r: r.request.method == "POST") as posted:
            page.get_by_role("button", name="Log in").click()
        statuses.append(posted.value.status)
        if posted.value.status == 429:
            assert int(posted.value.headers["retry-after"]) > 0
            break
        page.goto(public(stack.issuer_url) + "/login")
    assert statuses[-1] == 429, statuses
    expect(page.get_by_role("alert")).to_contain_text("Too many login attempts")
