"""Access token verification: RFC 9068 profile, RFC 8725 rules, keys only from a key source.

One policy for every API and the issuer: an API verifies every request with it (keys from the
issuer's JWKS), and the issuer's introspection endpoint answers "active" by the same rules
(keys from its own key store), so the two designs cannot drift apart.

The claim policy in one place:

| check            | rule                                                             |
| ---------------- | ---------------------------------------------------------------- |
| type             | a `str`; bytes, `None` or a number is `malformed`, never a 500    |
| size             | at most `max_token_bytes`, refused before any parsing            |
| encoding         | base64url without `=` padding (RFC 7515 section 2): one spelling per token |
| `alg`            | exactly RS256, fixed by configuration, never taken from the token |
| `typ`            | `at+jwt` (or `application/at+jwt`)                               |
| `kid`            | a string naming a key in the issuer's JWKS; `jku`, `x5u`, `jwk`, |
|                  | `x5c` are ignored; `crit` is refused (no extension is understood) |
| `iss`, `aud`     | equal to the configured issuer and audience                     |
| `exp`, `iat`     | required JSON numbers (not strings, booleans, NaN); `exp` past or `iat`/`nbf` |
|                  | future (with leeway) refused; `exp` at most `max_lifetime` after `iat` |
| JSON             | header and claims are objects with no duplicate member names (RFC 8725 3.2) |
| `sub`, `jti`     | required non-empty strings                                       |
| `scope`, `client_id` | strings when present                                         |

How, and how fast (see docs/performance.md):

- The signature is checked with `cryptography` directly, as RFC 8017 section 8.2.2 spells
  RSASSA-PKCS1-v1_5 verification (`_rs256_valid`): a signature of exactly k octets, OpenSSL's
  RSA public operation and strict padding check recovering T, and T compared octet for octet
  with the SHA-256 DigestInfo of the signing input. `key.verify` checks the same, and costs
  about 1 µs more a token (it looks its digest up in OpenSSL for every call). The
  compact serialization and the claims are handled here, by PyJWT's own rules, because PyJWT
  2.15's per-character base64url check alone costs more than the RSA verify: `_segment` (its rules
  spelled out in `Verifier._verify` for the payload and signature) checks
  the alphabet (in the C decoder's own strict pass) and the canonical encoding, and
  `_claims_of` applies the claim rules on an injectable clock, the common case first and
  without raising. The unit tests hold this path to accepting and rejecting exactly what
  `jwt.decode` (behind the header policy above) does, except where we are deliberately
  stricter: no `=` padding (PyJWT accepts it), strict JSON, NumericDates that are numbers.
- A protected header that led to a verified token is remembered (at most 64): the next token
  with the same header segment skips decoding it; the header policy is a function of those
  bytes alone.
- Verified tokens are remembered (`VerifiedTokens`): the whole token is the key, an entry
  never outlives the token's `exp`, `exp` is compared with the clock on every use, and
  entries of a key the JWKS withdrew are purged.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo

from jwt_verifier import observe
from jwt_verifier.config import DEFAULT_CACHE_SIZE, DEFAULT_LEEWAY, DEFAULT_MAX_TOKEN_BYTES
from jwt_verifier.errors import (
    InvalidToken,
    KeysUnavailable,
    Reason,
    TokenExpired,
    UnknownKey,
    VerificationUnavailable,
)

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_LEEWAY",
    "DEFAULT_MAX_TOKEN_BYTES",
    "InvalidToken",
    "KeySource",
    "KeysUnavailable",
    "TokenExpired",
    "TokenVerifier",
    "UnknownKey",
    "VerificationUnavailable",
    "Verifier",
    "strict_json",
]

ALGORITHMS = ["RS256"]
ACCEPTED_TYPES = {"at+jwt", "application/at+jwt"}
REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "sub", "jti"]

MAX_KNOWN_HEADERS = 64
MAX_LIFETIME = 24 * 3600  # RFC 9068 access tokens are short-lived; a day is generous
MAX_NUMERIC_DATE = 2**53  # beyond this no JSON implementation agrees on the value
# RS256 (RFC 7518 3.3); these objects are stateless, so one of each serves every thread.
_PKCS1V15 = padding.PKCS1v15()
_NO_DIGEST_INFO = NoDigestInfo()
# T of EMSA-PKCS1-v1_5 for SHA-256 is this DER DigestInfo prefix and the hash (RFC 8017 9.2, note 1).
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
_sha256 = hashlib.sha256


class TokenVerifier(Protocol):
    """Answer whether a token is acceptable: local verification and introspection alike.

    `verify` returns the token's claims or raises `InvalidToken` (`TokenExpired` when only its
    `exp` has passed, `UnknownKey` for a key the issuer does not publish) or
    `VerificationUnavailable` (`KeysUnavailable`) when it cannot tell right now.
    """

    def verify(self, token: str) -> dict[str, Any]:
        """Return the verified claims, or raise one of the errors above."""
        ...


class KeySource(Protocol):
    """Where verification keys come from (the JWKS client)."""

    def get(self, kid: str) -> rsa.RSAPublicKey:
        """Return the key for `kid`, or raise UnknownKey, KeysUnavailable or InvalidToken."""
        ...


@runtime_checkable
class WatchedKeySource(Protocol):
    """A key source that says when its set of keys changes."""

    def subscribe(self, callback: Callable[[frozenset[str]], None]) -> None:
        """Call `callback` with the kids held after every change of the key set."""
        ...


# -- the compact serialization ----------------------------------------------------------

# base64url to base64; `+`, `/` and `=` are not base64url, so they become a character that
# strict decoding refuses: the decoder's own pass checks the alphabet.
_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/!!!")
_PADDING = {2: b"==", 3: b"="}
# The last character of a canonical segment has its unused low bits zero: 4 bits when the
# length is 2 mod 4, 2 bits when it is 3 mod 4 (what re-encoding the decoded bytes checks).
_CANONICAL_LAST = {
    2: frozenset(b"AQgw"),
    3: frozenset(b"AEIMQUYcgkosw048"),
}
_MALFORMED = "the token is not a well-formed JWS compact serialization"
_KNOWN: dict[str, Any] = {}  # stands for a header whose kid is already known (never read)


def _segment(raw: bytes) -> bytes:
    """Decode one base64url segment strictly, without PyJWT's per-character loop.

    Every character must be in the base64url alphabet, checked by C-speed strict decoding: no
    `=` padding, which PyJWT would accept, so one token has exactly one spelling (and one cache
    entry). The encoding must be canonical (unused trailing bits zero) for the same reason.
    """
    rest = len(raw) & 3
    standard = raw.translate(_TO_STANDARD)
    if rest:
        if rest == 1 or raw[-1] not in _CANONICAL_LAST[rest]:
            raise InvalidToken(_MALFORMED, reason=Reason.MALFORMED)
        standard += _PADDING[rest]
    try:
        return binascii.a2b_base64(standard, strict_mode=True)
    except binascii.Error as exc:
        raise InvalidToken(_MALFORMED, reason=Reason.MALFORMED) from exc


def _rs256_valid(key: rsa.RSAPublicKey, signature: bytes, signing_input: bytes) -> bool:
    """Tell whether `signature` is an RS256 signature of `signing_input` by `key` (RFC 7518 3.3).

    RSASSA-PKCS1-v1_5 verification as RFC 8017 section 8.2.2 spells it: the signature is exactly
    k octets (step 1), RSAVP1 recovers the encoded message, which OpenSSL checks is
    0x00 || 0x01 || PS of 0xff || 0x00 || T and strips to T (steps 2 and 3, its strict type 1
    check), and T must equal the SHA-256 DigestInfo of the signing input octet for octet (step 4:
    encode and compare, so no other hash, DigestInfo spelling or trailing data passes). It is
    what `key.verify` checks; asking OpenSSL for T and hashing with hashlib costs about 1 µs
    less than `key.verify`, which looks its digest up in OpenSSL on every call (docs/performance.md).
    """
    if len(signature) != (key.key_size + 7) >> 3:
        return False
    try:
        recovered = key.recover_data_from_signature(signature, _PKCS1V15, _NO_DIGEST_INFO)
    except InvalidSignature:
        return False
    return recovered == _SHA256_DIGEST_INFO + _sha256(signing_input).digest()


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, refusing duplicate member names (parsers disagree on which wins)."""
    members = dict(pairs)
    if len(members) != len(pairs):
        raise ValueError("duplicate member name")
    return members


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_STRICT_JSON = json.JSONDecoder(object_pairs_hook=_unique_members, parse_constant=_no_constant)


