"""The resource's browser login against an issuer that wants its DPoP nonce: each request is made once more, with it."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import requests

from tests.support.stack import Stack

_CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def _follow(browser: requests.Session, url: str, expected: int = 302) -> str:
    answer = browser.get(url, allow_redirects=False, timeout=10)
    assert answer.status_code == expected, answer.text
    return str(answer.headers["Location"])


def test_the_browser_login_works_when_the_issuer_requires_dpop_nonces(nonce_stack: Stack) -> None:
    stack = nonce_stack
    public = stack.resource_url.replace("127.0.0.1", "localhost")  # the registered redirect URI's host
    with requests.Session() as browser:
        at_issuer = _follow(browser, f"{public}/login")
        assert "dpop_jkt=" in at_issuer
        login_form = _follow(browser, at_issuer)
        issuer = f"{urlsplit(at_issuer).scheme}://{urlsplit(at_issuer).netloc}"
        match = _CSRF_INPUT.search(browser.get(f"{issuer}{urlsplit(login_form).path}", timeout=10).text)
        assert match is not None
        form = {"csrf_token": match.group(1), "username": "alice", "password": "wonderland"}
        posted = browser.post(f"{issuer}/login", data=form, allow_redirects=False, timeout=10)
        assert posted.status_code == 303, posted.text
        back = urlsplit(posted.headers["Location"])
        callback = _follow(browser, f"{issuer}{back.path}?{back.query}")
        assert _follow(browser, callback, 303) == "/"
        page = browser.get(f"{public}/", timeout=10)
        assert page.status_code == 200, page.text
        assert "<h1>Hello, alice</h1>" in page.text
        # /userinfo asked for its nonce too, and was asked again with it.
        assert '<dd id="email">alice@example.com</dd>' in page.text

        # A refresh (the access cookie gone, as it goes when its token expires) proves the key with the nonce too.
        (access,) = [cookie for cookie in browser.cookies if cookie.name == "rs_access"]
        browser.cookies.clear(domain=access.domain, path=access.path, name=access.name)
        page = browser.get(f"{public}/", timeout=10)
        assert "<h1>Hello, alice</h1>" in page.text, page.text
        assert browser.cookies.get("rs_access")
