"""Forged and malformed tokens, sent over HTTP to the running resource, the way attackers do.

Each case asserts a 401 with the RFC 6750 `invalid_token` challenge (or 431 where gunicorn
refuses an oversized header before the app), never a 500, and that the resource made no
outbound request because of it: the attacker's key server is never contacted, and the
issuer's JWKS is not fetched again (but for unknown kids, which may cause one fetch per
cooldown by design).

Claim-level cases are signed with the issuer's real private key, so that they are refused
for the reason they name and not merely for a bad signature.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from jwt_verifier.jose import b64url_encode, public_jwk
from tests.security.conftest import AttackerServer
from tests.support.stack import LoopbackStack
from tests.support.tokens import make_claims


@dataclass
class Ctx:
    """What a forger has (public material, their own keys) and, for claim cases, the real key."""

    iss: str
    kid: str
    issuer_key: rsa.RSAPrivateKey
    attacker_key: rsa.RSAPrivateKey
    attacker_url: str

    @property
    def public(self) -> rsa.RSAPublicKey:
        return self.issuer_key.public_key()

    def claims(self, **overrides: Any) -> dict[str, Any]:
        return make_claims(issuer=self.iss, scope="profile admin", **overrides)


def b64json(value: Any) -> str:
    return b64url_encode(json.dumps(value).encode())


def raw_sign(key: rsa.RSAPrivateKey, header: str, payload: str) -> str:
    """RS256-sign exact header and payload text (for JSON no library would write)."""
    signing_input = f"{b64url_encode(header.encode())}.{b64url_encode(payload.encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url_encode(signature)}"


def real(ctx: Ctx, claims: dict[str, Any] | None = None, **header: Any) -> str:
    """A token signed by the issuer's real key, with the given claims and header changes."""
    fields = {"kid": ctx.kid, "typ": "at+jwt", **header}
    return jwt.encode(ctx.claims() if claims is None else claims, ctx.issuer_key, algorithm="RS256", headers=fields)


def hmac_forgery(alg: str, secret: bytes) -> Callable[[Ctx], str]:
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]

    def forge(ctx: Ctx) -> str:
        signing_input = f"{b64json({'alg': alg, 'typ': 'at+jwt', 'kid': ctx.kid})}.{b64json(ctx.claims())}"
        key = secret if secret else b""
        return f"{signing_input}.{b64url_encode(hmac.new(key, signing_input.encode(), digest).digest())}"

    return forge


def public_forms(ctx: Ctx) -> dict[str, bytes]:
    """Every way the issuer's public key can be written down, as an HMAC secret."""
    spki = ctx.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    pkcs1 = ctx.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    der = ctx.public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk = json.dumps(public_jwk(ctx.public)).encode()
    modulus = ctx.public.public_numbers().n.to_bytes(256, "big")
    return {
        "PEM": spki,
        "PEM without newline": spki.rstrip(b"\n"),
        "PKCS1 PEM": pkcs1,
        "DER": der,
        "JWK JSON": jwk,
        "bare modulus": modulus,
    }


def confusion(alg: str, form: str) -> Callable[[Ctx], str]:
    return lambda ctx: hmac_forgery(alg, public_forms(ctx)[form])(ctx)


def attacker_signed(ctx: Ctx, **header: Any) -> str:
    kid = public_jwk(ctx.attacker_key.public_key())["kid"]
    return jwt.encode(
        ctx.claims(), ctx.attacker_key, algorithm="RS256", headers={"kid": kid, "typ": "at+jwt", **header}
    )


def attacker_cert(ctx: Ctx) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ctx.attacker_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ctx.attacker_key, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def es256_zero(ctx: Ctx) -> str:
    """CVE-2022-21449: an ECDSA signature with r = s = 0."""
    signing_input = f"{b64json({'alg': 'ES256', 'typ': 'at+jwt', 'kid': ctx.kid})}.{b64json(ctx.claims())}"
    return f"{signing_input}.{b64url_encode(bytes(64))}"


def es256_rogue(ctx: Ctx) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(ctx.claims(), key, algorithm="ES256", headers={"kid": ctx.kid, "typ": "at+jwt"})


