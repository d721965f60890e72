"""In-process costs, each measured side by side with its raw `cryptography` floor.

Rounds interleave the measured paths, so drift (frequency scaling, a noisy neighbour) hits
them alike; each figure is the median of the rounds' per-operation times. First-sight
verification cycles through 64 distinct tokens with the cache off, and the raw floor verifies
the same 64 signatures. PyJWT, authlib and joserfc verify the same 64 tokens with a preloaded
key, each asked to check what our verifier checks (RS256 only, `typ` at+jwt, `iss`, `aud`,
`exp`, `iat` and `sub`/`jti` present); before timing, every one of them must accept a valid
token and refuse a wrong audience, a wrong issuer, an expired token and a wrong `typ`.

`python -m bench.micro` runs only this part (a few seconds) and prints its rows.
"""

from __future__ import annotations

import importlib
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from joserfc import jwt as joserfc_jwt
from joserfc.errors import JoseError as JoserfcError
from joserfc.jwk import RSAKey

from issuer.keys import SigningKey
from issuer.tokens import Grant, mint_access_token
from jwt_verifier.jose import b64url_decode, public_jwk
from jwt_verifier.verifier import InvalidToken, Verifier

ISSUER = "http://localhost:8000"
AUDIENCE = "jwt-split-api"
REQUIRED = ["iss", "aud", "exp", "iat", "sub", "jti"]
ACCEPTED_TYPES = {"at+jwt", "application/at+jwt"}
FIRST_SIGHT_TARGET = 1.3  # the first-sight (cache off) target of issue 20, times the raw RSA verify

# The other verifiers measured, in the order the rows print.
COMPARED = {
    "pyjwt_decode_us": f"PyJWT {version('PyJWT')} `jwt.decode`",
    "authlib_us": f"authlib {version('authlib')} `authlib.jose.JsonWebToken`",
    "joserfc_us": f"joserfc {version('joserfc')} `jwt.decode` + `JWTClaimsRegistry`",
}


@dataclass(frozen=True)
class MicroResults:
    """Microseconds per operation (medians over rounds)."""

    rsa_verify_us: float
    verify_first_us: float
    verify_first_stored_us: float
    pyjwt_decode_us: float
    authlib_us: float
    joserfc_us: float
    verify_cached_us: float
    rsa_sign_us: float
    mint_us: float

    def as_dict(self) -> dict[str, float]:
        """Return the figures by name."""
        return dict(self.__dict__)


class _Keys:
    def __init__(self, kid: str, key: rsa.RSAPublicKey) -> None:
        self._keys = {kid: key}

    def get(self, kid: str) -> rsa.RSAPublicKey:
        return self._keys[kid]


