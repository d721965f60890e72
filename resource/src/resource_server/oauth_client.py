"""The resource as an OAuth client of the issuer: authorization code flow with PKCE (RFC 7636).

The browser is sent to the issuer's public URL; the code is exchanged, and refresh tokens are
used or revoked, over the back channel (inside compose, http://issuer:8000).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests

log = logging.getLogger(__name__)


class IssuerError(Exception):
    """The issuer refused or could not be reached; the message is safe to show."""


@dataclass(frozen=True)
class AuthorizationRequest:
    """Where to send the browser, and what to remember until it comes back."""

    url: str
    state: str
    verifier: str


class IssuerClient:
    """Talk to the issuer's authorization, token and revocation endpoints."""

    def __init__(
        self,
        *,
        public_issuer: str,
        internal_issuer: str,
        client_id: str,
        redirect_uri: str,
        scope: str,
        timeout: float = 5.0,
    ) -> None:
        self.authorize_url = f"{public_issuer}/authorize"
        self.token_url = f"{internal_issuer}/token"
        self.revoke_url = f"{internal_issuer}/revoke"
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        self.scope = scope
        self.timeout = timeout
        self.session = requests.Session()

    def authorization_request(self) -> AuthorizationRequest:
        """Start the flow: a fresh state and PKCE verifier, and the issuer URL to visit."""
        state = secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": self.redirect_uri,
                "scope": self.scope,
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        return AuthorizationRequest(f"{self.authorize_url}?{query}", state, verifier)

    def exchange(self, code: str, verifier: str) -> dict[str, Any]:
        """Trade an authorization code for tokens."""
        return self._token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "client_id": self.client_id,
                "code_verifier": verifier,
            }
        )

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        """Trade a refresh token for new tokens."""
        return self._token({"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": self.client_id})

    def revoke(self, refresh_token: str) -> None:
        """Revoke a refresh token, ending its login session at the issuer (best effort)."""
        try:
            self.session.post(
                self.revoke_url,
                data={"token": refresh_token, "token_type_hint": "refresh_token", "client_id": self.client_id},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            log.warning("could not revoke at the issuer", extra={"fields": {"reason": type(exc).__name__}})

    def _token(self, form: dict[str, str]) -> dict[str, Any]:
        try:
            response = self.session.post(self.token_url, data=form, timeout=self.timeout)
        except requests.RequestException as exc:
            raise IssuerError("the issuer could not be reached; try again shortly") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise IssuerError(f"the issuer answered HTTP {response.status_code} without JSON") from exc
        if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            description = body.get("error_description", "") if isinstance(body, dict) else ""
            raise IssuerError(f"the issuer refused: {str(description)[:200] or response.status_code}")
        return body