def strict_json(data: bytes) -> Any:
    """Parse UTF-8 JSON strictly: no duplicate member names, no NaN or Infinity.

    One decoder is built once: `json.loads` with hooks would build one per call.
    """
    text = data.decode("utf-8")
    try:
        # Compact JSON, as every token carries, ends where the text does: skip `decode`'s
        # whitespace scans. Anything else (whitespace, extra data, errors) goes the full way.
        value, end = _STRICT_JSON.raw_decode(text)
    except ValueError:
        end = -1
    if end == len(text):
        return value
    return _STRICT_JSON.decode(text)


def _header(segment: bytes) -> dict[str, Any]:
    """Decode a protected header: a JSON object using no JWS extension."""
    try:
        header = strict_json(_segment(segment))
    except (ValueError, RecursionError) as exc:
        raise InvalidToken(_MALFORMED, reason=Reason.MALFORMED) from exc
    if not isinstance(header, dict):
        raise InvalidToken(_MALFORMED, reason=Reason.MALFORMED)
    if "crit" in header or "b64" in header:
        # RFC 7797 (b64) is the one extension PyJWT understands; we understand none.
        raise InvalidToken("the token uses a JWS extension this server does not accept", reason=Reason.BAD_HEADER)
    return header


def _kid_of(header: dict[str, Any]) -> str:
    """Apply the header policy (alg, typ, kid) and return the kid."""
    if header.get("alg") not in ALGORITHMS:
        raise InvalidToken("the token's algorithm is not accepted", reason=Reason.BAD_HEADER)
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES:
        raise InvalidToken("the token type must be at+jwt", reason=Reason.BAD_HEADER)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 128:
        raise InvalidToken("the token has no usable 'kid' header", reason=Reason.BAD_HEADER)
    return kid


