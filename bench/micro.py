"""In-process costs, each measured side by side with its raw `cryptography` floor.

Rounds interleave the measured paths, so drift (frequency scaling, a noisy neighbour) hits
them alike; each figure is the median of the rounds' per-operation times. First-sight
verification cycles through 64 distinct tokens with the cache off, and the raw floor
verifies the same 64 signatures.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from issuer.keys import SigningKey
from issuer.tokens import Grant, mint_access_token
from jwt_verifier.jose import b64url_decode, public_jwk
from jwt_verifier.verifier import Verifier

ISSUER = "http://localhost:8000"
AUDIENCE = "jwt-split-api"


@dataclass(frozen=True)
class MicroResults:
    """Microseconds per operation (medians over rounds)."""

    rsa_verify_us: float
    pyjwt_decode_us: float
    verify_first_us: float
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
    cached = Verifier(keys, issuer=ISSUER, audience=AUDIENCE)
    cached.verify(token)
    options: Any = {"require": ["iss", "aud", "exp", "iat", "sub", "jti"], "strict_aud": False}
    cycle = iter(range(1 << 62))

    def rsa_verify() -> None:
        signed, signature = raw[next(cycle) % len(raw)]
        public.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())

    def pyjwt_decode() -> None:
        jwt.decode(token, public, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER, options=options)

    def verify_first() -> None:
        # A different token each call, as a stream of new tokens would be (the cache is off).
        first_sight.verify(tokens[next(cycle) % len(tokens)])

    def verify_cached() -> None:
        cached.verify(token)

    def rsa_sign() -> None:
        private.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())

    def mint() -> None:
        mint_access_token(signing, grant, issuer=ISSUER, audience=AUDIENCE, ttl=600)

    for fn in (rsa_verify, pyjwt_decode, verify_first, verify_cached, rsa_sign, mint):
        fn()
    figures = _rounds(
        {
            "rsa_verify_us": (rsa_verify, 256),
            "pyjwt_decode_us": (pyjwt_decode, 128),
            "verify_first_us": (verify_first, 256),
            "verify_cached_us": (verify_cached, 2048),
        },
        rounds,
    )
    figures |= _rounds({"rsa_sign_us": (rsa_sign, 16), "mint_us": (mint, 16)}, rounds)
    return MicroResults(**figures)


if __name__ == "__main__":
    print(run())
