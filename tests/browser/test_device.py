"""A command-line client logs in through the device grant (RFC 8628) while a person approves in real Chromium.

The client is third-party: panva's openid-client (`initiateDeviceAuthorization`,
`pollDeviceAuthorizationGrant`), a confidential client polling the token endpoint by itself.
The approval page's screenshot goes to test-artifacts/; docs/images/device-approval.png is a copy
of one (docs/api.md shows it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_login import public
from tests.support.oidc_rp import RelyingParty, register
from tests.support.stack import Stack

pytestmark = pytest.mark.browser

DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"


def _device_client(stack: Stack) -> RelyingParty:
    return register(stack, "tv", "--grant", DEVICE_CODE, "--grant", "refresh_token")


def _in_browser(stack: Stack, url: str) -> str:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == stack.public_issuer, url
    return f"{public(stack.issuer_url)}{parts.path}?{parts.query}"


@pytest.mark.deployment
def test_third_party_device_client_logs_in_while_the_user_approves(stack: Stack, page: Page, artifacts: Path) -> None:
    client = _device_client(stack)
    polling = client.start("device", scope="openid profile")
    try:
        assert polling.stderr is not None
        started = json.loads(polling.stderr.readline())
        assert re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}", started["user_code"])

        page.goto(_in_browser(stack, started["verification_uri_complete"]))
        # Logged out: the issuer's login form first, then back to the code.
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password").fill("wonderland")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Connect a device")).to_be_visible()
        code = page.get_by_label("Code")
        expect(code).to_have_value(started["user_code"])
        expect(code).to_be_focused()
        page.keyboard.press("Enter")  # keyboard only

        expect(page.get_by_role("heading", name="Allow this device?")).to_be_visible()
        expect(page.locator("main")).to_contain_text(client.client_id)
        expect(page.get_by_role("list", name="Permissions asked for")).to_contain_text("profile")
        expect(page.get_by_role("button", name="Allow")).to_be_focused()
        page.screenshot(path=artifacts / f"device-approval-{stack.backend}.png", full_page=True)
        page.get_by_role("button", name="Allow").click()
        expect(page.get_by_role("heading", name="Device approved")).to_be_visible()

        out, err = polling.communicate(timeout=60)
    finally:
        if polling.poll() is None:
            polling.kill()
            polling.wait()
    assert polling.returncode == 0, err
    answer = json.loads(out)
    claims = jwt.decode(answer["tokens"]["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == client.client_id
    assert claims["preferred_username"] == "alice"
    assert "profile" in answer["tokens"]["scope"].split()
    assert answer["tokens"]["refresh_token"]
    assert answer["claims"]["sub"] == stack.user_id("alice")  # the ID token the library validated
    assert stack.get("/api/me", answer["tokens"]["access_token"]).status_code == 200


def test_denying_on_the_page_ends_the_polling_with_access_denied(stack: Stack, page: Page) -> None:
    client = _device_client(stack)
    polling = client.start("device", scope="profile")
    try:
        assert polling.stderr is not None
        started = json.loads(polling.stderr.readline())
        page.goto(_in_browser(stack, started["verification_uri"]))
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password").fill("wonderland")
        page.get_by_role("button", name="Log in").click()
        page.get_by_label("Code").fill(started["user_code"].lower().replace("-", " "))
        page.get_by_role("button", name="Continue").click()
        page.get_by_role("button", name="Deny").click()
        expect(page.get_by_role("heading", name="Device denied")).to_be_visible()
        out, _ = polling.communicate(timeout=60)
    finally:
        if polling.poll() is None:
            polling.kill()
            polling.wait()
    assert polling.returncode == 3
    assert json.loads(out)["refused"]["error"] == "access_denied"
