"""Unit tests for jwt_verifier.errors: one root; each error carries its reason, code, status and challenge."""

from __future__ import annotations

import pytest

from jwt_verifier.errors import (
    BearerError,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    JwkError,
    JwksFetchError,
    JwtVerifierError,
    KeysUnavailable,
    MissingToken,
    Reason,
    TokenExpired,
    UnknownKey,
    VerificationUnavailable,
    bearer_challenge,
)

# -- the hierarchy: each error carries its status, code and headers -----------------------


@pytest.mark.parametrize(
    ("error", "status", "code", "challenge"),
    [
        (MissingToken(), 401, "unauthorized", 'Bearer realm="jwt-split"'),
        (
            InvalidToken("the token has expired"),
            401,
            "invalid_token",
            'Bearer realm="jwt-split", error="invalid_token", error_description="the token has expired"',
        ),
        (
            TokenExpired("the token has expired"),
            401,
            "invalid_token",
            'Bearer realm="jwt-split", error="invalid_token", error_description="the token has expired"',
        ),
        (
            UnknownKey("some-kid"),
            401,
            "invalid_token",
            'Bearer realm="jwt-split", error="invalid_token", '
            'error_description="the token was signed with a key the issuer does not publish"',
        ),
        (
            InsufficientScope("admin"),
            403,
            "insufficient_scope",
            'Bearer realm="jwt-split", error="insufficient_scope", '
            'error_description="this resource needs the \'admin\' scope", scope="admin"',
        ),
        (
            InvalidRequest("send exactly one Authorization header"),
            400,
            "invalid_request",
            'Bearer realm="jwt-split", error="invalid_request", error_description="send exactly one Authorization header"',
        ),
    ],
    ids=["missing", "invalid", "expired", "unknown-key", "scope", "request"],
)
def test_bearer_errors_carry_status_code_and_challenge(
    error: BearerError, status: int, code: str, challenge: str
) -> None:
    assert (error.status, error.error) == (status, code)
    assert error.headers == {"WWW-Authenticate": challenge}


def test_the_bad_token_branch_is_one_class() -> None:
    assert issubclass(TokenExpired, InvalidToken)
    assert issubclass(UnknownKey, InvalidToken)
    assert issubclass(InvalidToken, BearerError)
    assert issubclass(BearerError, JwtVerifierError)
    assert issubclass(VerificationUnavailable, JwtVerifierError)
    assert issubclass(JwkError, JwtVerifierError)
    assert issubclass(JwkError, ValueError)
    assert not issubclass(VerificationUnavailable, InvalidToken)


def test_unknown_key_keeps_the_kid_for_the_log_not_the_client() -> None:
    error = UnknownKey("Z" * 500)
    assert error.kid == "Z" * 128
    assert "Z" not in error.headers["WWW-Authenticate"]
    assert "Z" not in error.description


def test_unavailable_verification_is_a_503_whose_reason_stays_in_the_log() -> None:
    error = KeysUnavailable("cannot fetch the JWKS: ConnectTimeout to http://issuer:8000")
    assert (error.status, error.error, error.headers) == (503, "temporarily_unavailable", {"Retry-After": "5"})
    assert "issuer:8000" not in error.description
    assert str(error) == "cannot fetch the JWKS: ConnectTimeout to http://issuer:8000"
    assert isinstance(error, VerificationUnavailable)


def test_a_challenge_never_breaks_out_of_its_quoted_string() -> None:
    assert bearer_challenge("invalid_token", 'a "quoted" \\ text') == (
        'Bearer realm="jwt-split", error="invalid_token", error_description="a \'quoted\'  text"'
    )


def test_a_challenge_names_the_resource_metadata_when_given() -> None:
    url = "https://api.example/.well-known/oauth-protected-resource"
    challenge = bearer_challenge("invalid_token", "bad", resource_metadata=url)
    assert (
        challenge
        == f'Bearer realm="jwt-split", error="invalid_token", error_description="bad", resource_metadata="{url}"'
    )


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (MissingToken(), "missing_token"),
        (InvalidRequest("send exactly one Authorization header"), "invalid_request"),
        (InsufficientScope("admin"), "insufficient_scope"),
        (InvalidToken("something new"), "invalid"),
        (InvalidToken("the token's signature is invalid", reason=Reason.BAD_SIGNATURE), "bad_signature"),
        (TokenExpired(), "expired"),
        (UnknownKey("some-kid"), "unknown_key"),
        (VerificationUnavailable("the issuer is down"), "keys_unavailable"),
        (KeysUnavailable("no keys yet"), "keys_unavailable"),
        (JwksFetchError("the issuer answered HTTP 500"), "jwks_fetch_failed"),
        (JwkError("only RSA keys are accepted"), "unusable_key"),
    ],
)
def test_every_error_carries_a_stable_reason(error: JwtVerifierError, reason: str) -> None:
    assert error.reason == reason
    assert isinstance(error.reason, Reason)


def test_the_reason_is_not_read_from_the_message() -> None:
    assert InvalidToken("the token's signature is invalid").reason == Reason.INVALID


@pytest.mark.parametrize(
    ("error", "headers"),
    [
        (MissingToken(), {"WWW-Authenticate": 'Bearer realm="jwt-split", resource_metadata="https://m.example"'}),
        (
            InsufficientScope("admin"),
            {
                "WWW-Authenticate": 'Bearer realm="jwt-split", error="insufficient_scope", '
                'error_description="this resource needs the \'admin\' scope", scope="admin", '
                'resource_metadata="https://m.example"'
            },
        ),
        (KeysUnavailable("no keys"), {"Retry-After": "5"}),
        (JwkError("bad"), {}),
    ],
    ids=["missing", "scope", "unavailable", "jwk"],
)
def test_response_headers_give_the_challenge_or_retry_after(error: JwtVerifierError, headers: dict[str, str]) -> None:
    assert error.response_headers("https://m.example") == headers
    assert error.www_authenticate("https://m.example") == headers.get("WWW-Authenticate")
