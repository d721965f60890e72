"""The resource as an OpenID Connect relying party: ID token validation (OpenID Connect Core 1.0).

The rules (section 3.1.3.7 for the code flow, 12.2 for refreshes) are Authlib's
`CodeIDToken`; the JWS under it is read by the verifier library's parser
(`jwt_verifier.jose.parse_compact`, `verify_rs256`: strict base64url and JSON, RS256 only, no
`crit`), the parser every access token here goes through too; the keys come from
the resource's own JWKS cache (`jwt_verifier.JwksClient`, the one the API verifies with: the
issuer signs both kinds of token with the same keys).

| check       | rule                                                                     |
| ----------- | ------------------------------------------------------------------------ |
| size        | at most `max_token_bytes`, refused before any parsing                    |
| `alg`       | RS256, fixed here; the key is the JWKS key of the `kid`, nothing else     |
| `typ`       | absent or `JWT`: an access token (`at+jwt`) is never an ID token         |
| `iss`       | the configured issuer                                                    |
| `aud`       | includes our client id; `azp`, when present, is our client id            |
| `exp`, `iat`| required; `exp` in the future (with leeway)                              |
| `sub`       | a non-empty string; on a refresh, the same as before (section 12.2)      |
| `nonce`     | at login, equal to the one this browser's login cookie holds             |
| `at_hash`   | required, the hash of the access token it came with                      |

Why not Authlib's Flask client (`authlib.integrations.flask_client`): it keeps the state,
nonce and PKCE verifier in Flask's session, a cookie signed with the app's `SECRET_KEY`, and
the resource holds no secret (its point: nothing worth stealing). Its back-channel calls also
follow redirects and read answers of any size. So the login cookie carries the three values
(random, seen only by this browser, checked once), `shared.oauth_client.post_token` makes the
exchange (bounded, no redirects), and only the validation comes from Authlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authlib.oidc.core import CodeIDToken
from joserfc.errors import ClaimError, ExpiredTokenError, JoseError

from jwt_verifier import JwksClient, UnknownKey
from jwt_verifier.errors import InvalidToken, Reason
from jwt_verifier.jose import parse_compact, verify_rs256

ALGORITHMS = ["RS256"]
ID_TOKEN_TYPES = {"jwt", "application/jwt"}

# What the page shows of a claim refused, in words a person can act on.
REASONS = {
    "iss": "it comes from another issuer",
    "aud": "it was issued to another client",
    "azp": "it was issued to another client",
    "nonce": "its nonce does not match this login",
    "at_hash": "it does not belong to the access token it came with",
    "sub": "it names no user, or another one",
}


class IdTokenRefused(Exception):
    """The ID token fails a rule; `description` says which, safe to show."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass(frozen=True)
class RelyingParty:
    """Validate the issuer's ID tokens for one client."""

    issuer: str
    client_id: str
    keys: JwksClient
    leeway: int
    max_token_bytes: int

    def validate(
        self, id_token: str, *, access_token: str, nonce: str | None, subject: str | None = None
    ) -> dict[str, Any]:
        """Return the claims of an ID token fresh from the token endpoint, or raise IdTokenRefused.

        `nonce` is the login's (None on a refresh: its ID token carries none); `subject` is the
        `sub` a refreshed ID token must keep. KeysUnavailable (a 503) passes through.
        """
        header, claims = self._decode(id_token)
        options: dict[str, Any] = {
            "iss": {"essential": True, "value": self.issuer},
            "aud": {"essential": True, "value": self.client_id},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
            "at_hash": {"essential": True},
        }
        params = {"client_id": self.client_id, "access_token": access_token, "nonce": nonce}
        try:
            CodeIDToken(claims, header, options, params).validate(leeway=self.leeway)
        except ExpiredTokenError as exc:
            raise IdTokenRefused("the ID token has expired") from exc
        except ClaimError as exc:
            raise IdTokenRefused(
                f"the ID token was refused: {REASONS.get(exc.claim, 'its claims are not valid')}"
            ) from exc
        except JoseError as exc:
            raise IdTokenRefused("the ID token was refused: its claims are not valid") from exc
        if nonce is not None and claims.get("nonce") != nonce:
            raise IdTokenRefused(f"the ID token was refused: {REASONS['nonce']}")  # Authlib skips an empty one
        return self._checked_subject(claims, subject)

    def read(self, id_token: str, subject: str | None = None) -> dict[str, Any]:
        """Return the claims of an ID token this resource accepted before (from its cookie), or raise IdTokenRefused.

        The signature, `iss`, `aud` and `sub` (that of the access token beside it, if given) are
        checked again: the cookie is the browser's to change. Expiry is not: it still says who
        logged in, and is still a logout's `id_token_hint`.
        """
        _, claims = self._decode(id_token)
        aud = claims.get("aud")
        if claims.get("iss") != self.issuer:
            raise IdTokenRefused(f"the ID token was refused: {REASONS['iss']}")
        if aud != self.client_id and not (isinstance(aud, list) and self.client_id in aud):
            raise IdTokenRefused(f"the ID token was refused: {REASONS['aud']}")
        return self._checked_subject(claims, subject)

    def _checked_subject(self, claims: dict[str, Any], subject: str | None) -> dict[str, Any]:
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or (subject is not None and sub != subject):
            raise IdTokenRefused(f"the ID token was refused: {REASONS['sub']}")
        return claims

    def _decode(self, id_token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if len(id_token) > self.max_token_bytes or not id_token.isascii():
            raise IdTokenRefused("the ID token was refused: it is not a compact JWT of a sensible size")
        try:
            jws = parse_compact(id_token)
        except InvalidToken as exc:
            raise IdTokenRefused("the ID token was refused: its encoding is not valid") from exc
        if jws.header.get("alg") not in ALGORITHMS:
            raise IdTokenRefused("the ID token was refused: its signature or encoding is not valid")
        kid = jws.header.get("kid")
        try:
            if not isinstance(kid, str) or not kid:
                raise UnknownKey("")
            verify_rs256(jws, self.keys.get(kid))
        except InvalidToken as exc:
            if exc.reason is Reason.BAD_SIGNATURE:
                raise IdTokenRefused("the ID token was refused: its signature or encoding is not valid") from exc
            raise IdTokenRefused(f"the ID token was refused: {exc.description}") from exc  # a kid not published
        typ = jws.header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in ID_TOKEN_TYPES):
            raise IdTokenRefused("the ID token was refused: its type is not JWT")
        return jws.header, jws.claims
