"""Unit tests for jwt_verifier.rfc6750 (reading bearer tokens) and the RFC 6750 errors' challenges."""

from __future__ import annotations

import pytest

from jwt_verifier.errors import InsufficientScope, InvalidRequest, InvalidToken, MissingToken, Reason
from jwt_verifier.rfc6750 import bearer_token


def _token(*authorization: str) -> str | None:
    return bearer_token(list(authorization))


def test_missing_token_challenge_has_no_error_code() -> None:
    error = MissingToken()
    assert error.status == 401
    assert error.headers["WWW-Authenticate"] == 'Bearer realm="jwt-split"'


def test_invalid_token_challenge_names_the_error_and_description() -> None:
    error = InvalidToken("the token has expired")
    assert (error.status, error.error) == (401, "invalid_token")
    assert error.headers["WWW-Authenticate"] == (
        'Bearer realm="jwt-split", error="invalid_token", error_description="the token has expired"'
    )


def test_insufficient_scope_challenge_is_403_with_the_scope() -> None:
    error = InsufficientScope("admin")
    assert (error.status, error.error) == (403, "insufficient_scope")
    challenge = error.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="jwt-split", error="insufficient_scope", ')
    assert challenge.endswith('scope="admin"')


def test_invalid_request_challenge_is_400() -> None:
    error = InvalidRequest("send exactly one Authorization header")
    assert (error.status, error.error) == (400, "invalid_request")
    assert 'error="invalid_request"' in error.headers["WWW-Authenticate"]


def test_bearer_token_is_read_from_the_header() -> None:
    assert _token("Bearer abc.def.ghi") == "abc.def.ghi"


@pytest.mark.parametrize("value", ["bearer abc.def.ghi", "BEARER abc.def.ghi", "  Bearer   abc.def.ghi  "])
def test_bearer_scheme_is_case_insensitive_and_spacing_tolerant(value: str) -> None:
    assert _token(value) == "abc.def.ghi"


def test_no_authorization_header_means_no_token() -> None:
    assert _token() is None


@pytest.mark.parametrize("value", ["Basic YWxpY2U6d29uZGVybGFuZA==", "Token abc", "Bearerabc", ""])
def test_other_schemes_mean_no_token(value: str) -> None:
    assert _token(value) is None


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer    "])
def test_empty_bearer_token_is_invalid_token(value: str) -> None:
    with pytest.raises(InvalidToken, match="empty") as caught:
        _token(value)
    assert caught.value.reason == Reason.MALFORMED


def test_two_authorization_headers_are_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest):
        _token("Bearer abc.def.ghi", "Bearer abc.def.ghi")


@pytest.mark.parametrize(
    "value", ["Bearer abc.def.ghi, Bearer abc.def.ghi", "Bearer abc,def", "Basic YTpi, Bearer abc"]
)
def test_a_comma_joined_authorization_value_is_an_invalid_request(value: str) -> None:
    """Two headers joined into one (as a WSGI server does) are still two: refused, not read as one token."""
    with pytest.raises(InvalidRequest):
        _token(value)
