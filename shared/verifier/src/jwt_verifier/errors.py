"""The library's one exception hierarchy: every refusal carries its reason, OAuth error, HTTP status and challenge.

Framework-free: an integration (`jwt_verifier.flask`, `jwt_verifier.fastapi`) renders an error as
`{"error": error, "error_description": description}` JSON with `status` and
`response_headers()`; metrics, logs and audit read `reason`, a stable word from `Reason`, never
the message text. Callers catch a class, never read a status back.

    JwtVerifierError              the root: everything this library raises
    ├── BearerError               RFC 6750 section 3: answered with a `WWW-Authenticate: Bearer` challenge
    │   ├── MissingToken          401, no error code: no token was sent (section 3.1)
    │   ├── InvalidRequest        400 invalid_request: the token was sent in a forbidden way
    │   ├── InsufficientScope     403 insufficient_scope
    │   ├── InsufficientUserAuthentication  401 insufficient_user_authentication (RFC 9470 step-up)
    │   └── InvalidToken          401 invalid_token: the one "bad token" branch (its reason says why)
    │       ├── TokenExpired      the token was valid but its `exp` has passed (a refresh may help)
    │       ├── UnknownKey        the token names a `kid` the issuer does not publish
    │       ├── TokenRevoked      the token's status list marks it revoked or suspended (`jwt_verifier.status`)
    │       └── StatusListInvalid the token's status list cannot be trusted or read (forged, malformed)
    ├── VerificationUnavailable   503 temporarily_unavailable: ours to fix, not the client's
    │   ├── KeysUnavailable       no verification key could be loaded from the issuer yet
    │   ├── JwksFetchError        one JWKS fetch failed (the JWKS client keeps the keys it has)
    │   └── StatusUnavailable     the token's status list cannot be had, nor a recent enough copy
    └── JwkError                  a JWK is not a usable RS256 verification key (also a ValueError)

DPoP (RFC 9449) refusals (`DPoPError`, a `BearerError`) are answered with a `WWW-Authenticate: DPoP` challenge naming the
proof algorithms accepted (`algs`, section 7.1): `InvalidDPoPProof` (401 invalid_dpop_proof),
`UseDPoPNonce` (401 use_dpop_nonce with a `DPoP-Nonce` header, section 9), both `InvalidToken`s
(the one "bad token" branch, with their own error code), and `DPoPInvalidToken`,
`DPoPMissingToken` and `DPoPInsufficientUserAuthentication`, the `InvalidToken`, `MissingToken`
and `InsufficientUserAuthentication` of a DPoP request.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "REALM",
    "RETRY_AFTER_SECONDS",
    "BearerError",
    "DPoPError",
    "DPoPInsufficientUserAuthentication",
    "DPoPInvalidToken",
    "DPoPMissingToken",
    "InsufficientScope",
    "InsufficientUserAuthentication",
    "InvalidDPoPProof",
    "InvalidRequest",
    "InvalidToken",
    "JwkError",
    "JwksFetchError",
    "JwtVerifierError",
    "KeysUnavailable",
    "MissingToken",
    "Reason",
    "StatusListInvalid",
    "StatusUnavailable",
    "TokenExpired",
    "TokenRevoked",
    "UnknownKey",
    "UseDPoPNonce",
    "VerificationUnavailable",
    "bearer_challenge",
    "dpop_challenge",
]

REALM = "jwt-split"
RETRY_AFTER_SECONDS = 5


class Reason(StrEnum):
    """Why a request or a key was refused: the stable words metrics, logs and audit use."""

    MISSING_TOKEN = "missing_token"
    INVALID_REQUEST = "invalid_request"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    INSUFFICIENT_USER_AUTHENTICATION = "insufficient_user_authentication"  # RFC 9470: a stronger or newer login
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    BAD_SIGNATURE = "bad_signature"
    WRONG_AUDIENCE = "wrong_audience"
    WRONG_ISSUER = "wrong_issuer"
    UNKNOWN_KEY = "unknown_key"
    BAD_HEADER = "bad_header"
    BAD_CLAIMS = "bad_claims"
    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    INACTIVE = "inactive"
    INVALID = "invalid"
    KEYS_UNAVAILABLE = "keys_unavailable"
    JWKS_FETCH_FAILED = "jwks_fetch_failed"
    UNUSABLE_KEY = "unusable_key"
    REVOKED = "revoked"
    SUSPENDED = "suspended"
    STATUS_INVALID = "status_invalid"
    STATUS_UNAVAILABLE = "status_unavailable"

    DPOP_INVALID = "dpop_invalid"
    DPOP_REPLAY = "dpop_replay"
    DPOP_BINDING = "dpop_binding"
    DPOP_REQUIRED = "dpop_required"
    DPOP_NONCE = "dpop_nonce"
    DPOP_UNAVAILABLE = "dpop_unavailable"


def bearer_challenge(
    error: str | None = None,
    description: str | None = None,
    scope: str | None = None,
    *,
    resource_metadata: str | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> str:
    """Return an RFC 6750 section 3 `WWW-Authenticate` value (with RFC 9728 section 5.1's `resource_metadata`).

    `extra` are further auth-params after `scope`: RFC 9470 section 3's `acr_values` and `max_age`.
    """
    params = [f'realm="{REALM}"']
    for name, value in (
        ("error", error),
        ("error_description", description),
        ("scope", scope),
        *extra,
        ("resource_metadata", resource_metadata),
    ):
        if value:
            # Our own fixed messages; still, a quote or backslash must not end the quoted-string.
            params.append(f'{name}="{value.replace(chr(92), "").replace(chr(34), chr(39))}"')
    return "Bearer " + ", ".join(params)


class JwtVerifierError(Exception):
    """Anything this library raises: a description safe to send, its reason, OAuth error code and HTTP status."""

    status = 400
    error = "invalid_request"
    reason: Reason = Reason.INVALID

    def __init__(self, description: str, *, reason: Reason | None = None) -> None:
        super().__init__(description)
        self.description = description
        if reason is not None:
            self.reason = reason
        self.headers: dict[str, str] = {}

    def www_authenticate(self, resource_metadata: str | None = None) -> str | None:
        """Return the `WWW-Authenticate` value this error is answered with, if any."""
        return None

    def response_headers(self, resource_metadata: str | None = None) -> dict[str, str]:
        """Return the headers this error is answered with (a challenge, `Retry-After`)."""
        return dict(self.headers)


class BearerError(JwtVerifierError):
    """An error of a protected resource (RFC 6750 section 3), with its `Bearer` challenge."""

    status = 401
    challenge_error: str | None = None

    def __init__(self, description: str, *, scope: str | None = None, reason: Reason | None = None) -> None:
        self.scope = scope
        super().__init__(description, reason=reason)
        self.headers["WWW-Authenticate"] = self.challenge()

    def challenge_params(self) -> tuple[tuple[str, str], ...]:
        """Return the auth-params this error adds to its challenge after `scope` (none but step-up's)."""
        return ()

    def challenge(self, resource_metadata: str | None = None) -> str:
        """Return this error's challenge, pointing at the API's RFC 9728 metadata when given."""
        # Without an error code (no token sent, section 3.1) the challenge says nothing more.
        detail = self.description if self.challenge_error else None
        return bearer_challenge(
            self.challenge_error, detail, self.scope, resource_metadata=resource_metadata, extra=self.challenge_params()
        )

    def www_authenticate(self, resource_metadata: str | None = None) -> str:
        """Return the challenge (RFC 6750 section 3), naming the metadata URL when given (RFC 9728 section 5.1)."""
        return self.challenge(resource_metadata)

    def response_headers(self, resource_metadata: str | None = None) -> dict[str, str]:
        """Return the headers, the challenge naming the metadata URL when given."""
        return {**self.headers, "WWW-Authenticate": self.challenge(resource_metadata)}


class MissingToken(BearerError):
    """No token was sent (section 3.1: no error code in the challenge)."""

    error = "unauthorized"
    reason = Reason.MISSING_TOKEN

    def __init__(self, description: str = "send an access token as 'Authorization: Bearer <token>'") -> None:
        super().__init__(description)


class InvalidRequest(BearerError):
    """The request carries the token in a way RFC 6750 forbids."""

    status = 400
    error = challenge_error = "invalid_request"
    reason = Reason.INVALID_REQUEST


class InsufficientScope(BearerError):
    """The token is valid but lacks a scope the resource needs."""

    status = 403
    error = challenge_error = "insufficient_scope"
    reason = Reason.INSUFFICIENT_SCOPE

    def __init__(self, scope: str) -> None:
        super().__init__(f"this resource needs the '{scope}' scope", scope=scope)


class InsufficientUserAuthentication(BearerError):
    """The token is valid, but the login behind it is not strong or recent enough (RFC 9470 section 3).

    Not an `InvalidToken`: refreshing gives the same login; only a new one, meeting `acr_values`
    and `max_age` (both named in the challenge), helps.
    """

    status = 401
    error = challenge_error = "insufficient_user_authentication"
    reason = Reason.INSUFFICIENT_USER_AUTHENTICATION

    def __init__(self, description: str, *, acr_values: tuple[str, ...] = (), max_age: int | None = None) -> None:
        self.acr_values = acr_values
        self.max_age = max_age
        super().__init__(description)

    def challenge_params(self) -> tuple[tuple[str, str], ...]:
        """Return `acr_values` (space-separated) and `max_age`, those the resource demands."""
        params: list[tuple[str, str]] = []
        if self.acr_values:
            params.append(("acr_values", " ".join(self.acr_values)))
        if self.max_age is not None:
            params.append(("max_age", str(self.max_age)))
        return tuple(params)


class InvalidToken(BearerError):
    """The token must be refused; the message is one of our fixed texts, safe to send; `reason` says why."""

    error = challenge_error = "invalid_token"

    def __init__(self, description: str, *, reason: Reason = Reason.INVALID) -> None:
        super().__init__(description, reason=reason)


class TokenExpired(InvalidToken):
    """The token was valid but its `exp` has passed."""

    def __init__(self, description: str = "the token has expired") -> None:
        super().__init__(description, reason=Reason.EXPIRED)


class UnknownKey(InvalidToken):
    """The token names a `kid` the issuer does not publish; `kid` is kept for the log only."""

    def __init__(self, kid: str) -> None:
        super().__init__("the token was signed with a key the issuer does not publish", reason=Reason.UNKNOWN_KEY)
        self.kid = kid[:128]


class TokenRevoked(InvalidToken):
    """The token's status list marks it revoked (status 1) or suspended (2, or any other non-zero status)."""

    def __init__(self, *, suspended: bool = False) -> None:
        if suspended:
            super().__init__("the token has been suspended", reason=Reason.SUSPENDED)
        else:
            super().__init__("the token has been revoked", reason=Reason.REVOKED)


class StatusListInvalid(InvalidToken):
    """The token's status list is not one this API can trust or read; `detail` is for the log only."""

    def __init__(self, detail: str) -> None:
        super().__init__("the token's status cannot be established", reason=Reason.STATUS_INVALID)
        self.detail = detail


class VerificationUnavailable(JwtVerifierError):
    """A token cannot be checked right now (the issuer is down or answered nonsense): a 503.

    `str()` gives the detail, for the log; the client learns only that it should retry.
    """

    status = 503
    error = "temporarily_unavailable"
    reason = Reason.KEYS_UNAVAILABLE

    def __init__(self, detail: str, *, reason: Reason | None = None) -> None:
        super().__init__("tokens cannot be verified right now; try again shortly", reason=reason)
        self.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


class KeysUnavailable(VerificationUnavailable):
    """No verification key could be loaded: the issuer has not been reachable yet."""


class JwksFetchError(VerificationUnavailable):
    """A JWKS fetch failed; the detail says why (and never holds response content)."""

    reason = Reason.JWKS_FETCH_FAILED


class JwkError(JwtVerifierError, ValueError):
    """A JWK is not a usable RS256 verification key."""

    reason = Reason.UNUSABLE_KEY


class StatusUnavailable(VerificationUnavailable):
    """The token's status list could not be fetched, and no copy recent enough is held."""

    reason = Reason.STATUS_UNAVAILABLE


def dpop_challenge(
    error: str | None = None,
    description: str | None = None,
    scope: str | None = None,
    *,
    algs: tuple[str, ...] = (),
    resource_metadata: str | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> str:
    """Return an RFC 9449 section 7.1 `WWW-Authenticate: DPoP` value, naming the proof algorithms accepted."""
    bearer = bearer_challenge(error, description, scope, resource_metadata=resource_metadata, extra=extra)
    params = bearer.removeprefix("Bearer ")
    if algs:
        params += f', algs="{" ".join(algs)}"'
    return "DPoP " + params


class DPoPError(BearerError):
    """A refusal of a request made, or to be made, with the DPoP scheme: its challenge is `DPoP` (RFC 9449 section 7.1)."""

    algs: tuple[str, ...] = ()

    def challenge(self, resource_metadata: str | None = None) -> str:
        """Return the `DPoP` challenge, with `algs` and the metadata URL when given."""
        detail = self.description if self.challenge_error else None
        return dpop_challenge(
            self.challenge_error,
            detail,
            self.scope,
            algs=self.algs,
            resource_metadata=resource_metadata,
            extra=self.challenge_params(),
        )


class InvalidDPoPProof(DPoPError, InvalidToken):
    """The request's DPoP proof must be refused (RFC 9449 section 7.1); `reason` says why."""

    error = challenge_error = "invalid_dpop_proof"
    reason = Reason.DPOP_INVALID

    def __init__(self, description: str, *, algs: tuple[str, ...] = (), reason: Reason = Reason.DPOP_INVALID) -> None:
        self.algs = algs
        super().__init__(description, reason=reason)


class UseDPoPNonce(DPoPError, InvalidToken):
    """The proof lacks the server's current nonce (RFC 9449 section 9): retry with the one in `DPoP-Nonce`."""

    error = challenge_error = "use_dpop_nonce"
    reason = Reason.DPOP_NONCE

    def __init__(self, nonce: str, *, algs: tuple[str, ...] = ()) -> None:
        self.algs = algs
        super().__init__(
            "the DPoP proof must carry the server's nonce: retry with the one in DPoP-Nonce", reason=Reason.DPOP_NONCE
        )
        self.headers["DPoP-Nonce"] = nonce


class DPoPInvalidToken(DPoPError, InvalidToken):
    """The access token of a DPoP request (or a bearer token where only DPoP is accepted) must be refused."""

    def __init__(self, description: str, *, algs: tuple[str, ...] = (), reason: Reason = Reason.INVALID) -> None:
        self.algs = algs
        super().__init__(description, reason=reason)


class DPoPMissingToken(DPoPError, MissingToken):
    """No token was sent to an API that accepts only DPoP-bound tokens."""

    def __init__(self, *, algs: tuple[str, ...] = ()) -> None:
        self.algs = algs
        super().__init__("send a DPoP-bound access token as 'Authorization: DPoP <token>' with a DPoP proof")


class DPoPInsufficientUserAuthentication(DPoPError, InsufficientUserAuthentication):
    """Step-up (RFC 9470) refused a DPoP request's token: the same parameters, in a `DPoP` challenge."""

    def __init__(self, refusal: InsufficientUserAuthentication, *, algs: tuple[str, ...] = ()) -> None:
        self.algs = algs
        super().__init__(refusal.description, acr_values=refusal.acr_values, max_age=refusal.max_age)


class ConfigError(JwtVerifierError, ValueError):
    """A setting is missing or invalid (`jwt_verifier.env`): the message names the variable, never a secret's value.

    Raised at start-up, never answered to a client.
    """

    status = 500
    error = "server_error"
