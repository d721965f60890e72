"""Bearer token usage (RFC 6750 section 2.1): reading the token from the Authorization header.

Framework-free: the caller passes the request's Authorization header values (every one of
them: a request with two, or with two joined by a comma in one value, is refused). The errors of section 3 (`MissingToken`,
`InvalidToken`, `InsufficientScope`, `InvalidRequest`) live in `jwt_verifier.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence

from jwt_verifier.errors import InvalidRequest, InvalidToken, Reason


def bearer_token(authorization: Sequence[str]) -> str | None:
    """Return the token from the Authorization header values, None when there is none."""
    if len(authorization) > 1:
        raise InvalidRequest("send exactly one Authorization header")
    if not authorization:
        return None
    if "," in authorization[0]:
        # Two headers joined into one (RFC 9110 section 5.3; a WSGI server joins them so), or a
        # list of credentials: no b64token holds a comma (section 2.1).
        raise InvalidRequest("send exactly one Authorization header")
    scheme, _, token = authorization[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    if not token:
        raise InvalidToken("the bearer token is empty", reason=Reason.MALFORMED)
    return token
