"""`python -m issuer keys ...` with kids that begin with `-` (one RFC 7638 thumbprint in 64)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select

from issuer.cli import main
from issuer.db import Database, signing_keys
from issuer.kek import new_key_encryption_key, seal_private_key
from jwt_verifier.jose import b64url_encode, public_jwk
from tests.support.tokens import new_rsa_key


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory whose database is at the newest schema."""
    database = Database.for_data_dir("", tmp_path)
    database.upgrade()
    database.dispose()
    return tmp_path


def _stage_key_with_dashed_kid(data_dir: Path, kek: bytes) -> str:
    """Insert a staged key whose kid begins with '-', sealed under `kek` as the key store seals."""
    private_key = new_rsa_key()
    jwk = public_jwk(private_key.public_key())
    kid = "-" + jwk["kid"][1:]
    jwk["kid"] = kid
    database = Database.for_data_dir("", data_dir)
    try:
        with database.transaction() as conn:
            conn.execute(
                insert(signing_keys).values(
                    kid=kid,
                    state="next",
                    public_jwk=json.dumps(jwk),
                    private_key=seal_private_key(kek, kid, private_key),
                    created_at=1_700_000_000,
                )
            )
    finally:
        database.dispose()
    return kid


def _state(data_dir: Path, kid: str) -> str:
    database = Database.for_data_dir("", data_dir)
    try:
        with database.reading() as conn:
            state: str = conn.execute(select(signing_keys.c.state).where(signing_keys.c.kid == kid)).scalar_one()
    finally:
        database.dispose()
    return state


def test_keys_retire_accepts_a_kid_beginning_with_a_dash(data_dir: Path) -> None:
    kek = new_key_encryption_key()
    kid = _stage_key_with_dashed_kid(data_dir, kek)
    env = {
        "ISSUER_DATA_DIR": str(data_dir),
        "ISSUER_DATABASE_URL": "",
        "ISSUER_KEY_ENCRYPTION_KEY": b64url_encode(kek),
        "ISSUER_KEY_ENCRYPTION_KEY_FILE": "",
    }
    result = CliRunner().invoke(main, ["keys", "retire", kid], env=env)
    assert result.exit_code == 0, result.output
    assert kid in result.output
    assert "retired" in result.output
    assert _state(data_dir, kid) == "retired"
