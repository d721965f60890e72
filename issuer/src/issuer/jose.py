"""The issuer's one JOSE module: every JWT it signs or reads, RS256 compact JWS (RFC 7515) only.

Signing is here and nowhere else (`sign`); reading parses with the verifier library's parser
(`jwt_verifier.jose.parse_compact`, `verify_rs256`) and applies the rules of one declared
`TokenKind`:

| kind               | header `typ`        | key                    | `iss`     | `aud`                            | `exp`                 | also required |
| ------------------ | ------------------- | ---------------------- | --------- | -------------------------------- | --------------------- | ------------- |
| `ACCESS_TOKEN`     | `at+jwt` (RFC 9068) | the issuer's           | issuer    | the API (string or list)         | required, checked     | `sub`, `iat`, `jti` |
| `ID_TOKEN`         | `JWT`               | the issuer's           | issuer    | the client id (string or list)   | required, checked     | `sub`, `iat`  |
| `CLIENT_ASSERTION` | not checked         | the client's (by `kid`) | client id | the issuer identifier, one string | required, at most 5 minutes ahead | `sub` = client id, `jti` |
| `END_SESSION_HINT` | `JWT`               | the issuer's published | issuer    | not checked: it names the client | ignored               | `sub`, `aud`, `iat` |
| `STATUS_LIST`      | `statuslist+jwt`    | the issuer's           | issuer    | none                             | set by the issuer     | `sub` = the list's URI, `status_list` (signed only; the APIs read it) |

Every kind: `alg` exactly RS256 (never `none`, never HS256: the key decides nothing), no JWS
extension, strict JSON, NumericDates that are numbers, `iat` and `nbf` not in the future.

`CLIENT_ASSERTION`'s `aud`: RFC 7523 section 3 also allows the token endpoint URL, and a list.
Both are refused: an assertion a client made for another server whose token endpoint or list
names ours would otherwise be accepted here (CVE-2025-27371), so `aud` is the issuer identifier
as a single string, as draft-ietf-oauth-rfc7523bis requires.

`END_SESSION_HINT`: RP-Initiated Logout 1.0 section 2 has the OP check that it issued the ID
token, and accept an expired one (a relying party logging out often holds only a stale one).

Access tokens presented back to the issuer (`/introspect`, `/userinfo`) are verified by
`jwt_verifier.Verifier`, the very policy every API applies, so that the issuer and the APIs
cannot disagree on one; `ACCESS_TOKEN` is what the issuer signs them as.

A refusal is `JwtRefused`, whose `reason` is the library's stable word (`jwt_verifier.errors.Reason`);
its message is safe to log, and says nothing a caller should show beyond "refused".
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from issuer.keys import SigningKey
from jwt_verifier.errors import InvalidToken, Reason
from jwt_verifier.jose import CompactJws, b64url_encode, parse_compact, verify_rs256

ALGORITHM = "RS256"
LEEWAY = 30
MAX_NUMERIC_DATE = 2**53
MAX_JTI_LENGTH = 255
MAX_TOKEN_BYTES = 8192
MAX_ASSERTION_LIFETIME = 300  # a client assertion is made for one request: minutes at most

# RS256 (RFC 7518 3.3); both objects are stateless, so one of each serves every thread.
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


class JwtRefused(Exception):
    """A JWT does not pass its kind's rules; `reason` says which rule, the message how."""

    def __init__(self, message: str, reason: Reason) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TokenKind:
    """The rules of one use of a JWT (see the table above)."""

    name: str
    typ: str | None  # the header `typ` this issuer signs with, and demands when reading (case-insensitive)
    required: tuple[str, ...]  # claims that must be present
    check_exp: bool = True  # False: `exp` is not looked at (end-session hints)
    max_lifetime: int | None = None  # `exp` at most this many seconds after now and after `iat`
    single_audience: bool = False  # `aud` must be one string, not a list
    accepted_types: frozenset[str] = frozenset()  # more spellings of `typ` accepted when reading


