"""Bearer token usage (RFC 6750 section 2.1): reading the token from the Authorization header.

The errors of section 3 (`MissingToken`, `InvalidToken`, `InsufficientScope`,
`InvalidRequest`) live in `jwt_verifier.errors` with the rest of the hierarchy.
"""

from __future__ import annotations

from flask import Request

from jwt_verifier.errors import InvalidRequest, InvalidToken


def bearer_token(request: Request) -> str | None:
    """Return the token from the Authorization header, None when there is none."""
    headers = request.headers.getlist("Authorization")
    if len(headers) > 1:
        raise InvalidRequest("send exactly one Authorization header")
    if not headers:
        return None
    scheme, _, token = headers[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    if not token:
        raise InvalidToken("the bearer token is empty")
    return token
