"""The resource as an OAuth client of the issuer: authorization code flow with PKCE (RFC 7636).

The browser is sent to the issuer's public URL; the code is exchanged, and refresh tokens are
used or revoked, over the back channel (inside compose, http://issuer:8000).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests

from resource_server.settings import ResourceSettings
from shared import tracing
from shared.oauth_client import post_token
from shared.pkce import new_verifier, s256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuthorizationRequest:
    """Where to send the browser, and what to remember until it comes back."""

    url: str
    state: str
    verifier: str


class IssuerClient:
    """Talk to the issuer's authorization, token and revocation endpoints."""

    def __init__(self, settings: ResourceSettings) -> None:
        # The browser is sent to the public URL; the back channel uses the internal one.
        self.authorize_url = f"{settings.issuer}/authorize"
        self.token_url = f"{settings.issuer_internal_url}/token"
        self.revoke_url = f"{settings.issuer_internal_url}/revoke"
        self.client_id = settings.client_id
        self.redirect_uri = settings.redirect_uri
        self.scope = settings.scope
        self.timeout = settings.issuer_timeout
        self.session = tracing.session()

    def authorization_request(self) -> AuthorizationRequest:
        """Start the flow: a fresh state and PKCE verifier, and the issuer URL to visit."""
        state = secrets.token_urlsafe(24)
        verifier = new_verifier()
        challenge = s256(verifier)
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
        return post_token(self.session, self.token_url, form, self.timeout)
