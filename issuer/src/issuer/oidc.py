"""OpenID Connect Core 1.0 on top of the OAuth endpoints: identity scopes, ID tokens, `/userinfo`.

Scopes. `openid`, `profile` and `email` (section 5.4) are about the user, not an API. A
scope list mixes both kinds, so the rule is:

- a scope an API defines is that API's scope, narrowed as always: the user and the client
  must both be allowed it (the default API defines `profile`: asking for `openid profile`
  needs the user's `profile` scope, as before);
- an identity scope the API does not define is granted to any user, when the request asks
  for `openid` too and the client may ask for it (a client registered with a scope list
  needs `openid`, `profile`, `email` in it);
- a request without `scope` is granted the API scopes only: no `openid`, so no ID token.

Identity scopes travel in the access token's `scope` with the API's: the API ignores scopes
it does not define, and `/userinfo` reads them. A token granted `openid` also names
`/userinfo` in its `aud` (a list: the API, then `{issuer}/userinfo`), so `/userinfo` verifies
it with the same `jwt_verifier` policy as every API, with an audience of its own. A
DPoP-bound token (`cnf.jkt`) is used there as at any API (RFC 9449 section 7):
`Authorization: DPoP` with a proof of `GET|POST {issuer}/userinfo` signed by its key, checked
by `jwt_verifier.dpop_scheme` with the token endpoint's replay table, and nonces when
`ISSUER_DPOP_NONCE` is on; as a bearer token it is refused.

`sub` is the user's stable id (section 2: never reassigned); the name is `preferred_username`.
ID tokens are minimal (the registered claims, `auth_time`, `acr`, `amr`, `sid`, `nonce`, `at_hash`): the
claims of `profile` and `email` are at `/userinfo` (section 5.4), read with the access token
issued beside the ID token.

ID tokens come only from the authorization code flow (and the device grant) and refreshes of
their grants: the password grant has no browser login to speak of (no `sid`).

`acr` (section 2) is one of `acr_values_supported`, `single-factor` < `multi-factor`, derived
from the login's RFC 8176 `amr` by issuer.assurance; the access tokens carry the same three
claims (RFC 9068 section 2.2.1). A request's `acr_values` (section 3.1.2.1) is honoured at
`/authorize` (issuer.browser); the token says what the login reached, which may be less.

An ID token comes back as the `id_token_hint` of an end-session request (RP-Initiated Logout
1.0 section 2): `logout_hint_claims` checks it was signed by this issuer, expired or not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask_wtf.csrf import CSRFProtect

from issuer import assurance, dpop, extensions, jose, statuslist
from issuer.clients import Client
from issuer.introspect import PublishedKeys
from issuer.jose import END_SESSION_HINT, JwtRefused

# Defined beside the narrowing they also rule; used here and as `oidc.OPENID`, `oidc.kept_on_refresh`.
from issuer.narrowing import IDENTITY_SCOPES as IDENTITY_SCOPES
from issuer.narrowing import OPENID as OPENID
from issuer.narrowing import kept_on_refresh as kept_on_refresh
from issuer.sessions import public_id
from issuer.tokens import Authentication, Grant, Login, mint_id_token
from issuer.users import User
from jwt_verifier.dpop_scheme import DPoPPolicy, dpop_request
from jwt_verifier.errors import InvalidToken, Reason, TokenRevoked
from jwt_verifier.flask import sent_target
from jwt_verifier.protector import ResourceProtector
from jwt_verifier.verifier import Verifier

log = logging.getLogger(__name__)

bp = Blueprint("oidc", __name__)

# Section 5.4: the claims each scope gives at /userinfo (`sub` always).
SCOPE_CLAIMS = {"profile": ("name", "preferred_username", "updated_at"), "email": ("email", "email_verified")}
CLAIMS_SUPPORTED = ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "amr", "nonce", "at_hash", "azp", "sid"] + [
    claim for claims in SCOPE_CLAIMS.values() for claim in claims
]


MAX_HINT_BYTES = 8 * 1024
PROMPT_VALUES = ("none", "login", "consent")


class InvalidHint(ValueError):
    """An `id_token_hint` is not an ID token of this issuer; the message says why (safe to show)."""


@dataclass(frozen=True)
class Hint:
    """What an end-session request learns from a valid `id_token_hint`."""

    client_id: str
    sid: str | None
    sub: str  # whom the relying party means; who is at the browser only its own session says


def logout_hint(token: str) -> Hint:
    """Return the client and session an `id_token_hint` names, or raise InvalidHint.

    RP-Initiated Logout 1.0 section 2: the OP checks it issued the token, and accepts an
    expired one (a relying party logging out often holds only a stale ID token). The header
    must say `typ` JWT: an access token is no hint. The key must be one the JWKS publishes.
    """
    if len(token) > MAX_HINT_BYTES or not token.isascii():
        raise InvalidHint("the ID token hint is malformed")
    keys: PublishedKeys = current_app.extensions["issuer.published_keys"]
    try:
        claims = jose.read(token, END_SESSION_HINT, keys.get, issuer=extensions.current().settings.url, audience=None)
    except JwtRefused as exc:
        if exc.reason is Reason.BAD_HEADER:
            raise InvalidHint("the ID token hint is not an ID token") from exc
        raise InvalidHint("the ID token hint was not issued by this issuer") from exc
    audience, sid, subject = claims["aud"], claims.get("sid"), claims["sub"]
    if isinstance(audience, list) and len(audience) == 1:
        audience = audience[0]
    if not isinstance(audience, str) or not (sid is None or isinstance(sid, str)) or not isinstance(subject, str):
        raise InvalidHint("the ID token hint is not an ID token")
    return Hint(audience, sid, subject)


def is_subject(sub: str, user: User) -> bool:
    """Return whether an ID token's `sub` names `user` (its stable id): the one place that compares them."""
    return sub == user.id


