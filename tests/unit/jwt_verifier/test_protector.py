"""Unit tests for jwt_verifier.protector: who a request is for, whichever verifier answers."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Flask, request

from jwt_verifier.errors import (
    InsufficientScope,
    InvalidToken,
    KeysUnavailable,
    MissingToken,
    Reason,
    TokenExpired,
    UnknownKey,
)
from jwt_verifier.protector import ResourceProtector

app = Flask(__name__)


class AnsweringVerifier:
    """A TokenVerifier that answers each token from a table (claims, or an error to raise)."""

    def __init__(self, answers: dict[str, dict[str, Any] | Exception]) -> None:
        self.answers = answers

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims given for the token, or raise its error."""
        answer = self.answers[token]
        if isinstance(answer, Exception):
            raise answer
        return answer


ALICE = {"sub": "alice", "scope": "profile admin"}
BOB = {"sub": "bob", "scope": "profile"}


@pytest.fixture
def protector() -> ResourceProtector:
    return ResourceProtector(
        AnsweringVerifier(
            {
                "alice": ALICE,
                "bob": BOB,
                "expired": TokenExpired("the token has expired"),
                "unknown": UnknownKey("kid-1"),
                "down": KeysUnavailable("cannot fetch the JWKS"),
            }
        ),
        cookie="rs_access",
    )


def _acquire(protector: ResourceProtector, scope: str | None = None, **options: Any) -> dict[str, Any]:
    with app.test_request_context("/", **options):
        return protector.acquire(request, scope)


def test_token_from_the_authorization_header(protector: ResourceProtector) -> None:
    assert _acquire(protector, headers={"Authorization": "Bearer alice"}) == ALICE


def test_token_from_the_access_cookie(protector: ResourceProtector) -> None:
    assert _acquire(protector, headers={"Cookie": "rs_access=bob"}) == BOB


def test_the_header_wins_over_the_cookie(protector: ResourceProtector) -> None:
    assert _acquire(protector, headers={"Authorization": "Bearer alice", "Cookie": "rs_access=bob"}) == ALICE


def test_no_token_is_missing_token(protector: ResourceProtector) -> None:
    with pytest.raises(MissingToken):
        _acquire(protector)


def test_missing_scope_is_insufficient_scope(protector: ResourceProtector) -> None:
    assert _acquire(protector, "admin", headers={"Authorization": "Bearer alice"}) == ALICE
    with pytest.raises(InsufficientScope):
        _acquire(protector, "admin", headers={"Authorization": "Bearer bob"})


@pytest.mark.parametrize(
    ("token", "error"), [("expired", TokenExpired), ("unknown", InvalidToken), ("down", KeysUnavailable)]
)
def test_the_verifiers_errors_pass_unchanged_and_are_logged_once(
    protector: ResourceProtector, caplog: pytest.LogCaptureFixture, token: str, error: type[Exception]
) -> None:
    caplog.set_level(logging.INFO, logger="jwt_verifier.protector")
    with pytest.raises(error) as caught:
        protector.validate(token)
    assert caught.value is protector.verifier.answers[token]  # type: ignore[attr-defined]
    assert len(caplog.records) == 1


def test_an_unknown_kid_is_logged_with_the_kid(protector: ResourceProtector, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jwt_verifier.protector")
    with pytest.raises(UnknownKey):
        protector.validate("unknown")
    assert caplog.records[0].fields == {"reason": "unknown_key", "kid": "kid-1"}  # type: ignore[attr-defined]


@pytest.mark.parametrize("scope", ["", "openid email", "orders:read"])
def test_a_token_with_none_of_the_apis_scopes_is_insufficient_scope_on_every_route(scope: str) -> None:
    protector = ResourceProtector(
        AnsweringVerifier({"alice": ALICE, "empty": {"sub": "carol", "scope": scope}}),
        scopes=frozenset({"profile", "admin"}),
    )
    assert _acquire(protector, headers={"Authorization": "Bearer alice"}) == ALICE
    with pytest.raises(InsufficientScope) as caught:
        _acquire(protector, headers={"Authorization": "Bearer empty"})
    assert caught.value.scope == "admin profile"  # the challenge names what would do
    assert caught.value.reason == Reason.INSUFFICIENT_SCOPE  # the same refusal as a route's missing scope