def unsigned(alg: str, signature: str = "") -> Callable[[Ctx], str]:
    return lambda ctx: f"{b64json({'alg': alg, 'typ': 'at+jwt', 'kid': ctx.kid})}.{b64json(ctx.claims())}.{signature}"


def with_payload_text(text: Callable[[Ctx], str]) -> Callable[[Ctx], str]:
    return lambda ctx: raw_sign(
        ctx.issuer_key, json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": ctx.kid}), text(ctx)
    )


def claims_text(ctx: Ctx, extra: str) -> str:
    """The valid claims as JSON text with `extra` members appended (duplicates, NaN, ...)."""
    return json.dumps(ctx.claims())[:-1] + ", " + extra + "}"


def now() -> int:
    return int(time.time())


# Tokens naming a kid the issuer does not publish may cost one JWKS fetch per cooldown per
# worker, by design; every other case must cost none.
UNKNOWN_KID_CASES = {
    "unknown kid",
    "kid path traversal",
    "kid SQL",
    "kid shell",
    "kid null byte",
    "rogue key own kid",
    "jku to attacker",
    "x5u to attacker",
    "x5c attacker certificate",
    "embedded jwk",
}

CASES: dict[str, Callable[[Ctx], str]] = {
    # alg none, every spelling, with and without a signature
    "alg none": unsigned("none"),
    "alg None": unsigned("None"),
    "alg NONE": unsigned("NONE"),
    "alg nOnE": unsigned("nOnE"),
    "alg none with signature": unsigned("none", "c2lnbmF0dXJl"),
    # algorithm confusion: HMAC keyed with the published public key, in every form
    **{
        f"{alg} with public key as {form}": confusion(alg, form)
        for alg in ("HS256", "HS384", "HS512")
        for form in ("PEM", "PEM without newline", "PKCS1 PEM", "DER", "JWK JSON", "bare modulus")
    },
    "HS256 with empty secret": hmac_forgery("HS256", b""),
    # signatures
    "stripped signature": lambda ctx: real(ctx).rsplit(".", 1)[0] + ".",
    "signature segment missing": lambda ctx: real(ctx).rsplit(".", 1)[0],
    "another RSA key with the real kid": lambda ctx: jwt.encode(
        ctx.claims(), ctx.attacker_key, algorithm="RS256", headers={"kid": ctx.kid, "typ": "at+jwt"}
    ),
    "signature of another token": lambda ctx: (
        real(ctx, ctx.claims(sub="bob")).rsplit(".", 1)[0] + "." + real(ctx).rsplit(".", 1)[1]
    ),
    "rogue key own kid": attacker_signed,
    "unknown kid": lambda ctx: real(ctx, kid="no-such-kid"),
    "kid path traversal": lambda ctx: real(ctx, kid="../../../../../../etc/passwd"),
    "kid SQL": lambda ctx: real(ctx, kid="' OR '1'='1'; DROP TABLE signing_keys; --"),
    "kid shell": lambda ctx: real(ctx, kid="$(touch /tmp/pwned); `id`"),
    "kid null byte": lambda ctx: real(ctx, kid="abc\u0000def"),
    "kid not a string": lambda ctx: raw_sign(
        ctx.issuer_key, json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": [ctx.kid]}), json.dumps(ctx.claims())
    ),
    # key-carrying headers: never followed, never trusted
    "jku to attacker": lambda ctx: attacker_signed(ctx, jku=f"{ctx.attacker_url}/jwks.json"),
    "x5u to attacker": lambda ctx: attacker_signed(ctx, x5u=f"{ctx.attacker_url}/cert.pem"),
    "x5c attacker certificate": lambda ctx: attacker_signed(ctx, x5c=[attacker_cert(ctx)]),
    "embedded jwk": lambda ctx: attacker_signed(ctx, jwk=dict(public_jwk(ctx.attacker_key.public_key()))),
    "jku with real kid": lambda ctx: jwt.encode(
        ctx.claims(),
        ctx.attacker_key,
        algorithm="RS256",
        headers={"kid": ctx.kid, "typ": "at+jwt", "jku": f"{ctx.attacker_url}/jwks.json"},
    ),
    "crit unknown extension": lambda ctx: real(ctx, None, crit=["urn:example:ext"], ext=1),
    "b64 false": lambda ctx: real(ctx, crit=["b64"], b64=False),
    # claims
    "expired": lambda ctx: real(ctx, ctx.claims(iat=now() - 3600, exp=now() - 600)),
    "nbf in the future": lambda ctx: real(ctx, ctx.claims(nbf=now() + 600)),
    "iat in the future": lambda ctx: real(ctx, ctx.claims(iat=now() + 600, exp=now() + 900)),
    "wrong iss": lambda ctx: real(ctx, ctx.claims(iss="https://evil.example")),
    "missing iss": lambda ctx: real(ctx, ctx.claims(iss=None)),
    "iss as array": with_payload_text(lambda ctx: json.dumps(ctx.claims(iss=None))[:-1] + f', "iss": ["{ctx.iss}"]}}'),
    "iss prefix": lambda ctx: real(ctx, ctx.claims(iss=ctx.iss[:-1])),
    "wrong aud": lambda ctx: real(ctx, ctx.claims(aud="another-api")),
    "missing aud": lambda ctx: real(ctx, ctx.claims(aud=None)),
    "aud array without ours": lambda ctx: real(ctx, ctx.claims(aud=["another-api", "jwt-split"])),
    "aud substring": lambda ctx: real(ctx, ctx.claims(aud="jwt-split")),
    "missing exp": lambda ctx: real(ctx, ctx.claims(exp=None)),
    "missing sub": lambda ctx: real(ctx, ctx.claims(sub=None)),
    "missing jti": lambda ctx: real(ctx, ctx.claims(jti=None)),
    "missing iat": lambda ctx: real(ctx, ctx.claims(iat=None)),
    "typ JWT": lambda ctx: real(ctx, typ="JWT"),
    "typ missing": lambda ctx: real(ctx, typ=None),
    "sub not a string": lambda ctx: real(ctx, ctx.claims(sub=42)),
    "exp as a string": lambda ctx: real(ctx, ctx.claims(exp=str(now() + 300))),
    "exp as true": lambda ctx: real(ctx, ctx.claims(exp=True)),
    "exp huge": lambda ctx: real(ctx, ctx.claims(exp=10**400)),
    "exp 1e400": with_payload_text(lambda ctx: claims_text(ctx, '"nbf": 1e400')),
    "exp NaN": with_payload_text(lambda ctx: json.dumps(ctx.claims(exp=None))[:-1] + ', "exp": NaN}'),
    "duplicate sub member": with_payload_text(lambda ctx: claims_text(ctx, '"sub": "root"')),
    "duplicate alg member": lambda ctx: raw_sign(
        ctx.issuer_key,
        json.dumps({"alg": "none", "typ": "at+jwt", "kid": ctx.kid})[:-1] + ', "alg": "RS256"}',
        json.dumps(ctx.claims()),
    ),
    # ES256 tricks
    "ES256 r=s=0": es256_zero,
    "ES256 rogue key with real kid": es256_rogue,
    # shape
    "JWE five parts": lambda ctx: "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.YQ.YQ.YQ.YQ",
    "extra segment": lambda ctx: real(ctx) + ".eyJ9",
    "whitespace inside": lambda ctx: real(ctx).replace(".", " .", 1),
    "newline inside": lambda ctx: real(ctx).replace(".", ".\t", 1),
    "non-base64url characters": lambda ctx: real(ctx).replace("-", "+").replace("_", "/") + "==",
    "padding characters": lambda ctx: real(ctx).replace(".", "=.", 1),
    "header not JSON": lambda ctx: f"{b64url_encode(b'not json')}.{b64json(ctx.claims())}.c2ln",
    "header a JSON array": lambda ctx: raw_sign(ctx.issuer_key, json.dumps(["RS256"]), json.dumps(ctx.claims())),
    "payload not JSON": lambda ctx: raw_sign(
        ctx.issuer_key, json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": ctx.kid}), "nope"
    ),
    "payload a JSON array": lambda ctx: raw_sign(
        ctx.issuer_key, json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": ctx.kid}), json.dumps([ctx.claims()])
    ),
    "payload a JSON string": lambda ctx: raw_sign(
        ctx.issuer_key, json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": ctx.kid}), json.dumps("alice")
    ),
    "non-UTF-8 payload": lambda ctx: (
        f"{b64json({'alg': 'RS256', 'typ': 'at+jwt', 'kid': ctx.kid})}.{b64url_encode(bytes([0xFF, 0xFE, 0x7B]))}.c2ln"
    ),
    "empty token parts": lambda ctx: "..",
    "just dots": lambda ctx: "." * 100,
    "token of 5 KB": lambda ctx: real(ctx, ctx.claims(pad="x" * 3300)),
}

