"""The resource as an OpenID Connect client of the issuer: code flow with PKCE (RFC 7636) and a nonce.

The browser is sent to the issuer's public URL (`/authorize`, and `/logout` for RP-Initiated
Logout 1.0); the code is exchanged, refresh tokens are used or revoked, and `/userinfo` is read,
over the back channel (inside compose, http://issuer:8000). The ID tokens are checked by
`resource_server.oidc`.

With a browser session's DPoP key (`resource_server.session_key`) the authorization request
names its thumbprint (`dpop_jkt`, RFC 9449 section 10), the token requests carry a proof of
`POST {issuer}/token` and `/userinfo` gets the token as `Authorization: DPoP` with a proof of
`GET {issuer}/userinfo` (the public URLs the issuer checks, whatever URL the request goes to).
A server that asks for its nonce (`use_dpop_nonce`) is asked once more, with it.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri

from resource_server.settings import ResourceSettings
from shared import tracing
from shared.dpop_client import DPoPKey, ServerNonces
from shared.httpread import read_within
from shared.oauth_client import MAX_ANSWER_BYTES, DPoPNonceAsked, post_token, read_answer, read_answer_headers
from shared.pkce import new_verifier, s256

log = logging.getLogger(__name__)

# The page is viewed far more often than a login changes: a UserInfo answer is kept this long
# (seconds) for its access token, so a name changed at the issuer shows within a minute.
USERINFO_TTL = 60.0
USERINFO_KEPT = 1024  # answers kept at most, the oldest forgotten first


class _RecentAnswers:
    """UserInfo answers kept briefly, keyed by a digest of the access token (never the token)."""

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl, self.size = ttl, size
        self._answers: dict[bytes, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(access_token: str) -> bytes:
        return hashlib.sha256(access_token.encode()).digest()

    def get(self, key: bytes) -> dict[str, Any] | None:
        with self._lock:
            kept = self._answers.get(key)
            if kept is None or kept[0] <= time.monotonic():
                self._answers.pop(key, None)
                return None
            return kept[1]

    def put(self, key: bytes, answer: dict[str, Any]) -> None:
        with self._lock:
            self._answers.pop(key, None)
            while len(self._answers) >= self.size:
                del self._answers[next(iter(self._answers))]
            self._answers[key] = (time.monotonic() + self.ttl, answer)


@dataclass(frozen=True)
class AuthorizationRequest:
    """Where to send the browser, and what to remember until it comes back."""

    url: str
    state: str
    verifier: str
    nonce: str


class IssuerClient:
    """Talk to the issuer's authorization, token and revocation endpoints."""

    def __init__(self, settings: ResourceSettings) -> None:
        # The browser is sent to the public URL; the back channel uses the internal one.
        self.authorize_url = f"{settings.issuer}/authorize"
        self.end_session_url = settings.end_session_endpoint
        self.post_logout_redirect_uri = settings.post_logout_redirect_uri
        self.token_url = f"{settings.issuer_internal_url}/token"
        self.revoke_url = f"{settings.issuer_internal_url}/revoke"
        self.userinfo_url = f"{settings.issuer_internal_url}/userinfo"
        # What DPoP proofs name (`htu`): the issuer's public URLs.
        self.token_proof_url = f"{settings.issuer}/token"
        self.userinfo_proof_url = f"{settings.issuer}/userinfo"
        self.nonces = ServerNonces()  # the issuer's last DPoP nonce, for every session's key
        self.client_id = settings.client_id
        self.redirect_uri = settings.redirect_uri
        self.scope = settings.login_scope
        self.timeout = settings.issuer_timeout
        self.session = tracing.session()
        self._userinfo = _RecentAnswers(USERINFO_TTL, USERINFO_KEPT)

    def authorization_request(
        self, dpop_jkt: str | None = None, *, acr_values: tuple[str, ...] = (), max_age: int | None = None
    ) -> AuthorizationRequest:
        """Start the flow: a fresh state, PKCE verifier and nonce, and the issuer URL to visit (binding the code to `dpop_jkt`).

        `acr_values` and `max_age` (OpenID Connect Core 1.0 section 3.1.2.1) ask for the login
        an API's RFC 9470 challenge named: a step-up.
        """
        extra: dict[str, str] = {}
        if dpop_jkt is not None:
            extra["dpop_jkt"] = dpop_jkt
        if acr_values:
            extra["acr_values"] = " ".join(acr_values)
        if max_age is not None:
            extra["max_age"] = str(max_age)
        state = secrets.token_urlsafe(24)
        verifier = new_verifier()
        nonce = secrets.token_urlsafe(24)
        url = prepare_grant_uri(
            self.authorize_url,
            self.client_id,
            "code",
            redirect_uri=self.redirect_uri,
            scope=self.scope,
            state=state,
            nonce=nonce,
            code_challenge=s256(verifier),
            code_challenge_method="S256",
            **extra,
        )
        return AuthorizationRequest(str(url), state, verifier, nonce)

    def end_session_url_for(self, id_token: str | None, state: str) -> str:
        """Return the issuer's end-session URL (RP-Initiated Logout 1.0 section 2) that comes back with `state`."""
        params = {
            "client_id": self.client_id,
            "post_logout_redirect_uri": self.post_logout_redirect_uri,
            "state": state,
        }
        if id_token is not None:
            params = {"id_token_hint": id_token, **params}
        return f"{self.end_session_url}?{urlencode(params)}"

    def exchange(self, code: str, verifier: str, dpop: DPoPKey | None = None) -> dict[str, Any]:
        """Trade an authorization code for tokens (bound to `dpop`, if given)."""
        return self._token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "client_id": self.client_id,
                "code_verifier": verifier,
            },
            dpop,
        )

    def refresh(self, refresh_token: str, dpop: DPoPKey | None = None) -> dict[str, Any]:
        """Trade a refresh token for new tokens (with a proof by `dpop`, if given: the key the family is bound to)."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": self.client_id}
        return self._token(form, dpop)

    def revoke(self, refresh_token: str) -> None:
        """Revoke a refresh token, ending its login session at the issuer (best effort)."""
        try:
            read_within(
                self.session,
                "POST",
                self.revoke_url,
                data={"token": refresh_token, "token_type_hint": "refresh_token", "client_id": self.client_id},
                timeout=self.timeout,
                max_bytes=MAX_ANSWER_BYTES,
            )
        except requests.RequestException as exc:
            log.warning("could not revoke at the issuer", extra={"fields": {"reason": type(exc).__name__}})

    def userinfo(self, access_token: str, dpop: DPoPKey | None = None) -> dict[str, Any] | None:
        """Return the issuer's UserInfo answer for an access token (OpenID Connect Core 1.0 5.3), or None.

        Best effort, within `issuer_timeout`: the page shows who logged in without the name and
        address when the issuer cannot say (unreachable, slow, refusing, garbled). An answer is
        kept for USERINFO_TTL seconds, so viewing the page again does not ask again. With `dpop`
        (the key a bound token is bound to) the token goes with a proof.
        """
        key = self._userinfo.key(access_token)
        if (kept := self._userinfo.get(key)) is not None:
            return kept
        try:
            if dpop is None:
                status, body = read_answer(
                    self.session,
                    "GET",
                    self.userinfo_url,
                    timeout=self.timeout,
                    headers={"Authorization": f"Bearer {access_token}"},
                )
            else:
                status, body = self._userinfo_with_proof(access_token, dpop)
        except requests.RequestException as exc:
            log.warning("could not read userinfo at the issuer", extra={"fields": {"reason": type(exc).__name__}})
            return None
        if status != 200 or not isinstance(body, dict):
            log.info("userinfo not given", extra={"fields": {"status": status}})
            return None
        self._userinfo.put(key, body)
        return body

    def _userinfo_with_proof(self, access_token: str, dpop: DPoPKey) -> tuple[int, Any]:
        url = self.userinfo_proof_url
        for attempt in (1, 2):
            headers = {"Authorization": f"DPoP {access_token}", "DPoP": dpop.proof("GET", url, access_token)}
            status, answer_headers, body = read_answer_headers(
                self.session, "GET", self.userinfo_url, timeout=self.timeout, headers=headers
            )
            if attempt == 1 and dpop.nonce_asked(url, status, answer_headers, body):
                continue  # once more, with the nonce
            dpop.remember_nonce(url, answer_headers)
            break
        return status, body

    def _token(self, form: dict[str, str], dpop: DPoPKey | None = None) -> dict[str, Any]:
        try:
            return post_token(
                self.session, self.token_url, form, self.timeout, dpop=dpop, proof_url=self.token_proof_url
            )
        except DPoPNonceAsked:
            # Once more: the key now holds the issuer's nonce (a refused proof spends no code or token).
            return post_token(
                self.session, self.token_url, form, self.timeout, dpop=dpop, proof_url=self.token_proof_url
            )
