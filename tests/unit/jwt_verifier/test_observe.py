"""Unit tests for jwt_verifier.observe: the reasons a refusal is counted under, and what the verifier reports."""

from __future__ import annotations

import ast
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, request

from jwt_verifier import observe
from jwt_verifier.config import VerifierConfig
from jwt_verifier.errors import InvalidToken, Reason, UnknownKey
from jwt_verifier.jwks import JwksClient
from jwt_verifier.protector import ResourceProtector
from jwt_verifier.verifier import Verifier
from tests.support.fakes import FakeClock, JwksServer
from tests.support.tokens import AUDIENCE, ISSUER, make_claims, new_rsa_key, sign
from tests.unit.jwt_verifier.test_verifier import StaticKeys

SOURCES = [
    Path(observe.__file__).with_name("verifier.py"),
    Path(observe.__file__).with_name("rfc6750.py"),
]


class Recorder:
    """An observer that keeps what it is told."""

    def __init__(self) -> None:
        self.verifications: list[tuple[str, str]] = []
        self.lookups: list[str] = []
        self.fetches: list[tuple[str, str, int]] = []
        self.ages: list[float] = []

    def verification(self, result: str, reason: str) -> None:
        self.verifications.append((result, reason))

    def cache(self, result: str) -> None:
        self.lookups.append(result)

    def jwks_fetch(self, result: str, cause: str, keys: int) -> None:
        self.fetches.append((result, cause, keys))

    def jwks_age(self, seconds: float) -> None:
        self.ages.append(seconds)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """Install a recording observer for one test."""
    previous = observe.current()
    recorder = Recorder()
    observe.install(recorder)
    try:
        yield recorder
    finally:
        observe.install(previous)


def _refusals() -> list[ast.Call]:
    """Return every call that builds an InvalidToken in the verifier's sources."""
    calls = []
    for source in SOURCES:
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "InvalidToken":
                calls.append(node)
    return calls


def test_every_refusal_the_verifier_raises_names_a_reason_of_its_own() -> None:
    calls = _refusals()

    assert len(calls) > 15
    for call in calls:
        reasons = [kw.value for kw in call.keywords if kw.arg == "reason"]
        assert len(reasons) == 1, ast.unparse(call)
        reason = reasons[0]
        assert isinstance(reason, ast.Attribute), ast.unparse(call)
        assert ast.unparse(reason.value) == "Reason", ast.unparse(call)
        assert Reason[reason.attr].value in observe.REASONS
        assert reason.attr != "INVALID", ast.unparse(call)


def test_the_observer_counts_the_error_reason_not_its_message(recorder: Recorder) -> None:
    refused = InvalidToken("the token's signature is invalid", reason=Reason.WRONG_ISSUER)
    protector = ResourceProtector(AnsweringVerifier(refused))
    with pytest.raises(InvalidToken):
        protector.validate("token")
    assert recorder.verifications == [("invalid", "wrong_issuer")]


class AnsweringVerifier:
    """A TokenVerifier that refuses every token with one error."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def verify(self, token: str) -> dict[str, Any]:
        """Raise the error."""
        raise self.error


def test_each_request_counts_once_and_each_lookup_hits_or_misses(
    recorder: Recorder, rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = Verifier(StaticKeys(rsa_key), issuer=ISSUER, audience=AUDIENCE, leeway=10, max_token_bytes=4096)
    protector = ResourceProtector(verifier)
    good = sign(make_claims(), rsa_key)
    expired = sign(make_claims(exp=int(time.time()) - 600, iat=int(time.time()) - 900), rsa_key)
    forged = sign(make_claims(), new_rsa_key(), kid=next(iter(StaticKeys(rsa_key).keys)))
    app = Flask(__name__)

    for token in (good, good, good, good, expired, forged, "x" * 5000):
        headers = {"Authorization": f"Bearer {token}"}
        with app.test_request_context(headers=headers), contextlib.suppress(InvalidToken):
            protector.acquire(request)

    assert recorder.verifications == [
        ("valid", "none"),
        ("valid", "none"),
        ("valid", "none"),
        ("valid", "none"),
        ("invalid", "expired"),
        ("invalid", "bad_signature"),
        ("invalid", "too_large"),
    ]
    # A token is stored on its second sight; the oversized one is refused before the cache is consulted.
    assert recorder.lookups == ["miss", "miss", "hit", "hit", "miss", "miss"]


def test_each_jwks_fetch_is_reported_with_its_cause_and_result(
    recorder: Recorder, jwks_server: JwksServer, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    config = VerifierConfig(
        issuer=ISSUER, audience=AUDIENCE, resource="http://api.test", jwks_url=jwks_server.url, jwks_cooldown=10.0
    )
    with requests.Session() as session:
        client = JwksClient(config, clock=clock, session=session)
        jwks_server.answer(500, b"down")
        assert not client.ensure_loaded()
        clock.advance(11)
        jwks_server.serve_keys(rsa_key)
        assert client.ensure_loaded()
        clock.advance(11)
        with pytest.raises(UnknownKey):
            client.get("a-kid-nobody-published")
        client.get(next(iter(StaticKeys(rsa_key).keys)))

    assert recorder.fetches == [("error", "initial", 0), ("ok", "initial", 1), ("ok", "unknown_kid", 1)]
    assert len(recorder.ages) == 2
    assert all(0 <= age < 60 for age in recorder.ages)
