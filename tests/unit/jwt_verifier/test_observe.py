"""Unit tests for jwt_verifier.observe: the reasons a refusal is counted under, and what the verifier reports."""

from __future__ import annotations

import ast
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, request

from jwt_verifier import observe
from jwt_verifier.config import VerifierConfig
from jwt_verifier.errors import InvalidToken, KeysUnavailable, TokenExpired, UnknownKey
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


def _literal_messages() -> list[str]:
    """Return every literal message InvalidToken is raised with in the verifier's sources."""
    messages = []
    for source in SOURCES:
        tree = ast.parse(source.read_text())
        constants = {
            node.targets[0].id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "InvalidToken" and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    messages.append(arg.value)
                elif isinstance(arg, ast.Name):
                    messages.append(constants[arg.id])
                elif isinstance(arg, ast.JoinedStr):
                    messages.append("".join(str(v.value) for v in arg.values if isinstance(v, ast.Constant)))
    return messages


def test_every_refusal_the_verifier_raises_has_a_reason_of_its_own() -> None:
    messages = _literal_messages()

    assert len(messages) > 15
    for message in messages:
        reason = observe.reason_of(InvalidToken(message))
        assert reason in observe.REASONS
        assert reason != "invalid", message


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (TokenExpired("the token has expired"), "expired"),
        (UnknownKey("some-kid"), "unknown_key"),
        (KeysUnavailable("no keys yet"), "keys_unavailable"),
        (InvalidToken("the token's signature is invalid"), "bad_signature"),
        (InvalidToken("the token is not meant for this API (audience)"), "wrong_audience"),
        (InvalidToken("the token is not meant for this API"), "wrong_audience"),
        (InvalidToken("the token was not issued by the trusted issuer"), "wrong_issuer"),
        (InvalidToken("the token is not active"), "inactive"),
        (InvalidToken("something new"), "invalid"),
    ],
)
def test_reason_of_names_each_refusal(error: InvalidToken | KeysUnavailable, reason: str) -> None:
    assert observe.reason_of(error) == reason


def test_each_request_counts_once_and_each_lookup_hits_or_misses(
    recorder: Recorder, rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = Verifier(StaticKeys(rsa_key), issuer=ISSUER, audience=AUDIENCE, leeway=10, max_token_bytes=4096)
    protector = ResourceProtector(verifier)
    good = sign(make_claims(), rsa_key)
    expired = sign(make_claims(exp=int(time.time()) - 600, iat=int(time.time()) - 900), rsa_key)
    forged = sign(make_claims(), new_rsa_key(), kid=next(iter(StaticKeys(rsa_key).keys)))
    app = Flask(__name__)

    for token in (good, good, good, expired, forged, "x" * 5000):
        headers = {"Authorization": f"Bearer {token}"}
        with app.test_request_context(headers=headers), contextlib.suppress(InvalidToken):
            protector.acquire(request)

    assert recorder.verifications == [
        ("valid", "none"),
        ("valid", "none"),
        ("valid", "none"),
        ("invalid", "expired"),
        ("invalid", "bad_signature"),
        ("invalid", "too_large"),
    ]
    # The oversized token is refused before the cache is consulted.
    assert recorder.lookups == ["miss", "hit", "hit", "miss", "miss"]


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
