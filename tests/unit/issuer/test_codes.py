"""Unit tests for issuer.codes: one-time authorization codes bound to client, redirect URI and PKCE."""

from __future__ import annotations

import hashlib
import types

import pytest
from sqlalchemy import insert

from issuer import codes
from issuer.codes import CODE_TTL, AuthorizationCodes, CodeError, CodeMismatch, CodeReused, Redeemed
from issuer.db import Database, users
from issuer.tokens import Grant
from shared.pkce import s256
from tests.support.fakes import FakeClock
from tests.support.sql import rows

# RFC 7636 appendix B.
RFC_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

GRANT = Grant("alice-id", "alice", "resource-web", "admin profile")
REDIRECT = "http://localhost:8001/callback"


@pytest.fixture
def store(database: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> AuthorizationCodes:
    """Authorization codes on a fresh database with the user alice, time read from the test's clock."""
    monkeypatch.setattr(codes, "time", types.SimpleNamespace(time=clock))
    with database.transaction() as conn:
        conn.execute(
            insert(users).values(id=GRANT.user_id, username="alice", password_hash="-", scope="", created_at=0)
        )
    return AuthorizationCodes(database)


def _issue(store: AuthorizationCodes, session_hash: str | None = "session-hash") -> str:
    return store.issue(GRANT, redirect_uri=REDIRECT, challenge=RFC_CHALLENGE, session_hash=session_hash)


def _redeem(store: AuthorizationCodes, code: str, **overrides: str) -> Redeemed:
    binding = {"client_id": GRANT.client_id, "redirect_uri": REDIRECT, "verifier": RFC_VERIFIER, **overrides}
    return store.redeem(code, **binding)


# -- S256 ---------------------------------------------------------------------------------


def test_s256_matches_the_rfc7636_appendix_b_example() -> None:
    assert s256(RFC_VERIFIER) == RFC_CHALLENGE


# -- issue and redeem ---------------------------------------------------------------------


def test_redeem_returns_the_grant_and_login_session_of_the_code(store: AuthorizationCodes) -> None:
    redeemed = _redeem(store, _issue(store))
    assert redeemed == Redeemed(GRANT, redeemed.family_id, "session-hash")
    assert len(redeemed.family_id) == 32
    assert _redeem_family(store) != redeemed.family_id


def _redeem_family(store: AuthorizationCodes) -> str:
    return _redeem(store, _issue(store)).family_id


def test_code_without_a_login_session_redeems_with_none(store: AuthorizationCodes) -> None:
    assert _redeem(store, _issue(store, session_hash=None)).session_hash is None


def test_each_code_is_new_and_long(store: AuthorizationCodes) -> None:
    issued = {_issue(store) for _ in range(20)}
    assert len(issued) == 20
    assert all(len(code) >= 43 for code in issued)


def test_codes_are_stored_only_as_their_sha256(store: AuthorizationCodes, database: Database) -> None:
    code = _issue(store)
    (row,) = rows(database, "SELECT * FROM authorization_codes")
    assert row["code_hash"] == hashlib.sha256(code.encode()).hexdigest()
    assert code not in [str(value) for value in row.values()]


def test_code_is_single_use(store: AuthorizationCodes) -> None:
    code = _issue(store)
    _redeem(store, code)
    with pytest.raises(CodeError, match="already used"):
        _redeem(store, code)


def test_unknown_code_is_refused(store: AuthorizationCodes) -> None:
    _issue(store)
    with pytest.raises(CodeError, match="not known"):
        _redeem(store, "made-up-code")


def test_redeeming_one_code_leaves_another_usable(store: AuthorizationCodes) -> None:
    first, second = _issue(store), _issue(store)
    _redeem(store, first)
    assert _redeem(store, second).grant == GRANT


# -- expiry -------------------------------------------------------------------------------


def test_code_is_redeemable_until_just_before_its_ttl(store: AuthorizationCodes, clock: FakeClock) -> None:
    code = _issue(store)
    clock.advance(CODE_TTL - 1)
    assert _redeem(store, code).grant == GRANT


def test_code_expires_after_its_ttl(store: AuthorizationCodes, clock: FakeClock) -> None:
    code = _issue(store)
    clock.advance(CODE_TTL)
    with pytest.raises(CodeError, match="expired"):
        _redeem(store, code)


# -- bindings -----------------------------------------------------------------------------


def test_code_of_another_client_is_refused_as_a_mismatch(store: AuthorizationCodes) -> None:
    code = _issue(store)
    with pytest.raises(CodeMismatch, match="another client"):
        _redeem(store, code, client_id="cli")


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://localhost:8001/callback/",
        "http://localhost:8001/callback?next=/",
        "http://LOCALHOST:8001/callback",
        "http://evil.test/callback",
    ],
)
def test_redirect_uri_must_match_exactly(store: AuthorizationCodes, redirect_uri: str) -> None:
    code = _issue(store)
    with pytest.raises(CodeError, match="redirect_uri"):
        _redeem(store, code, redirect_uri=redirect_uri)


def test_wrong_verifier_is_refused(store: AuthorizationCodes) -> None:
    code = _issue(store)
    with pytest.raises(CodeError, match="does not match the code challenge"):
        _redeem(store, code, verifier="A" * 43)


def test_a_spent_code_cannot_be_redeemed(store: AuthorizationCodes) -> None:
    code = _issue(store)
    with pytest.raises(CodeMismatch):
        _redeem(store, code, verifier="B" * 64)
    store.spend(code)
    with pytest.raises(CodeReused, match="already used") as raised:
        _redeem(store, code)
    assert raised.value.family_id is None


def test_the_challenge_itself_is_not_a_valid_verifier(store: AuthorizationCodes) -> None:
    code = _issue(store)
    with pytest.raises(CodeError, match="does not match"):
        _redeem(store, code, verifier=RFC_CHALLENGE)


@pytest.mark.parametrize(
    "verifier",
    [
        "",
        "a" * 42,
        "a" * 129,
        RFC_VERIFIER[:-1] + "+",
        RFC_VERIFIER[:-1] + "=",
        RFC_VERIFIER[:-1] + " ",
        RFC_VERIFIER[:-1] + "é",
    ],
    ids=["empty", "too-short", "too-long", "plus", "padding", "space", "non-ascii"],
)
def test_malformed_verifier_is_refused_as_rfc7636_violation(store: AuthorizationCodes, verifier: str) -> None:
    code = _issue(store)
    with pytest.raises(CodeError, match="43-128 unreserved characters"):
        _redeem(store, code, verifier=verifier)


@pytest.mark.parametrize("length", [43, 128])
def test_verifiers_of_the_boundary_lengths_work(store: AuthorizationCodes, length: int) -> None:
    verifier = ("abcXYZ019-._~" * 10)[:length]
    code = store.issue(GRANT, redirect_uri=REDIRECT, challenge=s256(verifier), session_hash=None)
    assert _redeem(store, code, verifier=verifier).grant == GRANT
