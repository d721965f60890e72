"""The cost of a DPoP-bound request, side by side with its raw `cryptography` floor.

A DPoP-bound request (RFC 9449) costs a token verification and a proof verification. The floor
is the raw RS256 verify of the token plus the raw ES256 verify of the proof; the target is at
most that plus 25%. Each token is seen once (the verified-token cache off), each proof is
fresh, and the replay store is the one an API uses: a SQLite file shared by its workers (the
in-process store is measured too). Rounds interleave the paths, and each figure is the median
of the rounds' per-request times.

`python -m bench.dpop` prints the rows (a few seconds).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from jwt_verifier.dpop import access_token_hash, jwk_thumbprint
from jwt_verifier.dpop_scheme import DPoPPolicy, DPoPRequest
from jwt_verifier.jose import b64url_decode, b64url_encode, public_jwk
from jwt_verifier.protector import ResourceProtector
from jwt_verifier.replay import MemoryReplayStore, ReplayStore, SqliteReplayStore
from jwt_verifier.verifier import Verifier

ISSUER = "http://localhost:8000"
AUDIENCE = "jwt-split-api"
URL = "https://api.example/orders"
BATCH = 64


class _Keys:
    def __init__(self, kid: str, key: rsa.RSAPublicKey) -> None:
        self._keys = {kid: key}

    def get(self, kid: str) -> rsa.RSAPublicKey:
        return self._keys[kid]


def _segment(part: Mapping[str, object]) -> str:
    return b64url_encode(json.dumps(part, separators=(",", ":")).encode())


def _proof_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    x, y = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")
    return {"kty": "EC", "crv": "P-256", "x": b64url_encode(x), "y": b64url_encode(y)}


def _proof(key: ec.EllipticCurvePrivateKey, token: str) -> str:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": _proof_jwk(key)}
    claims = {
        "jti": uuid.uuid4().hex,
        "htm": "GET",
        "htu": URL,
        "iat": int(time.time()),
        "ath": access_token_hash(token),
    }
    signing_input = f"{_segment(header)}.{_segment(claims)}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def run(rounds: int = 15) -> dict[str, float]:
    """Return microseconds per request: raw floor, DPoP with the SQLite store, with the in-process store."""
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    client = ec.generate_private_key(ec.SECP256R1())
    kid = public_jwk(signing.public_key())["kid"]
    jkt = jwk_thumbprint(_proof_jwk(client))
    verifier = Verifier(_Keys(kid, signing.public_key()), issuer=ISSUER, audience=AUDIENCE, cache_size=0)
    now = int(time.time())
    tokens = [
        jwt.encode(
            {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": "alice",
                "exp": now + 3600,
                "iat": now,
                "jti": uuid.uuid4().hex,
                "cnf": {"jkt": jkt},
            },
            signing,
            algorithm="RS256",
            headers={"kid": kid, "typ": "at+jwt"},
        )
        for _ in range(BATCH)
    ]
    directory = Path(tempfile.mkdtemp(prefix="bench-dpop-"))
    stores: dict[str, ReplayStore] = {
        "dpop_sqlite_us": SqliteReplayStore(directory / "replay.sqlite3"),
        "dpop_memory_us": MemoryReplayStore(),
    }
    protectors = {
        name: ResourceProtector(
            verifier,
            dpop=DPoPPolicy(algorithms=("ES256",), max_age=60, leeway=10, required=False, replay=store),
        )
        for name, store in stores.items()
    }
    rsa_public, ec_public = signing.public_key(), client.public_key()
    samples: dict[str, list[float]] = {"floor_us": [], **{name: [] for name in protectors}}
    for _ in range(rounds):
        batches = {name: [(t, _proof(client, t)) for t in tokens] for name in protectors}
        floor_inputs = []
        for token, proof in batches["dpop_memory_us"]:
            head, _, sig = token.rpartition(".")
            p_head, _, p_sig = proof.rpartition(".")
            raw = b64url_decode(p_sig)
            der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
            floor_inputs.append((head.encode(), b64url_decode(sig), p_head.encode(), der))

        def floor(floor_inputs: list[tuple[bytes, bytes, bytes, bytes]] = floor_inputs) -> None:
            for head, sig, p_head, der in floor_inputs:
                rsa_public.verify(sig, head, padding.PKCS1v15(), hashes.SHA256())
                ec_public.verify(der, p_head, ec.ECDSA(hashes.SHA256()))

        def requests(name: str, batches: dict[str, list[tuple[str, str]]] = batches) -> Callable[[], None]:
            protector, batch = protectors[name], batches[name]

            def go() -> None:
                for token, proof in batch:
                    protector.authenticate([f"DPoP {token}"], dpop=DPoPRequest("GET", URL, (proof,)))

            return go

        for name, fn in [("floor_us", floor), *((name, requests(name)) for name in protectors)]:
            started = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - started) / BATCH * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


TARGET = 1.25  # issue 22 item 6: at most the raw RSA verify plus the raw proof-signature verify plus 25%


def rows(figures: dict[str, float]) -> list[tuple[str, str, str, str, bool | None]]:
    """Return (measure, figure, ratio, target, met) rows, as bench/report.py prints them."""
    floor = figures["floor_us"]
    return [
        ("raw RS256 verify + raw ES256 verify (`cryptography`)", f"{floor:.1f} µs", "1.00x", "floor", None),
        *(
            (
                f"10. DPoP-bound request, first sight, fresh proof ({label} replay store)",
                f"{figures[name]:.1f} µs",
                f"{figures[name] / floor:.2f}x",
                f"≤ {TARGET}x",
                figures[name] / floor <= TARGET,
            )
            for name, label in (("dpop_sqlite_us", "SQLite"), ("dpop_memory_us", "in-process"))
        ),
    ]


def main() -> None:
    """Print the figures and their ratio to the floor."""
    figures = run()
    floor = figures["floor_us"]
    print(f"raw RS256 verify + raw ES256 verify: {floor:8.1f} us")
    for name in ("dpop_sqlite_us", "dpop_memory_us"):
        print(f"{name:35s}: {figures[name]:8.1f} us  ({figures[name] / floor:.2f}x the floor; target <= {TARGET}x)")


if __name__ == "__main__":
    main()