OVERSIZED = {"token of 8 KB": 8 * 1024, "token of 64 KB": 64 * 1024, "token of 1 MB": 1024 * 1024}


@pytest.fixture(scope="module")
def ctx(target: LoopbackStack, attacker: AttackerServer, attacker_key: rsa.RSAPrivateKey) -> Ctx:
    kid, key = target.active_private_key()
    return Ctx(target.public_issuer, kid, key, attacker_key, attacker.url)


def test_the_suite_is_large_enough() -> None:
    assert len(CASES) + len(OVERSIZED) >= 40


def test_a_genuine_token_is_accepted_so_the_refusals_mean_something(target: LoopbackStack, ctx: Ctx) -> None:
    assert target.get("/api/me", real(ctx)).status_code == 200


@pytest.mark.parametrize("case", CASES)
def test_forged_or_malformed_token_is_refused(
    target: LoopbackStack, attacker: AttackerServer, ctx: Ctx, case: str
) -> None:
    token = CASES[case](ctx)
    fetches_before = target.jwks_fetches()

    response = target.get("/api/me", token)

    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_token"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert token not in response.text
    assert token not in response.headers["WWW-Authenticate"]
    assert attacker.hits == [], "the resource contacted the attacker's server"
    if case not in UNKNOWN_KID_CASES:
        assert target.jwks_fetches() == fetches_before, "the token made the resource fetch the JWKS"


