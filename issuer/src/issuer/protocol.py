"""The issuer's protocol errors: one root, three renderings, one handler (RFC 6749 sections 4.1.2.1 and 5.2).

Every OAuth error the issuer answers is an `OAuthError`, raised where the request fails and
rendered by the one handler `init_app` registers; the error decides how it leaves:

| class                | answered as                                    | raised by                                   |
| -------------------- | ---------------------------------------------- | ------------------------------------------- |
| `OAuthError`         | JSON `{"error", "error_description"}`, no-store | `/token`, `/revoke`, `/introspect` (section 5.2) |
| `AuthorizationError` | a 302 to the client's redirect URI with `error`, `error_description`, `state` and `iss` (section 4.1.2.1, RFC 9207) | `/authorize`, once the client and redirect URI are trusted |
| `PageError`          | an HTML page to the user, never a redirect     | `/authorize` before the redirect URI is trusted, `/logout`, the browser's forms |

An `AuthorizationError` goes only where a `ClientRedirect` points, and `ClientRedirect.registered`
is its only maker: it refuses, with a `PageError`, a client that is unknown or may not use
the code flow and a redirect URI not registered for it exactly. Section 4.1.2.1: the server
MUST NOT redirect the user-agent to an invalid redirection URI.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode

from flask import Flask, Response, make_response, redirect, render_template

from issuer.clients import Client
from shared.errors import ApiError

log = logging.getLogger(__name__)

ResponseMode = Literal["query", "fragment"]


class OAuthError(ApiError):
    """An OAuth 2.0 error of the issuer; as such, an RFC 6749 section 5.2 JSON response (never cached)."""


@dataclass(frozen=True)
class ClientRedirect:
    """Where an authorization response goes: a redirect URI registered for the client, with `state` and `iss`."""

    client: Client
    redirect_uri: str
    state: str | None
    iss: str
    response_mode: ResponseMode = "query"

    @classmethod
    def registered(cls, client: Client | None, redirect_uri: str, *, state: str | None, iss: str) -> ClientRedirect:
        """Return the redirect of a code-flow client to one of its registered URIs, or raise PageError."""
        if client is None or "authorization_code" not in client.grant_types:
            raise PageError(
                "Unknown application", "This application is not registered with the issuer.", error="invalid_client"
            )
        if redirect_uri not in client.redirect_uris:
            log.warning(
                "authorize refused: unregistered redirect_uri", extra={"fields": {"client_id": client.client_id}}
            )
            raise PageError("Invalid redirect", "The redirect address is not registered for this application.")
        return cls(client, redirect_uri, state, iss)

    def send(self, **params: str | None) -> Response:
        """Send the browser to the client with `params`, `state` and `iss` (RFC 9207), never cached."""
        return client_redirect(self.redirect_uri, self.response_mode, **params, state=self.state, iss=self.iss)


class AuthorizationError(OAuthError):
    """An authorization request refused back to the client (RFC 6749 section 4.1.2.1), at a trusted redirect URI."""

    def __init__(self, to: ClientRedirect, description: str, *, error: str = "invalid_request") -> None:
        super().__init__(description, error=error, status=302)
        self.to = to

    def to_response(self) -> Response:
        """Redirect with `error`, `error_description`, `state` and `iss`: the client learns why; the user sees it there."""
        return self.to.send(error=self.error, error_description=self.description)


class PageError(OAuthError):
    """A request the user sees an error page for, never redirected anywhere: the client cannot be trusted with it."""

    def __init__(
        self,
        heading: str,
        text: str,
        *,
        error: str = "invalid_request",
        status: int = 400,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(text, error=error, status=status, headers=headers)
        self.heading = heading

    def to_response(self) -> Response:
        """Render the message page with the error's status and headers."""
        html = render_template("message.html", heading=self.heading, text=self.description, error=True, logout=False)
        response = make_response(html, self.status)
        response.headers["Cache-Control"] = "no-store"  # as every other answer of these endpoints
        response.headers.update(self.headers)
        return response


def not_a_form(mimetype: str) -> OAuthError:
    """The error for a body that is not a form (RFC 6749 3.2), saying when the Content-Type was left out."""
    if not mimetype:
        return OAuthError("the request has no Content-Type: send the parameters as application/x-www-form-urlencoded")
    return OAuthError("send the parameters as application/x-www-form-urlencoded")


def client_redirect(redirect_uri: str, response_mode: ResponseMode = "query", **params: str | None) -> Response:
    """Send the browser to a client's redirect URI with `params` (those not None), never cached."""
    encoded = urlencode({name: value for name, value in params.items() if value is not None})
    if response_mode == "fragment":
        target = f"{redirect_uri}#{encoded}"
    else:
        target = f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{encoded}"
    response = make_response(redirect(target, code=302))
    response.headers["Cache-Control"] = "no-store"
    return response


def _render(exc: OAuthError) -> Response:
    return exc.to_response()


def init_app(app: Flask) -> None:
    """Render every OAuth error of the issuer as the error itself says: JSON, a redirect to the client, or a page."""
    app.register_error_handler(OAuthError, _render)


class InvalidDPoPProof(OAuthError):
    """The token request's DPoP proof is missing, malformed or refused (RFC 9449 section 5: 400 invalid_dpop_proof)."""

    error = "invalid_dpop_proof"


class UseDPoPNonce(OAuthError):
    """The DPoP proof must carry the issuer's current nonce, sent in `DPoP-Nonce` (RFC 9449 section 8)."""

    error = "use_dpop_nonce"

    def __init__(self, nonce: str) -> None:
        super().__init__(
            "the DPoP proof must carry the issuer's nonce: retry with the one in the DPoP-Nonce header",
            headers={"DPoP-Nonce": nonce},
        )
