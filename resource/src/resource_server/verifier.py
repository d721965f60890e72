"""Access token verification: RFC 9068 profile, RFC 8725 rules, keys only from the JWKS.

The claim policy in one place:

| check            | rule                                                             |
| ---------------- | ---------------------------------------------------------------- |
| size             | at most `max_token_bytes`, refused before any parsing            |
| `alg`            | exactly RS256, fixed by configuration, never taken from the token |
| `typ`            | `at+jwt` (or `application/at+jwt`)                               |
| `kid`            | a string naming a key in the issuer's JWKS; `jku`, `x5u`, `jwk`, |
|                  | `x5c` are ignored; `crit` is refused (no extension is understood) |
| `iss`, `aud`     | equal to the configured issuer and audience                     |
| `exp`, `iat`     | required integers; `exp` past or `iat`/`nbf` future (with leeway) refused |
| `sub`, `jti`     | required non-empty strings                                       |
| `scope`, `client_id` | strings when present                                         |
"""

from __future__ import annotations

from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

ALGORITHMS = ["RS256"]
ACCEPTED_TYPES = {"at+jwt", "application/at+jwt"}
REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "sub", "jti"]


class InvalidToken(Exception):
    """The token must be refused; the message is safe to send to the client."""


class TokenExpired(InvalidToken):
    """The token was valid but its `exp` has passed."""


class KeySource(Protocol):
    """Where verification keys come from (the JWKS client)."""

    def get(self, kid: str) -> rsa.RSAPublicKey:
        """Return the key for `kid`, or raise."""
        ...


class Verifier:
    """Verify access tokens against keys from a key source."""

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audience: str,
        leeway: int = 10,
        max_token_bytes: int = 4096,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.max_token_bytes = max_token_bytes

    def verify(self, token: str) -> dict[str, Any]:
        """Return the verified claims, or raise InvalidToken (or the key source's errors)."""
        if len(token) > self.max_token_bytes:
            raise InvalidToken(f"the token is larger than {self.max_token_bytes} bytes")
        header = self._header(token)
        key = self._key(header)
        claims = self._decode(token, key)
        for name in ("sub", "jti"):
            if not isinstance(claims[name], str) or not claims[name]:
                raise InvalidToken(f"the '{name}' claim must be a non-empty string")
        for name in ("scope", "client_id"):
            if name in claims and not isinstance(claims[name], str):
                raise InvalidToken(f"the '{name}' claim must be a string")
        return claims

    def _header(self, token: str) -> dict[str, Any]:
        # A compact JWS is base64url and dots only; PyJWT would raise UnicodeEncodeError on a surrogate.
        if not token.isascii():
            raise InvalidToken("the token is not a well-formed JWS compact serialization")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise InvalidToken("the token is not a well-formed JWS compact serialization") from exc
        if header.get("alg") not in ALGORITHMS:
            raise InvalidToken("the token's algorithm is not accepted")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES:
            raise InvalidToken("the token type must be at+jwt")
        if "crit" in header or "b64" in header:
            raise InvalidToken("the token uses a JWS extension this server does not accept")
        return header

    def _key(self, header: dict[str, Any]) -> rsa.RSAPublicKey:
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 128:
            raise InvalidToken("the token has no usable 'kid' header")
        return self.keys.get(kid)

    def _decode(self, token: str, key: rsa.RSAPublicKey) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": REQUIRED_CLAIMS, "strict_aud": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise InvalidToken("the token is not valid yet") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("the token is not meant for this API (audience)") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidToken("the token was not issued by the trusted issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token lacks the required '{exc.claim}' claim") from exc
        except jwt.InvalidSignatureError as exc:
            raise InvalidToken("the token's signature is invalid") from exc
        except jwt.InvalidTokenError as exc:
            raise InvalidToken("the token is malformed or its claims are invalid") from exc
        return claims
