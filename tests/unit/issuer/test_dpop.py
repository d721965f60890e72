"""Unit tests for issuer.dpop: the shared store of accepted proofs, and the token endpoint's checks."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from issuer.clients import Client, ClientStore
from issuer.db import Database
from issuer.dpop import DPoPProofs, TokenEndpointDPoP
from issuer.protocol import InvalidDPoPProof, UseDPoPNonce
from jwt_verifier.dpop import Nonces
from tests.support.dpop import make_proof, thumbprint

URL = "https://issuer.example/token"
PUBLIC = Client("app", frozenset({"password"}))


def test_a_proof_is_accepted_once_until_it_expires(database: Database) -> None:
    proofs, other_worker = DPoPProofs(database), DPoPProofs(database)
    now = time.time()
    assert proofs.add("a" * 64, now + 60, now)
    assert not other_worker.add("a" * 64, now + 60, now)  # the table is what every worker shares
    assert other_worker.add("b" * 64, now + 60, now)
    assert proofs.add("a" * 64, now + 200, now + 120)  # stale by then: pruned, and may come again


def _nonces() -> Nonces:
    return Nonces("a secret every worker has", 300)


def test_a_proof_gives_the_thumbprint_of_its_key_and_is_not_accepted_twice(database: Database) -> None:
    checks = TokenEndpointDPoP(DPoPProofs(database), _nonces())
    key = ec.generate_private_key(ec.SECP256R1())
    proof = make_proof(key, "POST", URL)
    assert checks.check([proof], URL, PUBLIC) == thumbprint(key)
    with pytest.raises(InvalidDPoPProof, match="already used"):
        checks.check([proof], URL, PUBLIC)
    with pytest.raises(InvalidDPoPProof, match="another URL"):
        checks.check([make_proof(key, "POST", "https://issuer.example/revoke")], URL, PUBLIC)
    with pytest.raises(InvalidDPoPProof, match="exactly one"):
        checks.check([make_proof(key, "POST", URL), make_proof(key, "POST", URL)], URL, PUBLIC)
    with pytest.raises(InvalidDPoPProof, match="exactly one"):
        checks.check([f"{make_proof(key, 'POST', URL)}, {make_proof(key, 'POST', URL)}"], URL, PUBLIC)


def test_without_a_proof_only_a_client_that_requires_dpop_is_refused(database: Database) -> None:
    checks = TokenEndpointDPoP(DPoPProofs(database), _nonces())
    assert checks.check([], URL, PUBLIC) is None
    strict = Client("strict", frozenset({"password"}), require_dpop=True)
    with pytest.raises(InvalidDPoPProof) as refused:
        checks.check([], URL, strict)
    assert (refused.value.status, refused.value.error) == (400, "invalid_dpop_proof")


def test_with_nonces_a_proof_needs_a_current_one(database: Database) -> None:
    checks = TokenEndpointDPoP(DPoPProofs(database), _nonces(), nonce_required=True)
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(UseDPoPNonce) as missing:
        checks.check([make_proof(key, "POST", URL)], URL, PUBLIC)
    assert (missing.value.status, missing.value.error) == (400, "use_dpop_nonce")
    nonce = missing.value.headers["DPoP-Nonce"]
    assert checks.nonce_headers(PUBLIC) == {"DPoP-Nonce": nonce}
    assert checks.check([make_proof(key, "POST", URL, nonce=nonce)], URL, PUBLIC) == thumbprint(key)
    other_replica = TokenEndpointDPoP(DPoPProofs(database), _nonces(), nonce_required=True)
    assert other_replica.check([make_proof(key, "POST", URL, nonce=nonce)], URL, PUBLIC) == thumbprint(key)
    with pytest.raises(UseDPoPNonce):
        checks.check([make_proof(key, "POST", URL, nonce="1.forged")], URL, PUBLIC)


def test_a_client_may_need_nonces_when_others_do_not(database: Database) -> None:
    checks = TokenEndpointDPoP(DPoPProofs(database), _nonces())
    key = ec.generate_private_key(ec.SECP256R1())
    assert checks.check([make_proof(key, "POST", URL)], URL, PUBLIC) == thumbprint(key)
    assert checks.nonce_headers(PUBLIC) == {}
    careful = Client("careful", frozenset({"password"}), require_dpop_nonce=True)
    with pytest.raises(UseDPoPNonce) as missing:
        checks.check([make_proof(key, "POST", URL)], URL, careful)
    nonce = missing.value.headers["DPoP-Nonce"]
    assert checks.check([make_proof(key, "POST", URL, nonce=nonce)], URL, careful) == thumbprint(key)


def test_a_client_that_requires_dpop_reads_back_so(database: Database) -> None:
    clients = ClientStore(database)
    clients.add(Client("pocket", frozenset({"password"}), require_dpop=True, require_dpop_nonce=True))
    stored = clients.get("pocket")
    assert stored is not None
    assert (stored.require_dpop, stored.require_dpop_nonce) == (True, True)