# -- the verified-token cache -----------------------------------------------------------


# Not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) cost about 1 µs per
# new token, a NamedTuple slowed every cache hit; nothing assigns to an entry once made.
@dataclass(slots=True)
class CachedToken:
    """What a verified token left behind: its claims, the key that verified it, its expiry."""

    claims: dict[str, Any]
    kid: str
    key: rsa.RSAPublicKey
    expires_at: float


class VerifiedTokens:
    """A bounded, thread-safe map of verified tokens, least recently used evicted first.

    An entry is served only while the clock is before the token's `exp` and is dropped once
    it is not; a sweep at most every `sweep_interval` seconds drops expired entries nobody
    asks for. `purge_kids` drops the entries of keys that are no longer published.

    `admit` lets a token in on its second sight only (the "doorkeeper" of TinyLFU, Einziger
    et al. 2017): the first time, only a number says it was seen. Tokens sent once (a client
    that takes a new token per call, a burst of one-shot tokens) then neither evict the tokens
    in use nor fill memory with entries never read; a token in use is verified twice, then
    served from here.
    """

    def __init__(
        self,
        max_entries: int = DEFAULT_CACHE_SIZE,
        *,
        clock: Callable[[], float] = time.time,
        sweep_interval: float = 1.0,
    ) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self.sweep_interval = sweep_interval
        self._entries: OrderedDict[str, CachedToken] = OrderedDict()
        self._seen: OrderedDict[int, None] = OrderedDict()  # hashes of tokens seen once, oldest first
        self._lock = threading.Lock()
        self._next_sweep = float("-inf")

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, token: object) -> bool:
        return token in self._entries

    def get(self, token: str) -> CachedToken | None:
        """Return the entry of a token that has not expired, or None."""
        now = self.clock()
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            if now >= entry.expires_at:
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            return entry

    def admit(self, token: str) -> bool:
        """Return whether a verified token should be stored: it was seen before; else note that it was.

        The note is the token's hash, of at most `max_entries` tokens: two tokens sharing a
        hash only let the second in on its first sight.
        """
        if self.max_entries <= 0:
            return False
        digest = hash(token)
        with self._lock:
            seen = self._seen
            if digest in seen:
                del seen[digest]
                return True
            seen[digest] = None
            if len(seen) > self.max_entries:
                seen.popitem(last=False)
        return False

    def put(self, token: str, entry: CachedToken) -> None:
        """Remember a verified token until its expiry, evicting the least recently used."""
        now = self.clock()
        if self.max_entries <= 0 or now >= entry.expires_at:
            return
        entries = self._entries
        with self._lock:
            if now >= self._next_sweep:
                self._sweep(now)
            entries[token] = entry
            entries.move_to_end(token)
            while len(entries) > self.max_entries:
                entries.popitem(last=False)

    def discard(self, token: str) -> None:
        """Forget a token."""
        with self._lock:
            self._entries.pop(token, None)

    def purge_kids(self, kept: Collection[str]) -> int:
        """Drop every entry whose key is not among `kept`; return how many went."""
        with self._lock:
            gone = [token for token, entry in self._entries.items() if entry.kid not in kept]
            for token in gone:
                del self._entries[token]
        return len(gone)

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self.sweep_interval
        expired = [token for token, entry in self._entries.items() if now >= entry.expires_at]
        for token in expired:
            del self._entries[token]