ACCESS_TOKEN = TokenKind(
    "access token",
    "at+jwt",
    ("iss", "sub", "aud", "exp", "iat", "jti"),
    accepted_types=frozenset({"application/at+jwt"}),
)
ID_TOKEN = TokenKind("ID token", "JWT", ("iss", "sub", "aud", "exp", "iat"))
CLIENT_ASSERTION = TokenKind(
    "client assertion",
    None,
    ("iss", "sub", "aud", "exp", "jti"),
    max_lifetime=MAX_ASSERTION_LIFETIME,
    single_audience=True,
)
END_SESSION_HINT = TokenKind("ID token hint", "JWT", ("iss", "sub", "aud", "iat"), check_exp=False)
# draft-ietf-oauth-status-list-21 section 5.1 (issuer.statuslist): `sub` is the list's own URI.
STATUS_LIST = TokenKind("status list token", "statuslist+jwt", ("sub", "iat", "status_list"))


# -- signing ----------------------------------------------------------------------------------


def sign(key: SigningKey, kind: TokenKind, claims: dict[str, Any]) -> str:
    """Sign `claims` as a compact JWS of `kind` (header `alg`, `typ`, `kid`) with the issuer's key.

    The header segment is encoded once per key and kind, which keeps the cost per token at
    the RSA signature's (see docs/performance.md).
    """
    if kind.typ is None:
        raise ValueError(f"the issuer does not sign a {kind.name}")
    payload = b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{_header_segment(key.kid, kind.typ)}.{payload}"
    signature = key.private_key.sign(signing_input.encode("ascii"), _PKCS1V15, _SHA256)
    return f"{signing_input}.{b64url_encode(signature)}"


@functools.lru_cache(maxsize=16)
def _header_segment(kid: str, typ: str) -> str:
    """Return the encoded header of a key for one token type: the same for every such token it signs."""
    header = {"alg": ALGORITHM, "typ": typ, "kid": kid}
    return b64url_encode(json.dumps(header, separators=(",", ":")).encode())


# -- reading ----------------------------------------------------------------------------------


def parse(token: str, kind: TokenKind, *, max_bytes: int = MAX_TOKEN_BYTES) -> CompactJws:
    """Decode a JWT of `kind` and check its header (`alg`, `typ`); nothing in it is trusted yet."""
    if len(token) > max_bytes:
        raise JwtRefused(f"the {kind.name} is larger than {max_bytes} bytes", Reason.TOO_LARGE)
    try:
        jws = parse_compact(token)
    except InvalidToken as exc:
        raise JwtRefused(f"the {kind.name} is malformed: {exc}", exc.reason) from exc
    if jws.header.get("alg") != ALGORITHM:
        raise JwtRefused(f"the {kind.name}'s algorithm is not {ALGORITHM}", Reason.BAD_HEADER)
    if kind.typ is not None:
        typ = jws.header.get("typ")
        accepted = {kind.typ.lower(), *kind.accepted_types}
        if not isinstance(typ, str) or typ.lower() not in accepted:
            raise JwtRefused(f"the {kind.name}'s header typ is not {kind.typ}", Reason.BAD_HEADER)
    return jws


