"""Token introspection (RFC 7662): the alternative to local verification, kept for comparison.

A resource set to `RESOURCE_VERIFICATION=introspection` asks here about every token instead of
verifying it itself (docs/performance.md measures both designs).

- Callers must authenticate (section 2.1 MUST, against token scanning) with HTTP Basic client
  credentials (`client_secret_basic`, RFC 6749 section 2.3.1): `ISSUER_INTROSPECTION_CLIENT_ID`
  and `ISSUER_INTROSPECTION_SECRET`. Network position is not trusted: in compose, every
  container on the network and the host's published port reach the issuer alike. Without a
  secret configured the endpoint does not exist (404).
- A token is active when the resource's own verification would accept it: the same
  `jwt_verifier.verifier` policy, with keys from this issuer's published set, and its subject
  still exists: the user of that stable id, or, for a client's own token (`sub` equal to
  `client_id`, RFC 9068 section 2.2), that client; and it has not been revoked (its index in
  its status list is not set, issuer.statuslist). An active token gets its claims and, for a
  user's, `username` (section 2.2); anything else gets `{"active": false}` and nothing more,
  whoever asked.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask_wtf.csrf import CSRFProtect

from issuer import extensions, statuslist
from issuer.client_auth import basic_credentials
from issuer.protocol import OAuthError, not_a_form
from issuer.settings import IntrospectionSettings, IssuerSettings
from jwt_verifier.errors import JwkError, Reason
from jwt_verifier.jose import load_verification_key
from jwt_verifier.verifier import InvalidToken, Verifier

log = logging.getLogger(__name__)

bp = Blueprint("introspect", __name__)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class PublishedKeys:
    """Public keys of the published JWKS by kid, each parsed once."""

    MAX_KEYS = 64

    def __init__(self) -> None:
        self._parsed: dict[tuple[str, str], rsa.RSAPublicKey] = {}

    def get(self, kid: str) -> rsa.RSAPublicKey:
        """Return the published key named `kid` (next, active or retiring), or raise InvalidToken."""
        for jwk in extensions.current().keys.published():
            if jwk["kid"] != kid:
                continue
            key = self._parsed.get((kid, jwk["n"]))
            if key is None:
                try:
                    _, key = load_verification_key(dict(jwk))
                except JwkError as exc:
                    raise InvalidToken("the token's key is not usable", reason=Reason.UNKNOWN_KEY) from exc
                if len(self._parsed) >= self.MAX_KEYS:
                    self._parsed = {}
                self._parsed[(kid, jwk["n"])] = key
            return key
        raise InvalidToken("the token's key is not published", reason=Reason.UNKNOWN_KEY)


def init_app(app: Flask) -> None:
    """Register the endpoint (exempt from CSRF: it takes no cookies) with its settings."""
    issuer: IssuerSettings = extensions.of(app).settings
    introspection = issuer.introspection
    app.extensions["issuer.introspection"] = introspection
    app.extensions["issuer.introspection_verifier"] = Verifier(
        PublishedKeys(), issuer=issuer.url, audience=issuer.audience, leeway=introspection.leeway
    )
    app.register_blueprint(bp)
    csrf = app.extensions.get("csrf")
    if isinstance(csrf, CSRFProtect):
        csrf.exempt(bp)


def _settings() -> IntrospectionSettings:
    return cast(IntrospectionSettings, current_app.extensions["issuer.introspection"])


def _verifier() -> Verifier:
    return cast(Verifier, current_app.extensions["issuer.introspection_verifier"])


def _authenticate(settings: IntrospectionSettings) -> None:
    """Check the caller's client_secret_basic credentials in constant time, or raise 401."""
    given_id, given_secret = basic_credentials(request) or ("", "")
    id_ok = hmac.compare_digest(given_id.encode(), settings.client_id.encode())
    secret_ok = hmac.compare_digest(given_secret.encode(), settings.secret.encode())
    if not (id_ok and secret_ok):
        log.warning("introspection refused", extra={"fields": {"reason": "bad client credentials"}})
        raise OAuthError(
            "client authentication failed",
            error="invalid_client",
            status=401,
            headers={"WWW-Authenticate": 'Basic realm="introspection"'},
        )


def _token() -> str:
    if request.mimetype != "application/x-www-form-urlencoded":
        raise not_a_form(request.mimetype)
    values = request.form.getlist("token")
    if len(values) > 1:
        raise OAuthError("parameter 'token' was sent more than once")
    if len(values) != 1 or not values[0]:
        raise OAuthError("exactly one 'token' parameter is required")
    return values[0]


def active_claims(token: str) -> dict[str, Any] | None:
    """Return the claims of a token the resource's own verification would accept, or None."""
    try:
        return _verifier().verify(token)
    except InvalidToken:
        return None


def _subject(claims: dict[str, Any]) -> dict[str, str] | None:
    """Return what introspection adds about a token's existing subject (`username` for a user), or None.

    A client's own token names the client as `sub` (RFC 9068 section 2.2), which no user's id
    can be; any other `sub` is a user's stable id, looked up as such (never as a name).
    """
    issuer = extensions.current()
    sub, client_id = claims["sub"], claims.get("client_id")
    if sub == client_id:
        return {} if issuer.clients.get(sub) is not None else None
    user = issuer.users.get_by_id(sub)
    return None if user is None else {"username": user.username}


@bp.post("/introspect")
def introspect() -> Response:
    """Tell an authenticated resource whether a token is active, and its claims if it is."""
    settings = _settings()
    if not settings.enabled:
        raise OAuthError("token introspection is not enabled", error="not_found", status=404)
    _authenticate(settings)
    claims = active_claims(_token())
    body: dict[str, Any] = {"active": False}
    if claims is not None:
        # Unlike a local check, introspection sees a deleted user or client: its tokens are inactive;
        # and a revoked token (its status list index set, issuer.statuslist).
        subject = _subject(claims)
        if subject is not None and not statuslist.current().revoked(claims):
            body = {"active": True, "token_type": "Bearer", **subject, **claims}
    response = jsonify(body)
    response.headers.update(NO_STORE)
    return response