# -- the verifier -----------------------------------------------------------------------


class Verifier:
    """Verify access tokens against keys from a key source, remembering verified tokens."""

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audience: str,
        leeway: int = DEFAULT_LEEWAY,
        max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
        max_lifetime: int = MAX_LIFETIME,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.max_token_bytes = max_token_bytes
        self.max_lifetime = max_lifetime
        self.clock = clock
        self.cache = VerifiedTokens(cache_size, clock=clock)
        self._known_headers: dict[bytes, str] = {}
        if isinstance(keys, WatchedKeySource):
            keys.subscribe(self.keys_changed)

    def keys_changed(self, kids: frozenset[str]) -> None:
        """Forget tokens verified with keys that are no longer published."""
        self.cache.purge_kids(kids)

    def verify(self, token: str) -> dict[str, Any]:
        """Return the verified claims, or raise InvalidToken (or the key source's errors: see TokenVerifier)."""
        if not isinstance(token, str):  # bytes, None, a number: a caller's slip, still a refusal and never a 500
            raise InvalidToken(_MALFORMED, reason=Reason.MALFORMED)
        if len(token) > self.max_token_bytes:
            raise InvalidToken(f"the token is larger than {self.max_token_bytes} bytes", reason=Reason.TOO_LARGE)
        cache = self.cache
        if cache.max_entries <= 0:
            return self._verify(token)[0]  # nothing else holds these claims: no copy
        entry = cache.get(token)
        if entry is not None:
            try:
                # Also keeps the key set fresh, and raises if the key was withdrawn.
                current = self.keys.get(entry.kid)
            except BaseException:
                cache.discard(token)
                observe.current().cache("miss")
                raise
            if current is entry.key:
                observe.current().cache("hit")
                return dict(entry.claims)
            cache.discard(token)
        observe.current().cache("miss")
        claims, kid, key = self._verify(token)
        if not cache.admit(token):
            return claims  # seen once so far: nothing else holds these claims, no copy
        cache.put(token, CachedToken(claims, kid, key, int(claims["exp"])))
        return dict(claims)

    def _verify(self, token: str) -> tuple[dict[str, Any], str, rsa.RSAPublicKey]:
        # The common path runs in this one frame: the split (exactly three segments, as PyJWT
        # splits) and `_segment`'s rules for the payload and signature are spelled out here, as a
        # call per step cost about as much as the step.
        if not token.isascii():
            raise InvalidToken(_MALFORMED, reason=Reason.MALFORMED)
        signing_input, _, signature_segment = token.encode("ascii").rpartition(b".")
        segments = signing_input.split(b".")
        if len(segments) != 2:
            raise InvalidToken(_MALFORMED, reason=Reason.MALFORMED)
        header_segment, payload_segment = segments
        # Each issuer key yields one header: remember the kid of headers that verified.
        kid = self._known_headers.get(header_segment)
        known = kid is not None
        header = _header(header_segment) if kid is None else _KNOWN
        payload = payload_segment.translate(_TO_STANDARD)
        signature = signature_segment.translate(_TO_STANDARD)
        rest = len(payload) & 3
        if rest:
            if rest == 1 or payload[-1] not in _CANONICAL_LAST[rest]:
                raise InvalidToken(_MALFORMED, reason=Reason.MALFORMED)
            payload += _PADDING[rest]
        rest = len(signature) & 3
        if rest:
            if rest == 1 or signature[-1] not in _CANONICAL_LAST[rest]:
                raise InvalidToken(_MALFORMED, reason=Reason.MALFORMED)
            signature += _PADDING[rest]
        try:
            payload = binascii.a2b_base64(payload, strict_mode=True)
            signature = binascii.a2b_base64(signature, strict_mode=True)
        except binascii.Error as exc:
            raise InvalidToken(_MALFORMED, reason=Reason.MALFORMED) from exc
        if kid is None:
            kid = _kid_of(header)
        key = self.keys.get(kid)
        if not _rs256_valid(key, signature, signing_input):
            raise InvalidToken("the token's signature is invalid", reason=Reason.BAD_SIGNATURE)
        claims = self._claims_of(payload)
        if not known:
            if len(self._known_headers) >= MAX_KNOWN_HEADERS:
                self._known_headers = {}
            self._known_headers[header_segment] = kid
        return claims, kid, key

    def _claims_of(self, payload: bytes) -> dict[str, Any]:
        """Decode the claims and apply PyJWT's claim rules, in its order, on our clock.

        These are the rules of `jwt.decode` with `options={"require": REQUIRED_CLAIMS,
        "strict_aud": False}` (api_jwt._validate_claims: `int()` time claims, `aud` a string or
        a list of strings); the unit tests compare the two on every case. Each value is read
        once, and the common case (whole-second times, `aud` our audience) is tested first.
        """
        try:
            claims = strict_json(payload)
        except (ValueError, RecursionError) as exc:
            raise InvalidToken("the token is malformed or its claims are invalid", reason=Reason.MALFORMED) from exc
        if not isinstance(claims, dict):
            raise InvalidToken("the token is malformed or its claims are invalid", reason=Reason.MALFORMED)
        get = claims.get
        iss, aud, exp, iat, sub, jti = get("iss"), get("aud"), get("exp"), get("iat"), get("sub"), get("jti")
        if iss is None or aud is None or exp is None or iat is None or sub is None or jti is None:
            name = next(name for name in REQUIRED_CLAIMS if get(name) is None)
            raise InvalidToken(f"the token lacks the required '{name}' claim", reason=Reason.BAD_CLAIMS)
        leeway = self.leeway
        now = self.clock()
        if type(iat) is not int or not 0 <= iat < MAX_NUMERIC_DATE:
            iat = _integer(iat)
        if iat > now + leeway:
            raise InvalidToken("the token is not valid yet", reason=Reason.NOT_YET_VALID)
        if "nbf" in claims and _integer(claims["nbf"]) > now + leeway:
            raise InvalidToken("the token is not valid yet", reason=Reason.NOT_YET_VALID)
        if type(exp) is not int or not 0 <= exp < MAX_NUMERIC_DATE:
            exp = _integer(exp)
        if exp <= now - leeway:
            raise TokenExpired()
        if exp - iat > self.max_lifetime:
            raise InvalidToken("the token's lifetime is longer than this server accepts", reason=Reason.BAD_CLAIMS)
        # A JSON value equal to a string is that string: no type test is needed when they are equal.
        if iss != self.issuer:
            raise InvalidToken("the token was not issued by the trusted issuer", reason=Reason.WRONG_ISSUER)
        if aud != self.audience:
            _check_audience(aud, self.audience)
        if type(sub) is not str or not sub:
            raise InvalidToken("the 'sub' claim must be a non-empty string", reason=Reason.BAD_CLAIMS)
        if type(jti) is not str or not jti:
            raise InvalidToken("the 'jti' claim must be a non-empty string", reason=Reason.BAD_CLAIMS)
        if type(get("scope", "")) is not str:
            raise InvalidToken("the 'scope' claim must be a string", reason=Reason.BAD_CLAIMS)
        if type(get("client_id", "")) is not str:
            raise InvalidToken("the 'client_id' claim must be a string", reason=Reason.BAD_CLAIMS)
        return claims


def _check_audience(aud: Any, audience: str) -> None:
    """Accept `aud` naming `audience`: a non-empty string, or a list of strings, holding it."""
    if not aud:
        raise InvalidToken("the token lacks the required 'aud' claim", reason=Reason.BAD_CLAIMS)
    if isinstance(aud, str):
        aud = [aud]
    if not isinstance(aud, list) or not all(isinstance(a, str) for a in aud) or audience not in aud:
        raise InvalidToken("the token is not meant for this API (audience)", reason=Reason.WRONG_AUDIENCE)


def _integer(value: Any) -> int:
    """Return a NumericDate (RFC 7519 2) as whole seconds; strings and booleans are refused.

    PyJWT would accept `"1700000000"` and `true` here (it calls `int()`); we do not.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < MAX_NUMERIC_DATE:
        raise InvalidToken("the token is malformed or its claims are invalid", reason=Reason.MALFORMED)
    return int(value)