def verify(
    jws: CompactJws,
    kind: TokenKind,
    key: rsa.RSAPublicKey,
    *,
    issuer: str,
    audience: str | None,
    subject: str | None = None,
    now: float | None = None,
    leeway: int = LEEWAY,
) -> dict[str, Any]:
    """Check the signature with `key`, then the claims by `kind`'s rules; return the claims.

    `issuer` is the `iss` expected (a client assertion's is the client id); `audience` the
    `aud` expected (None: not checked); `subject`, when given, the `sub` expected.
    """
    try:
        verify_rs256(jws, key)
    except InvalidToken as exc:
        raise JwtRefused(f"the {kind.name}'s signature is invalid", Reason.BAD_SIGNATURE) from exc
    claims = jws.claims
    for name in kind.required:
        if name not in claims:
            raise JwtRefused(f"the {kind.name} lacks the required {name!r} claim", Reason.BAD_CLAIMS)
    if claims.get("iss") != issuer:
        raise JwtRefused(f"the {kind.name} was not issued by {issuer!r}", Reason.WRONG_ISSUER)
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or (subject is not None and sub != subject):
        raise JwtRefused(f"the {kind.name}'s sub is not the expected subject", Reason.BAD_CLAIMS)
    if audience is not None:
        _check_audience(claims.get("aud"), audience, kind)
    _check_times(claims, kind, time.time() if now is None else now, leeway)
    if "jti" in kind.required:
        jti = claims["jti"]
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
            raise JwtRefused(
                f"the {kind.name}'s jti must be a string of 1 to {MAX_JTI_LENGTH} characters", Reason.BAD_CLAIMS
            )
    return claims


def read(
    token: str,
    kind: TokenKind,
    key_for: Callable[[str], rsa.RSAPublicKey],
    *,
    issuer: str,
    audience: str | None,
    now: float | None = None,
) -> dict[str, Any]:
    """Parse and verify a JWT signed by the issuer's key its `kid` names (`key_for(kid)`); return the claims.

    `key_for` raises InvalidToken (`UnknownKey`) for a key the issuer does not publish.
    """
    jws = parse(token, kind)
    kid = jws.header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise JwtRefused(f"the {kind.name} has no usable 'kid' header", Reason.BAD_HEADER)
    try:
        key = key_for(kid)
    except InvalidToken as exc:
        raise JwtRefused(f"the {kind.name}'s key is not published", Reason.UNKNOWN_KEY) from exc
    return verify(jws, kind, key, issuer=issuer, audience=audience, now=now)


def _check_audience(aud: object, audience: str, kind: TokenKind) -> None:
    if kind.single_audience:
        if aud != audience:
            raise JwtRefused(f"the {kind.name}'s aud is not {audience!r} alone", Reason.WRONG_AUDIENCE)
        return
    names = [aud] if isinstance(aud, str) else aud
    if not isinstance(names, list) or not all(isinstance(a, str) for a in names) or audience not in names:
        raise JwtRefused(f"the {kind.name} is not meant for {audience!r} (aud)", Reason.WRONG_AUDIENCE)


def _check_times(claims: dict[str, Any], kind: TokenKind, now: float, leeway: int) -> None:
    """Apply the time rules: `exp` not passed (nor too far ahead), `iat` and `nbf` not in the future."""
    exp = _numeric(claims, "exp", kind) if kind.check_exp else None
    if exp is not None:
        if exp <= now - leeway:
            raise JwtRefused(f"the {kind.name} has expired", Reason.EXPIRED)
        if kind.max_lifetime is not None and exp > now + kind.max_lifetime + leeway:
            raise JwtRefused(f"the {kind.name}'s exp is more than {kind.max_lifetime} seconds ahead", Reason.BAD_CLAIMS)
    if "iat" in claims:
        iat = _numeric(claims, "iat", kind)
        if iat > now + leeway:
            raise JwtRefused(f"the {kind.name}'s iat is in the future", Reason.NOT_YET_VALID)
        if exp is not None and kind.max_lifetime is not None and exp - iat > kind.max_lifetime:
            raise JwtRefused(f"the {kind.name} lives longer than {kind.max_lifetime} seconds", Reason.BAD_CLAIMS)
    if "nbf" in claims and _numeric(claims, "nbf", kind) > now + leeway:
        raise JwtRefused(f"the {kind.name} is not valid yet (nbf)", Reason.NOT_YET_VALID)


def _numeric(claims: dict[str, Any], name: str, kind: TokenKind) -> int:
    """Return a NumericDate as whole seconds; strings, booleans and huge numbers are refused."""
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < MAX_NUMERIC_DATE:
        raise JwtRefused(f"the {kind.name}'s {name} is not a NumericDate", Reason.BAD_CLAIMS)
    return int(value)