def granted_scopes(
    requested: frozenset[str] | None, allowed: frozenset[str], api_scopes: frozenset[str], client: Client
) -> frozenset[str]:
    """Return what a request is granted: the allowed API scopes asked for, and identity scopes with `openid`.

    `allowed` is what the user and client may have of the API (`client.narrow(user & api)`).
    """
    if requested is None:
        return allowed
    granted = requested & allowed
    if OPENID in requested:
        granted |= client.narrow(requested & (IDENTITY_SCOPES - api_scopes))
    return granted


def is_openid(scope: str) -> bool:
    """Return whether a granted scope string includes `openid`."""
    return OPENID in scope.split()


def userinfo_audience() -> str:
    """Return the `aud` value that lets an access token be used at `/userinfo`."""
    return f"{extensions.current().settings.url}/userinfo"


def identity_claims(user: User, scope: str) -> dict[str, Any]:
    """Return the claims about `user` that a granted scope string gives (section 5.4), `sub` aside."""
    scopes = set(scope.split())
    claims: dict[str, Any] = {}
    if "profile" in scopes:
        claims.update(preferred_username=user.username, updated_at=user.updated_at)
        if user.name is not None:
            claims["name"] = user.name
    if "email" in scopes and user.email is not None:
        claims.update(email=user.email, email_verified=user.email_verified)
    return claims


def id_token(
    grant: Grant, access_token: str, session_hash: str | None, nonce: str | None, login: Login | None
) -> str | None:
    """Return an ID token for a grant with `openid` that came from the browser login `login` of a session, else None."""
    if session_hash is None or not is_openid(grant.scope):
        return None
    if login is None:
        return None  # the session is gone (its user deleted): nothing to say who logged in
    settings = extensions.current().settings
    # Minimal: the profile and email claims are the UserInfo endpoint's to give, since an access
    # token comes with every ID token here (OpenID Connect Core 1.0 section 5.4).
    token, _ = mint_id_token(
        extensions.current().keys.signing_key(),
        grant,
        Authentication(login.auth_time, public_id(session_hash), nonce, login.amr),
        issuer=settings.url,
        access_token=access_token,
        ttl=settings.access_token_ttl,  # issued with the access token, it lives as long
    )
    log.info("issued id token", extra={"fields": {"sub": grant.subject, "client_id": grant.client_id}})
    return token


def provider_metadata(document: dict[str, Any]) -> dict[str, Any]:
    """Extend the RFC 8414 document into OpenID Provider Metadata (Discovery 1.0 section 3)."""
    url = extensions.current().settings.url
    return {
        **document,
        "userinfo_endpoint": f"{url}/userinfo",
        "end_session_endpoint": f"{url}/logout",
        "prompt_values_supported": list(PROMPT_VALUES),
        "acr_values_supported": list(assurance.ACR_VALUES_SUPPORTED),
        "scopes_supported": sorted(IDENTITY_SCOPES | _api_scopes()),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": CLAIMS_SUPPORTED,
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
    }


def _api_scopes() -> frozenset[str]:
    return frozenset(scope for api in extensions.current().apis.list() for scope in api.scopes)


@bp.route("/userinfo", methods=["GET", "POST"])
def userinfo() -> Response:
    """Return the claims about the token's user that its scopes allow (OpenID Connect Core 1.0 5.3)."""
    protector: ResourceProtector = current_app.extensions["issuer.userinfo"]
    url = extensions.current().settings.url
    proofs = request.headers.getlist("DPoP")
    path = request.script_root + request.path
    claims = protector.acquire(request, OPENID, dpop=dpop_request(url, request.method, path, proofs, sent_target()))
    # As introspection: a token the issuer revoked (its status list index set) is refused here too.
    if statuslist.current().revoked(claims):
        log.info("token refused", extra={"fields": {"reason": Reason.REVOKED, "detail": "the token has been revoked"}})
        raise TokenRevoked()
    # By the stable id: a new user with a deleted user's name is someone else, and reads nothing here.
    user = extensions.current().users.get_by_id(str(claims["sub"]))
    if user is None:
        raise InvalidToken("the token's user no longer exists")
    body: dict[str, Any] = {"sub": user.id, **identity_claims(user, str(claims.get("scope", "")))}
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    """Register `/userinfo` (exempt from CSRF: it takes a bearer token, no cookies) and its verifier."""
    settings = extensions.of(app).settings
    keys = PublishedKeys()
    app.extensions["issuer.published_keys"] = keys  # also what end-session hints are checked with
    verifier = Verifier(keys, issuer=settings.url, audience=f"{settings.url}/userinfo")
    checks: dpop.TokenEndpointDPoP = app.extensions["issuer.dpop"]
    # Proofs are remembered where the token endpoint's are (one table, every replica).
    policy = DPoPPolicy(
        algorithms=checks.algorithms,
        max_age=dpop.MAX_AGE,
        leeway=dpop.LEEWAY,
        required=False,
        replay=checks.proofs,
        nonces=checks.nonces if checks.nonce_required else None,
    )
    app.extensions["issuer.userinfo"] = ResourceProtector(verifier, dpop=policy)
    app.register_blueprint(bp)
    csrf = app.extensions.get("csrf")
    if isinstance(csrf, CSRFProtect):
        csrf.exempt(bp)
