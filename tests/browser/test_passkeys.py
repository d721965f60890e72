"""A person adds a passkey on the issuer's account page and signs in with it, no password, in real Chromium.

The authenticator is Chromium's virtual one, through the DevTools protocol (`WebAuthn` domain): a
platform authenticator (CTAP2, transport `internal`) holding discoverable credentials, with user
verification done. The page's own script (issuer/static/passkeys.js) runs the ceremonies, under
the page's CSP. The passkeys page's screenshot goes to test-artifacts/; docs/images/passkeys.png
is a copy of one (README shows it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, CDPSession, Page, expect

from tests.browser.test_login import public
from tests.support.processes import log_events
from tests.support.stack import Stack

pytestmark = pytest.mark.browser


def _virtual_authenticator(context: BrowserContext, page: Page) -> tuple[CDPSession, str]:
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, str(added["authenticatorId"])


def _credentials(cdp: CDPSession, authenticator: str) -> list[dict[str, Any]]:
    return list(cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"])


def _log_out(page: Page, issuer: str) -> None:
    page.goto(issuer + "/logout")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Logged out")).to_be_visible()


def _add_passkey(page: Page, issuer: str, name: str) -> None:
    page.goto(issuer + "/login")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("wonderland")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Logged in")).to_be_visible()
    page.get_by_role("link", name="Passkeys").click()
    expect(page.get_by_role("heading", name="Passkeys", exact=True)).to_be_visible()
    page.get_by_label("Name of the new passkey").fill(name)
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()


def test_alice_adds_a_passkey_and_signs_in_with_it_without_her_password(
    stack: Stack, context: BrowserContext, page: Page, artifacts: Path
) -> None:
    issuer = public(stack.issuer_url)
    errors: list[str] = []  # script errors and CSP refusals (a favicon's 404 is no concern here)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "404" not in m.text else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    failed: list[str] = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 and "favicon" not in r.url else None)
    cdp, authenticator = _virtual_authenticator(context, page)

    _add_passkey(page, issuer, "Laptop")
    (credential,) = _credentials(cdp, authenticator)
    assert credential["isResidentCredential"] is True  # discoverable: found with no allowCredentials
    assert credential["rpId"] == "localhost"

    # Alice has a factor now: her password-only session may change no more of them. The rename
    # sends her to log in again, with the passkey (her password alone no longer logs her in), and back.
    page.get_by_label("New name for Laptop").fill("Work laptop")
    page.get_by_role("button", name="Rename Laptop").click()
    expect(page).to_have_url(issuer + "/login")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("wonderland")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("This account signs in with a passkey")
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page).to_have_url(issuer + "/account/passkeys")
    expect(page.get_by_role("heading", name="Laptop")).to_be_visible()  # the rename did not happen
    page.get_by_label("New name for Laptop").fill("Work laptop")
    page.get_by_role("button", name="Rename Laptop").click()
    expect(page.get_by_role("heading", name="Work laptop")).to_be_visible()
    expect(page.get_by_text("Passkey on one device")).to_be_visible()
    page.screenshot(path=artifacts / f"passkeys-{stack.backend}.png", full_page=True)

    _log_out(page, issuer)
    # Through the resource, so that the passkey login answers a pending /authorize like the password form does.
    page.goto(public(stack.resource_url) + "/")
    page.get_by_role("link", name="Log in").click()
    expect(page).to_have_url(re.compile(re.escape(issuer) + r"/login"))
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page).to_have_url(public(stack.resource_url) + "/")
    expect(page.get_by_role("heading", name="Hello, alice")).to_be_visible()
    assert _credentials(cdp, authenticator)[0]["signCount"] >= 2  # registration and the sign-in

    page.goto(issuer + "/account/passkeys")
    expect(page.get_by_text("last used")).to_be_visible()
    page.get_by_role("button", name="Remove Work laptop").click()
    expect(page.get_by_text("You have no passkeys yet.")).to_be_visible()
    assert errors == []
    assert failed == []


def test_a_cloned_authenticator_is_refused(stack: Stack, context: BrowserContext, page: Page) -> None:
    issuer = public(stack.issuer_url)
    cdp, authenticator = _virtual_authenticator(context, page)
    _add_passkey(page, issuer, "Security key")
    _log_out(page, issuer)
    page.goto(issuer + "/login")
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page.get_by_role("heading", name="Logged in")).to_be_visible()
    _log_out(page, issuer)

    # A copy of the key whose counter lags behind the original's: its next count is not above the stored one.
    (credential,) = _credentials(cdp, authenticator)
    assert credential["signCount"] >= 2
    cdp.send(
        "WebAuthn.removeCredential", {"authenticatorId": authenticator, "credentialId": credential["credentialId"]}
    )
    cdp.send("WebAuthn.addCredential", {"authenticatorId": authenticator, "credential": {**credential, "signCount": 0}})
    page.goto(issuer + "/login")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/login/passkey")) as posted:
        page.get_by_role("button", name="Sign in with a passkey").click()
    assert posted.value.status == 400
    expect(page.get_by_role("alert")).to_contain_text("The passkey could not be used to sign in.")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    assert "passkey.clone_suspected" in [e.get("event") for e in log_events(stack.issuer_logs()) if e.get("audit")]
    # The real key is gone from this authenticator: the operator removes it, so alice logs in with her password again.
    assert stack.issuer_cli("users", "reset-factors", "alice").returncode == 0


def test_a_failed_ceremony_leaves_the_password_form(stack: Stack, context: BrowserContext, page: Page) -> None:
    """An authenticator holding no passkey for the issuer: the browser's request fails, the page says so."""
    issuer = public(stack.issuer_url)
    _virtual_authenticator(context, page)
    page.goto(issuer + "/login")
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page.locator("#passkey-error")).to_be_visible(timeout=70_000)
    expect(page.get_by_role("button", name="Sign in with a passkey")).to_be_enabled()
    expect(page.get_by_label("Username")).to_be_editable()
