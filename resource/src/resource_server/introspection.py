"""The other design: ask the issuer about every token (RFC 7662 token introspection).

Kept so the README can compare it with local verification (`RESOURCE_VERIFICATION`). Each
check is an HTTP round trip to the issuer, authenticated with a client secret: the resource
then holds a credential and stops working when the issuer does. What it gains is that the
issuer's answer is current (a deleted user's tokens stop at once).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import requests

from jwt_verifier.errors import InvalidToken, Reason, TokenExpired, VerificationUnavailable
from jwt_verifier.jose import b64url_decode
from resource_server.settings import ResourceSettings
from shared import tracing
from shared.httpread import read_within
from shared.jsonread import read_json

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 64 * 1024
# RFC 7662 section 2.2 members that describe the answer, not the token.
_RESPONSE_MEMBERS = {"active", "token_type", "username"}


class IntrospectionUnavailable(VerificationUnavailable):
    """The issuer could not answer an introspection request: a 503 of ours, not a 401."""


class IntrospectingVerifier:
    """Verify tokens by asking the issuer's introspection endpoint about each one (a TokenVerifier)."""

    def __init__(self, settings: ResourceSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.url = settings.introspection_url
        # client_secret_basic: both parts form-urlencoded first (RFC 6749 section 2.3.1).
        self._auth = (quote(settings.introspection_client_id, safe=""), quote(settings.introspection_secret, safe=""))
        self.issuer = settings.issuer
        self.audience = settings.verifier.audience
        self.leeway = settings.verifier.leeway
        self.max_token_bytes = settings.verifier.max_token_bytes
        self.timeout = settings.issuer_timeout
        self.clock = clock
        self._local = threading.local()

    def _session(self) -> requests.Session:
        # One keep-alive connection per thread: requests' sessions are not meant to be shared.
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = tracing.session()
        return session

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims of an active token, or raise InvalidToken (503 when the issuer fails)."""
        if len(token) > self.max_token_bytes:
            raise InvalidToken(f"the token is larger than {self.max_token_bytes} bytes", reason=Reason.TOO_LARGE)
        answer = self._ask(token)
        if answer.get("active") is not True:
            if self._expired(token):
                raise TokenExpired("the token has expired")
            raise InvalidToken("the token is not active", reason=Reason.INACTIVE)
        aud = answer.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if answer.get("iss") != self.issuer or self.audience not in audiences:
            raise InvalidToken("the token is not meant for this API", reason=Reason.WRONG_AUDIENCE)
        return {name: value for name, value in answer.items() if name not in _RESPONSE_MEMBERS}

    def _ask(self, token: str) -> dict[str, Any]:
        try:
            # The whole answer within the timeout, however slowly it comes (shared.httpread).
            response = read_within(
                self._session(),
                "POST",
                self.url,
                data={"token": token, "token_type_hint": "access_token"},
                auth=self._auth,
                timeout=self.timeout,
                max_bytes=MAX_ANSWER_BYTES,
            )
        except requests.RequestException as exc:
            raise IntrospectionUnavailable(f"cannot reach the introspection endpoint: {type(exc).__name__}") from exc
        if response.status != 200:
            log.error("introspection failed", extra={"fields": {"status": response.status}})
            raise IntrospectionUnavailable(f"the introspection endpoint answered HTTP {response.status}")
        if response.body is None:
            raise IntrospectionUnavailable(f"the introspection answer is larger than {MAX_ANSWER_BYTES} bytes")
        try:
            answer = read_json(response.body)
        except ValueError as exc:
            raise IntrospectionUnavailable("the introspection endpoint answered something other than JSON") from exc
        if not isinstance(answer, dict):
            raise IntrospectionUnavailable("the introspection endpoint answered something other than an object")
        return answer

    def _expired(self, token: str) -> bool:
        """Return whether an inactive token's own (unverified) `exp` has passed.

        Only tells the pages to try their refresh token; it never makes a token acceptable.
        """
        try:
            claims = json.loads(b64url_decode(token.split(".")[1]))
            return bool(int(claims["exp"]) <= self.clock() - self.leeway)
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError):
            return False