@pytest.mark.parametrize("case", OVERSIZED)
def test_oversized_token_is_refused_before_parsing(target: LoopbackStack, attacker: AttackerServer, case: str) -> None:
    response = target.get("/api/me", "a" * OVERSIZED[case])
    assert response.status_code in {401, 413, 431}
    if response.status_code == 401:
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert attacker.hits == []


def test_unknown_kids_cost_at_most_one_jwks_fetch_per_cooldown(target: LoopbackStack, ctx: Ctx) -> None:
    before = target.jwks_fetches()
    for index in range(20):
        assert target.get("/api/me", real(ctx, kid=f"random-{index}")).status_code == 401
    assert target.jwks_fetches() - before <= target.workers  # cooldown 30 s, one window per worker


def test_a_forged_multi_factor_claim_is_refused_as_any_forgery_and_the_genuine_one_is_what_admin_needs(
    target: LoopbackStack, attacker: AttackerServer, ctx: Ctx
) -> None:
    # No special path for step-up (RFC 9470): `acr` is believed only once the signature is.
    stepped_up = ctx.claims(acr="multi-factor", amr=["pwd", "otp", "mfa"], auth_time=int(time.time()))
    kid = public_jwk(ctx.attacker_key.public_key())["kid"]
    for headers in ({"kid": ctx.kid, "typ": "at+jwt"}, {"kid": kid, "typ": "at+jwt"}):
        forged = jwt.encode(stepped_up, ctx.attacker_key, algorithm="RS256", headers=headers)
        response = target.get("/api/admin", forged)
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "invalid_token"
        assert "acr_values" not in response.headers["WWW-Authenticate"]
    assert attacker.hits == []
    # The same claims signed by the issuer pass; one factor is a step-up challenge, never a 200.
    assert target.get("/api/admin", real(ctx, stepped_up)).status_code == 200
    one_factor = target.get("/api/admin", real(ctx, ctx.claims(acr="single-factor", amr=["pwd"])))
    assert (one_factor.status_code, one_factor.json()["error"]) == (401, "insufficient_user_authentication")
