"""The Token Status List format (draft-ietf-oauth-status-list): the referenced token's claim and the list token.

A token that can be revoked carries `"status": {"status_list": {"idx": N, "uri": URI}}`
(section 6.1). The list at `uri` is a JWT (section 5.1) with header `typ: statuslist+jwt`,
signed by the issuer (RS256 here, a `kid` of its JWKS), whose claims are `sub` (equal to the
`uri`), `iss`, `iat`, optionally `exp` and `ttl`, and `status_list: {"bits": 1|2|4|8, "lst":
base64url(zlib(bytes))}` (section 4). Entry `i` holds `bits` bits, least significant first:
`(byte[i*bits//8] >> (i*bits % 8)) & (2**bits - 1)`; 0 is VALID, 1 INVALID, 2 SUSPENDED.

Every check here refuses rather than guesses: another `typ`, `alg`, key, issuer or `sub`,
`crit`, a truncated or oversized list, a zlib stream that would inflate past the bound (a
zlib bomb), or bits other than 1, 2, 4, 8 raise `StatusListInvalid` with a detail for the log.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from jwt_verifier.errors import InvalidToken, Reason, StatusListInvalid, UnknownKey
from jwt_verifier.jose import ALGORITHM, b64url_decode
from jwt_verifier.verifier import KeySource, strict_json

__all__ = ["MEDIA_TYPE", "StatusList", "parse_list_token", "status_ref"]

MEDIA_TYPE = "application/statuslist+jwt"
ACCEPTED_TYPES = {"statuslist+jwt", MEDIA_TYPE}
BITS = frozenset({1, 2, 4, 8})
_MAX_NUMERIC_DATE = 2**53


def status_ref(claims: dict[str, Any]) -> tuple[int, str] | None:
    """Return the token's `status_list` reference (idx, uri), None without one, or raise InvalidToken.

    A `status` claim naming only other mechanisms is no reference this API understands (None).
    A plain tuple: this runs on every use of a token, and a frozen dataclass cost 1.5 µs.
    """
    status = claims.get("status")
    if status is None:
        return None
    if not isinstance(status, dict):
        raise InvalidToken("the 'status' claim must be an object", reason=Reason.BAD_CLAIMS)
    ref = status.get("status_list")
    if ref is None:
        return None
    if not isinstance(ref, dict):
        raise InvalidToken("the 'status_list' claim must be an object", reason=Reason.BAD_CLAIMS)
    idx, uri = ref.get("idx"), ref.get("uri")
    if type(idx) is not int or not 0 <= idx < _MAX_NUMERIC_DATE:
        raise InvalidToken("the status list index must be a non-negative integer", reason=Reason.BAD_CLAIMS)
    if not isinstance(uri, str) or not uri or len(uri) > 2048:
        raise InvalidToken("the status list 'uri' must be a non-empty string", reason=Reason.BAD_CLAIMS)
    return idx, uri


@dataclass(frozen=True, slots=True)
class StatusList:
    """One verified list: its entries, and how long the issuer says it holds."""

    bits: int
    data: bytes
    exp: float | None
    ttl: float | None

    def __len__(self) -> int:
        return len(self.data) * 8 // self.bits

    def status(self, idx: int) -> int:
        """Return entry `idx`, or raise StatusListInvalid when the list is shorter."""
        bits = self.bits
        position = idx * bits
        byte = position >> 3
        if byte >= len(self.data):
            raise StatusListInvalid(f"index {idx} is beyond the list's {len(self)} entries")
        return (self.data[byte] >> (position & 7)) & ((1 << bits) - 1)


def _segment(text: str, what: str) -> bytes:
    try:
        return b64url_decode(text)
    except ValueError as exc:
        raise StatusListInvalid(f"the list's {what} is not base64url") from exc


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = strict_json(data)
    except (ValueError, RecursionError) as exc:
        raise StatusListInvalid(f"the list's {what} is not JSON") from exc
    if not isinstance(value, dict):
        raise StatusListInvalid(f"the list's {what} is not a JSON object")
    return value


def _number(value: Any, name: str, *, required: bool) -> float | None:
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < _MAX_NUMERIC_DATE:
        raise StatusListInvalid(f"the list's '{name}' claim is not a NumericDate")
    return float(value)


def inflate(lst: str, max_bytes: int) -> bytes:
    """Decode `lst` (base64url of a zlib stream) into at most `max_bytes` bytes, or raise StatusListInvalid."""
    compressed = _segment(lst, "'lst'")
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(compressed, max_bytes + 1)
    except zlib.error as exc:
        raise StatusListInvalid("the list's 'lst' is not a zlib stream") from exc
    if len(data) > max_bytes or inflater.unconsumed_tail:
        raise StatusListInvalid(f"the list inflates to more than {max_bytes} bytes")
    if not inflater.eof:
        raise StatusListInvalid("the list's zlib stream is truncated")
    if inflater.unused_data:
        raise StatusListInvalid("the list's 'lst' has data after its zlib stream")
    if not data:
        raise StatusListInvalid("the list is empty")
    return data


def parse_list_token(
    token: str, *, uri: str, issuer: str, keys: KeySource, now: float, leeway: float, max_bytes: int
) -> StatusList:
    """Verify a list token fetched from `uri` and return its list, or raise StatusListInvalid.

    The signature is checked with the key its `kid` names in `keys` (the API's JWKS client: an
    unknown kid refreshes the JWKS within its rate limit). `KeysUnavailable` passes through:
    the keys, not the list, are missing.
    """
    if not token.isascii():
        raise StatusListInvalid("the list is not a JWS compact serialization")
    signing_input, _, signature_text = token.rpartition(".")
    parts = signing_input.split(".")
    if len(parts) != 2:
        raise StatusListInvalid("the list is not a JWS compact serialization")
    header = _json_object(_segment(parts[0], "header"), "header")
    if header.get("alg") != ALGORITHM:
        raise StatusListInvalid("the list's algorithm is not RS256")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES:
        raise StatusListInvalid("the list's type is not statuslist+jwt")
    if "crit" in header or "b64" in header:
        raise StatusListInvalid("the list uses a JWS extension")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 128:
        raise StatusListInvalid("the list has no usable 'kid'")
    payload, signature = _segment(parts[1], "claims"), _segment(signature_text, "signature")
    try:
        key = keys.get(kid)
    except UnknownKey as exc:
        raise StatusListInvalid("the list is signed with a key the issuer does not publish") from exc
    except InvalidToken as exc:  # the key source refused the kid otherwise
        raise StatusListInvalid(f"the list's key was refused: {exc.description}") from exc
    try:
        key.verify(signature, signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise StatusListInvalid("the list's signature is invalid") from None
    claims = _json_object(payload, "claims")
    if claims.get("iss") != issuer:
        raise StatusListInvalid("the list was not issued by the trusted issuer")
    if claims.get("sub") != uri:
        raise StatusListInvalid("the list's 'sub' is not the URI it was fetched from")
    iat = _number(claims.get("iat"), "iat", required=True)
    exp = _number(claims.get("exp"), "exp", required=False)
    ttl = _number(claims.get("ttl"), "ttl", required=False)
    if iat is not None and iat > now + leeway:
        raise StatusListInvalid("the list was issued in the future")
    if exp is not None and exp <= now - leeway:
        raise StatusListInvalid("the list has expired")
    body = claims.get("status_list")
    if not isinstance(body, dict):
        raise StatusListInvalid("the list has no 'status_list' object")
    bits, lst = body.get("bits"), body.get("lst")
    if type(bits) is not int or bits not in BITS:
        raise StatusListInvalid("the list's 'bits' is not 1, 2, 4 or 8")
    if not isinstance(lst, str) or not lst:
        raise StatusListInvalid("the list's 'lst' is not a string")
    return StatusList(bits, inflate(lst, max_bytes), exp, ttl)
