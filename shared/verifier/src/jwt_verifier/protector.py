"""Who a request is for: the one place an API checks a token (like Authlib's ResourceProtector).

The verifier behind it is local verification (`jwt_verifier.verifier.Verifier` with keys from
the JWKS client) or anything else implementing `TokenVerifier` (the resource's introspection,
say); all raise the errors of `jwt_verifier.errors`, which carry their own status and
challenge. This module logs why a token was refused (its `reason`), once, and lets the errors
pass on unchanged: an integration renders them, a page catches the classes it cares about.
It imports no web framework: `acquire` reads any request object with `headers.getlist()`
and `cookies` (Flask's and Starlette's both have them), `authenticate` takes the header values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from jwt_verifier import observe
from jwt_verifier.dpop_scheme import DPoPPolicy, DPoPRequest, dpop_token, refuse_bound_bearer
from jwt_verifier.errors import (
    DPoPInsufficientUserAuthentication,
    DPoPMissingToken,
    InsufficientScope,
    InsufficientUserAuthentication,
    InvalidToken,
    MissingToken,
    UnknownKey,
    VerificationUnavailable,
)
from jwt_verifier.rfc6750 import bearer_token
from jwt_verifier.stepup import StepUp
from jwt_verifier.verifier import TokenVerifier

log = logging.getLogger(__name__)


class Headers(Protocol):
    """A request's headers: every value of one header by name."""

    def getlist(self, key: str) -> list[str]:
        """Return every value of the header `key`."""
        ...


class HttpRequest(Protocol):
    """What `acquire` reads of a request (a Flask or a Starlette request)."""

    @property
    def headers(self) -> Headers:
        """The request's headers."""
        ...

    @property
    def cookies(self) -> Mapping[str, str]:
        """The request's cookies."""
        ...


class ResourceProtector:
    """Verify the token a request carries and check the scope a resource needs.

    `cookie` names an HttpOnly cookie to read the token from when the request has no
    Authorization header (a browser login's copy of its access token). It is not an RFC 6750
    bearer method: only a GET-only API under SameSite cookies should accept it (no CSRF token).
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        cookie: str | None = None,
        scopes: frozenset[str] = frozenset(),
        dpop: DPoPPolicy | None = None,
    ) -> None:
        self.verifier = verifier
        self.cookie = cookie
        # The API's own scopes: a token carrying none of them grants nothing here, whatever the
        # route asks (deny by default; RFC 9700 section 2.3). Empty: no such floor.
        self.scopes = scopes
        # DPoP (RFC 9449): without a policy the DPoP scheme is not accepted; a DPoP-bound
        # token is refused as a bearer token either way.
        self.dpop = dpop

    def validate(
        self,
        token: str,
        bind: Callable[[dict[str, Any]], object] | None = None,
        authorize: Callable[[dict[str, Any]], object] | None = None,
    ) -> dict[str, Any]:
        """Return the token's verified claims, or raise (and log) why not; count it once either way.

        `bind` checks how the token was sent (a DPoP proof, or bearer use), raising an `InvalidToken`;
        `authorize` what the route demands of a valid token (`authorize()`): a token without
        the scope counts as valid, one whose login falls short of a step-up demand (RFC 9470)
        as invalid, for `insufficient_user_authentication`.
        """
        try:
            claims = self.verifier.verify(token)
            if bind is not None:
                bind(claims)
        except UnknownKey as exc:
            log.info("token refused", extra={"fields": {"reason": exc.reason, "kid": exc.kid}})
            observe.current().verification("invalid", exc.reason)
            raise
        except InvalidToken as exc:
            log.info("token refused", extra={"fields": {"reason": exc.reason, "detail": exc.description}})
            observe.current().verification("invalid", exc.reason)
            raise
        except VerificationUnavailable as exc:
            log.warning("cannot verify tokens now", extra={"fields": {"reason": exc.reason, "detail": str(exc)}})
            observe.current().verification("unavailable", exc.reason)
            raise
        try:
            if authorize is not None:
                authorize(claims)
        except InsufficientUserAuthentication as exc:
            log.info("token refused", extra={"fields": {"reason": exc.reason, "detail": exc.description}})
            observe.current().verification("invalid", exc.reason)
            raise
        except InsufficientScope:
            observe.current().verification("valid", "none")
            raise
        observe.current().verification("valid", "none")
        return claims

    def authorize(self, claims: dict[str, Any], scope: str | None = None, step_up: StepUp | None = None) -> None:
        """Check what a route demands of a valid token: the API's scopes, `scope`, then the login (`step_up`).

        Scope first: a stronger login would not give a missing scope (403 `insufficient_scope`);
        then RFC 9470 (401 `insufficient_user_authentication`).
        """
        granted = str(claims.get("scope", "")).split()
        if self.scopes and self.scopes.isdisjoint(granted):
            log.info("no scope of this API", extra={"fields": {"sub": claims["sub"]}})
            raise InsufficientScope(" ".join(sorted(self.scopes)))
        if scope is not None and scope not in granted:
            log.info("scope missing", extra={"fields": {"sub": claims["sub"], "needed": scope}})
            raise InsufficientScope(scope)
        if step_up is not None:
            step_up.check(claims)

    def acquire(
        self,
        req: HttpRequest,
        scope: str | None = None,
        *,
        dpop: DPoPRequest | None = None,
        step_up: StepUp | None = None,
    ) -> dict[str, Any]:
        """Return the claims of the request's token, which must grant `scope` and meet `step_up` if given."""
        cookies = req.cookies if self.cookie is not None else None  # parsed only when one may be read
        return self.authenticate(req.headers.getlist("Authorization"), cookies, scope, dpop=dpop, step_up=step_up)

    def authenticate(
        self,
        authorization: Sequence[str],
        cookies: Mapping[str, str] | None = None,
        scope: str | None = None,
        *,
        dpop: DPoPRequest | None = None,
        step_up: StepUp | None = None,
    ) -> dict[str, Any]:
        """Return the claims of the token in `authorization` (the header's values) or, failing that, the cookie.

        `dpop` is the request's method, external URL and DPoP headers, for `Authorization: DPoP`;
        `step_up` what the route demands of the login (RFC 9470), after the scope.
        """

        def authorize(claims: dict[str, Any]) -> None:
            self.authorize(claims, scope, step_up)

        policy = self.dpop
        try:
            token = bearer_token(authorization)
            bound = dpop_token(authorization) if token is None and policy is not None else None
        except InvalidToken as exc:
            observe.current().verification("invalid", exc.reason)
            raise
        if token is None and bound is None and self.cookie is not None and cookies is not None:
            token = cookies.get(self.cookie)
        if bound is not None and policy is not None:
            try:
                return self.validate(bound, lambda verified: policy.check_proof(bound, verified, dpop), authorize)
            except InvalidToken as exc:
                raise policy.challenge(exc) from exc
            except InsufficientUserAuthentication as exc:  # the same parameters, in the DPoP scheme's challenge
                raise DPoPInsufficientUserAuthentication(exc, algs=policy.algs) from exc
        if token is not None:
            return self.validate(token, policy.check_bearer if policy is not None else refuse_bound_bearer, authorize)
        if policy is not None and policy.required:
            raise DPoPMissingToken(algs=policy.algs)
        raise MissingToken()
