"""Unit tests for `python -m issuer users reset-factors`: one-time codes, recovery codes and passkeys go."""

from __future__ import annotations

from collections.abc import Iterator

import pyotp
import pytest
from click.testing import CliRunner
from sqlalchemy import insert

from issuer.cli import main
from issuer.db import Database, passkeys
from issuer.settings import IssuerSettings
from issuer.totp import TotpFactors
from tests.support.sql import rows


@pytest.fixture
def runner(issuer_settings: IssuerSettings) -> CliRunner:
    return CliRunner(
        env={
            "ISSUER_DATA_DIR": str(issuer_settings.data_dir),
            "ISSUER_ARGON2_TIME_COST": str(issuer_settings.argon2_time_cost),
            "ISSUER_ARGON2_MEMORY_KIB": str(issuer_settings.argon2_memory_kib),
        }
    )


@pytest.fixture
def database(issuer_settings: IssuerSettings, runner: CliRunner) -> Iterator[Database]:
    """The CLI's database, with users carol and dave, each with one-time codes on."""
    for name in ("carol", "dave"):
        assert runner.invoke(main, ["users", "add", name], input="correct horse\n").exit_code == 0
    opened = issuer_settings.database()
    factors = TotpFactors(opened, issuer_settings.load_kek(), issuer_name="test")
    for user_id in _ids(opened).values():
        secret = factors.start(user_id)
        assert factors.confirm(user_id, pyotp.TOTP(secret).now()) is not None
    yield opened
    opened.dispose()


def _ids(database: Database) -> dict[str, str]:
    return {row["username"]: row["id"] for row in rows(database, "SELECT id, username FROM users")}


def _owners(database: Database, table: str) -> list[str]:
    return sorted(row["user_id"] for row in rows(database, f"SELECT user_id FROM {table}"))  # noqa: S608 - fixed names


def test_reset_factors_removes_one_users_codes_only(runner: CliRunner, database: Database) -> None:
    ids = _ids(database)
    result = runner.invoke(main, ["users", "reset-factors", "carol"])
    assert result.exit_code == 0, result.output
    assert "reset carol: removed one-time codes and recovery codes" in result.output
    assert _owners(database, "totp_factors") == [ids["dave"]]
    assert set(_owners(database, "recovery_codes")) == {ids["dave"]}


def test_reset_factors_removes_the_users_passkeys_too(runner: CliRunner, database: Database) -> None:
    ids = _ids(database)
    with database.transaction() as conn:
        for n, owner in enumerate((ids["carol"], ids["carol"], ids["dave"])):
            conn.execute(
                insert(passkeys).values(
                    id=f"{n:032x}",
                    credential_id=f"credential-{n}",
                    user_id=owner,
                    public_key=b"-",
                    sign_count=0,
                    transports="",
                    backup_eligible=False,
                    backup_state=False,
                    name=f"key {n}",
                    created_at=0,
                )
            )
    result = runner.invoke(main, ["users", "reset-factors", "carol"])
    assert result.exit_code == 0, result.output
    assert "2 passkey(s)" in result.output
    assert _owners(database, "passkeys") == [ids["dave"]]


def test_reset_factors_of_nobody_fails_and_changes_nothing(runner: CliRunner, database: Database) -> None:
    result = runner.invoke(main, ["users", "reset-factors", "nobody"])
    assert result.exit_code == 1
    assert "no user named 'nobody'" in result.output
    assert len(_owners(database, "totp_factors")) == 2
