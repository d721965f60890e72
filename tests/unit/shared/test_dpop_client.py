"""A service's DPoP key and proofs: what jwt_verifier's own checks accept, the key file, and nonces."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from jwt_verifier.dpop import Nonces, verify_proof
from jwt_verifier.errors import InvalidDPoPProof, UseDPoPNonce
from jwt_verifier.jose import b64url_decode
from jwt_verifier.replay import MemoryReplayStore
from shared.dpop_client import DPoPKey, load_or_create_dpop_key
from shared.oauth_client import KeyFileError, new_key_pem

API = "http://localhost:8001/api/me"


def check(proof: str, *, method: str = "GET", url: str = API, token: str | None = None, **options: object) -> str:
    """Return the `jkt` of a proof jwt_verifier accepts (as the profile API and the issuer check it)."""
    checked = verify_proof(
        proof,
        method=method,
        url=url,
        access_token=token,
        jkt=None,
        now=time.time(),
        algs=("ES256",),
        max_age=60,
        leeway=5,
        replay=MemoryReplayStore(),
        **options,  # type: ignore[arg-type]
    )
    return checked.jkt


def claims_of(proof: str) -> dict[str, object]:
    payload: dict[str, object] = json.loads(b64url_decode(proof.split(".")[1]))
    return payload


@pytest.fixture
def key() -> DPoPKey:
    return DPoPKey(ec.generate_private_key(ec.SECP256R1()))


def test_a_proof_passes_the_verifiers_checks_and_names_the_keys_thumbprint(key: DPoPKey) -> None:
    assert check(key.proof("GET", API, "the-token"), token="the-token") == key.jkt


def test_a_token_endpoint_proof_has_no_ath_and_passes_for_post(key: DPoPKey) -> None:
    proof = key.proof("post", "http://localhost:8000/token")
    assert "ath" not in claims_of(proof)
    assert check(proof, method="POST", url="http://localhost:8000/token") == key.jkt


def test_a_proof_is_refused_for_another_url_another_method_or_another_token(key: DPoPKey) -> None:
    with pytest.raises(InvalidDPoPProof):
        check(key.proof("GET", API, "t"), token="t", url="http://localhost:8001/api/other")
    with pytest.raises(InvalidDPoPProof):
        check(key.proof("GET", API, "t"), token="t", method="POST")
    with pytest.raises(InvalidDPoPProof):
        check(key.proof("GET", API, "t"), token="another")


def test_each_proof_is_new(key: DPoPKey) -> None:
    first, second = claims_of(key.proof("GET", API)), claims_of(key.proof("GET", API))
    assert first["jti"] != second["jti"]


def test_a_nonce_asked_at_the_token_endpoint_goes_into_the_next_proofs_to_that_server(key: DPoPKey) -> None:
    nonces = Nonces("a nonce secret", 300)
    token_url = "http://localhost:8000/token"
    with pytest.raises(UseDPoPNonce):
        check(key.proof("POST", token_url), method="POST", url=token_url, nonces=nonces)
    answer = {"error": "use_dpop_nonce", "error_description": "..."}
    assert key.nonce_asked(token_url, 400, {"DPoP-Nonce": nonces.current()}, answer)
    assert check(key.proof("POST", token_url), method="POST", url=token_url, nonces=nonces) == key.jkt
    assert "nonce" not in claims_of(key.proof("GET", API))  # another server's nonce is its own


def test_a_nonce_asked_by_an_api_is_read_from_its_challenge(key: DPoPKey) -> None:
    challenge = {"WWW-Authenticate": 'DPoP error="use_dpop_nonce", algs="ES256"', "DPoP-Nonce": "n-1"}
    assert key.nonce_asked(API, 401, challenge, None)
    assert claims_of(key.proof("GET", "http://LOCALHOST:8001/api/me"))["nonce"] == "n-1"


def test_other_answers_ask_for_no_nonce(key: DPoPKey) -> None:
    assert not key.nonce_asked(API, 401, {"WWW-Authenticate": 'DPoP error="invalid_token"', "DPoP-Nonce": "n"}, None)
    assert not key.nonce_asked(API, 400, {"DPoP-Nonce": "n"}, {"error": "invalid_grant"})
    assert not key.nonce_asked(API, 400, {}, {"error": "use_dpop_nonce"})  # no nonce to use
    assert not key.nonce_asked(API, 400, {"DPoP-Nonce": 'bad "nonce"'}, {"error": "use_dpop_nonce"})
    assert "nonce" not in claims_of(key.proof("GET", API))


def test_the_key_file_is_created_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "dpop-key.pem"
    first = load_or_create_dpop_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_dpop_key(path).jkt == first.jkt


def test_a_key_file_that_is_not_a_p256_key_is_refused(tmp_path: Path) -> None:
    rsa_file = tmp_path / "rsa.pem"
    rsa_file.write_bytes(new_key_pem())
    p384 = ec.generate_private_key(ec.SECP384R1())
    p384_file = tmp_path / "p384.pem"
    p384_file.write_bytes(
        p384.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a key")
    for path in (rsa_file, p384_file, garbage):
        with pytest.raises(KeyFileError, match="does not hold an unencrypted PEM EC P-256 private key"):
            load_or_create_dpop_key(path)
