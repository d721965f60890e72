"""Bearer token usage (RFC 6750): reading the token and the `WWW-Authenticate` challenges."""

from __future__ import annotations

from flask import Request

from shared.errors import ApiError

REALM = "jwt-split"


def _challenge(error: str | None = None, description: str | None = None, scope: str | None = None) -> str:
    params = [f'realm="{REALM}"']
    if error:
        params.append(f'error="{error}"')
    if description:
        params.append(f'error_description="{description}"')
    if scope:
        params.append(f'scope="{scope}"')
    return "Bearer " + ", ".join(params)


class MissingToken(ApiError):
    """No token was sent (section 3.1: no error code in the challenge)."""

    status = 401
    error = "unauthorized"

    def __init__(self) -> None:
        super().__init__(
            "send an access token as 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": _challenge()},
        )


class InvalidTokenError(ApiError):
    """The token is malformed, forged, expired or otherwise unacceptable."""

    status = 401
    error = "invalid_token"

    def __init__(self, description: str) -> None:
        # The description comes from our own fixed messages, never from the token.
        super().__init__(description, headers={"WWW-Authenticate": _challenge(self.error, description)})


class InsufficientScope(ApiError):
    """The token is valid but lacks a scope the resource needs."""

    status = 403
    error = "insufficient_scope"

    def __init__(self, scope: str) -> None:
        description = f"this resource needs the '{scope}' scope"
        super().__init__(description, headers={"WWW-Authenticate": _challenge(self.error, description, scope)})


class InvalidRequest(ApiError):
    """The request carries the token in a way RFC 6750 forbids."""

    status = 400
    error = "invalid_request"

    def __init__(self, description: str) -> None:
        super().__init__(description, headers={"WWW-Authenticate": _challenge(self.error, description)})


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
        raise InvalidTokenError("the bearer token is empty")
    return token