def _per_op_us(fn: Callable[[], Any], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def _rounds(paths: dict[str, tuple[Callable[[], Any], int]], rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, (fn, n) in paths.items():
            samples[name].append(_per_op_us(fn, n))
    return {name: statistics.median(values) for name, values in samples.items()}


def _typ_checked(header: dict[str, Any]) -> None:
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES:
        raise InvalidToken("the token type must be at+jwt")


def pyjwt_verifier(public: rsa.RSAPublicKey) -> Callable[[str], dict[str, Any]]:
    """PyJWT's `jwt.decode` (as `decode_complete`, for the header's `typ`) with our claim rules."""
    options: Any = {"require": REQUIRED, "strict_aud": False}

    def verify(token: str) -> dict[str, Any]:
        decoded = jwt.decode_complete(
            token, public, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER, options=options
        )
        _typ_checked(decoded["header"])
        claims: dict[str, Any] = decoded["payload"]
        return claims

    return verify


def authlib_verifier(public: rsa.RSAPublicKey) -> Callable[[str], dict[str, Any]]:
    """authlib's `JsonWebToken` (RS256 only) with essential claims and `validate()`."""
    # authlib ships no type information (imported by name, it is Any to mypy), and warns
    # that authlib.jose is deprecated in favour of joserfc, which is measured on its own row.
    with warnings.catch_warnings():
        importlib.import_module("authlib.deprecate")  # adds an "always" filter for that warning,
        warnings.simplefilter("ignore")  # which this one, added after it, overrides
        jose = importlib.import_module("authlib.jose")
    decoder = jose.JsonWebToken(["RS256"])
    key = jose.JsonWebKey.import_key(dict(public_jwk(public)))
    claims_options: dict[str, dict[str, Any]] = {name: {"essential": True} for name in REQUIRED}
    claims_options["iss"]["value"] = ISSUER
    claims_options["aud"]["value"] = AUDIENCE

    def verify(token: str) -> dict[str, Any]:
        claims = decoder.decode(token, key, claims_options=claims_options)
        claims.validate()
        _typ_checked(claims.header)
        return dict(claims)

    return verify


def joserfc_verifier(public: rsa.RSAPublicKey) -> Callable[[str], dict[str, Any]]:
    """joserfc's `jwt.decode` (RS256 only) and a `JWTClaimsRegistry` of essential claims."""
    key = RSAKey.import_key(public)
    registry = joserfc_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": AUDIENCE},
        exp={"essential": True},
        iat={"essential": True},
        sub={"essential": True},
        jti={"essential": True},
    )

    def verify(token: str) -> dict[str, Any]:
        decoded = joserfc_jwt.decode(token, key, algorithms=["RS256"])
        registry.validate(decoded.claims)
        _typ_checked(decoded.header)
        return decoded.claims

    return verify


def _refused_tokens(signing: SigningKey, grant: Grant, now: int) -> dict[str, str]:
    """Tokens every verifier measured here must refuse, each wrong in one way."""
    claims = mint_access_token(signing, grant, issuer=ISSUER, audience=AUDIENCE, ttl=600, now=now)[1]
    header = {"alg": "RS256", "typ": "JWT", "kid": signing.kid}
    wrong_typ = jwt.encode(claims, signing.private_key, algorithm="RS256", headers=header)
    return {
        "another audience": mint_access_token(signing, grant, issuer=ISSUER, audience="other-api", ttl=600)[0],
        "another issuer": mint_access_token(signing, grant, issuer="http://evil", audience=AUDIENCE, ttl=600)[0],
        "expired": mint_access_token(signing, grant, issuer=ISSUER, audience=AUDIENCE, ttl=60, now=now - 3600)[0],
        "typ JWT": wrong_typ,
    }


def check_same_rules(
    verifiers: dict[str, tuple[Callable[[str], Any], tuple[type[Exception], ...]]], valid: str, refused: dict[str, str]
) -> None:
    """Fail unless every verifier accepts `valid` and refuses each of `refused` (so rows compare like with like)."""
    for name, (verify, errors) in verifiers.items():
        if verify(valid)["preferred_username"] != "alice":
            raise RuntimeError(f"{name} returned the wrong claims")
        for why, token in refused.items():
            try:
                verify(token)
            except errors:
                continue
            raise RuntimeError(f"{name} accepted a token it must refuse: {why}")


def run(rounds: int = 60) -> MicroResults:
    """Measure verification and signing costs in this (single-threaded) process."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key()
    kid = public_jwk(public)["kid"]
    grant = Grant("alice-id", "alice", "cli", "profile admin")
    signing = SigningKey(kid, private)
    now = int(time.time())
    tokens = [
        mint_access_token(signing, grant, issuer=ISSUER, audience=AUDIENCE, ttl=3600, now=now)[0] for _ in range(64)
    ]
    token = tokens[0]
    message, _, _ = token.rpartition(".")
    # The raw floor verifies the same tokens' signatures, so both see the same working set.
    raw = [(m.encode(), b64url_decode(s)) for m, _, s in (t.rpartition(".") for t in tokens)]

    keys = _Keys(kid, public)
    first_sight = Verifier(keys, issuer=ISSUER, audience=AUDIENCE, cache_size=0)
    # A cache too small to hold the 64 tokens: every call misses, verifies and notes the token as
    # seen (a token is stored on its second sight, which never comes within the cache's memory).
    stored = Verifier(keys, issuer=ISSUER, audience=AUDIENCE, cache_size=16)
    cached = Verifier(keys, issuer=ISSUER, audience=AUDIENCE)
    cached.verify(token)
    others = {
        "pyjwt_decode_us": pyjwt_verifier(public),
        "authlib_us": authlib_verifier(public),
        "joserfc_us": joserfc_verifier(public),
    }
    authlib_errors = importlib.import_module("authlib.jose.errors").JoseError
    check_same_rules(
        {
            "jwt_verifier": (first_sight.verify, (InvalidToken,)),
            "PyJWT": (others["pyjwt_decode_us"], (jwt.InvalidTokenError, InvalidToken)),
            "authlib": (others["authlib_us"], (authlib_errors, InvalidToken)),
            "joserfc": (others["joserfc_us"], (JoserfcError, InvalidToken)),
        },
        token,
        _refused_tokens(signing, grant, now),
    )
    cycle = iter(range(1 << 62))

    def rsa_verify() -> None:
        signed, signature = raw[next(cycle) % len(raw)]
        public.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())

    def cycling(verify: Callable[[str], Any]) -> Callable[[], None]:
        # A different token each call, as a stream of new tokens would be.
        def call() -> None:
            verify(tokens[next(cycle) % len(tokens)])

        return call

    def verify_cached() -> None:
        cached.verify(token)

    def rsa_sign() -> None:
        private.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())

    def mint() -> None:
        mint_access_token(signing, grant, issuer=ISSUER, audience=AUDIENCE, ttl=600)

    verify_paths: dict[str, tuple[Callable[[], Any], int]] = {
        "rsa_verify_us": (rsa_verify, 256),
        "verify_first_us": (cycling(first_sight.verify), 256),
        "verify_first_stored_us": (cycling(stored.verify), 256),
        **{name: (cycling(verify), 64) for name, verify in others.items()},
        "verify_cached_us": (verify_cached, 2048),
    }
    for fn, _ in verify_paths.values():
        fn()
    figures = _rounds(verify_paths, rounds)
    rsa_sign()
    mint()
    figures |= _rounds({"rsa_sign_us": (rsa_sign, 16), "mint_us": (mint, 16)}, rounds)
    return MicroResults(**figures)


def rows(m: dict[str, float]) -> list[tuple[str, float, float]]:
    """Return (measure, µs, ratio to the raw verify) rows of the verification figures."""
    floor = m["rsa_verify_us"]
    named = [
        ("raw RSA-2048 verify (`cryptography`)", "rsa_verify_us"),
        ("jwt_verifier, first sight of a token (cache off)", "verify_first_us"),
        ("jwt_verifier, first sight with the cache on (noted as seen)", "verify_first_stored_us"),
        *((f"{label}, preloaded key", name) for name, label in COMPARED.items()),
        ("jwt_verifier, repeated token (cache hit)", "verify_cached_us"),
    ]
    return [(label, m[name], m[name] / floor) for label, name in named]


def main() -> None:
    """Print the verification rows: `python -m bench.micro`."""
    results = run().as_dict()
    for label, us, ratio in rows(results):
        print(f"{label:75s} {us:8.2f} µs {ratio:6.2f}x")
    first = results["verify_first_us"] / results["rsa_verify_us"]
    verdict = "met" if first <= FIRST_SIGHT_TARGET else "MISSED"
    print(
        f"{'first sight (cache off) over raw RSA-2048 verify, target':75s} {first:6.2f}x ≤ {FIRST_SIGHT_TARGET}x {verdict}"
    )
    print(f"{'mint_access_token over raw RSA-2048 sign':75s} {results['mint_us']:8.0f} µs", end=" ")
    print(f"{results['mint_us'] / results['rsa_sign_us']:6.2f}x")


if __name__ == "__main__":
    main()
