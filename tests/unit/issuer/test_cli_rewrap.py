"""`python -m issuer keys rewrap` and the key-encryption key change around it, on SQLite and PostgreSQL.

The issuers here are real apps on one database; the CLI runs through click's CliRunner with
the environment an operator would give it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from click.testing import CliRunner, Result
from flask import Flask
from werkzeug.test import TestResponse

from issuer import CANNOT_START, check_start, create_app, extensions
from issuer.cli import main
from issuer.kek import KEK_FILE_NAME, new_key_encryption_key
from issuer.settings import IssuerSettings
from jwt_verifier.jose import b64url_encode, load_verification_key
from tests.support.browsing import DEMO_USERS
from tests.support.processes import log_events

KID = r"[A-Za-z0-9_-]{43}"


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, issuer_settings: IssuerSettings) -> IssuerSettings:
    """Issuer settings with the old KEK given in the variable, on SQLite, then on PostgreSQL."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else ""
    # The SQLite template's key is sealed under the KEK generated into its data directory.
    old_kek = (issuer_settings.data_dir / KEK_FILE_NAME).read_text().strip()
    return dataclasses.replace(
        issuer_settings, database_url=url, key_encryption_key=old_kek, session_secret="S" * 48, demo_users=DEMO_USERS
    )


@pytest.fixture
def make_app() -> Iterator[Callable[[IssuerSettings], Flask]]:
    """Start issuer apps (replicas) whose databases are closed after the test."""
    apps: list[Flask] = []

    def make(settings: IssuerSettings) -> Flask:
        apps.append(create_app(settings))
        return apps[-1]

    yield make
    for app in apps:
        extensions.of(app).database.dispose()


@pytest.fixture
def new_kek() -> str:
    """The key-encryption key the operator moves to."""
    return b64url_encode(new_key_encryption_key())


def _with_kek(settings: IssuerSettings, value: str) -> IssuerSettings:
    return dataclasses.replace(settings, key_encryption_key=value)


def _env(settings: IssuerSettings) -> dict[str, str]:
    return {
        "ISSUER_DATA_DIR": str(settings.data_dir),
        "ISSUER_DATABASE_URL": settings.database_url,
        "ISSUER_KEY_ENCRYPTION_KEY": settings.key_encryption_key,
        "ISSUER_SESSION_SECRET": settings.session_secret,
    }


def _rewrap(settings: IssuerSettings, kek_setting: str) -> Result:
    """Run `keys rewrap` as an operator would, with ISSUER_KEY_ENCRYPTION_KEY set to `kek_setting`."""
    return CliRunner(env=_env(_with_kek(settings, kek_setting))).invoke(main, ["keys", "rewrap"])


def _login(app: Flask) -> TestResponse:
    return app.test_client().post("/token", data={"grant_type": "password", "username": "bob", "password": "builder"})


def _refresh(app: Flask, token: str) -> TestResponse:
    return app.test_client().post("/token", data={"grant_type": "refresh_token", "refresh_token": token})


def _kid(response: TestResponse) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)
    kid: str = jwt.get_unverified_header(response.get_json()["access_token"])["kid"]
    return kid


def _verifies(app: Flask, token: str) -> dict[str, Any]:
    """Verify `token` with the key of its kid from the app's JWKS."""
    keys = {jwk["kid"]: jwk for jwk in app.test_client().get("/.well-known/jwks.json").get_json()["keys"]}
    kid = jwt.get_unverified_header(token)["kid"]
    claims: dict[str, Any] = jwt.decode(
        token, load_verification_key(keys[kid])[1], algorithms=["RS256"], options={"verify_aud": False}
    )
    return claims


def test_rewrap_moves_every_key_to_the_new_kek_and_an_issuer_on_it_signs_with_the_same_kids(
    make_app: Callable[[IssuerSettings], Flask], settings: IssuerSettings, new_kek: str
) -> None:
    old_kek = settings.key_encryption_key
    before = make_app(settings)
    old_token = _login(before).get_json()["access_token"]
    active = jwt.get_unverified_header(old_token)["kid"]
    assert CliRunner(env=_env(settings)).invoke(main, ["keys", "rotate"]).exit_code == 0  # a staged key too

    result = _rewrap(settings, f"{new_kek} {old_kek}")

    assert result.exit_code == 0, result.output
    rewrapped = re.findall(rf"^re-encrypted ({KID})$", result.output, re.MULTILINE)
    assert active in rewrapped
    assert len(rewrapped) == 2
    assert "2 key(s) re-encrypted" in result.output
    after = make_app(_with_kek(settings, new_kek))
    assert _kid(_login(after)) == active
    assert _verifies(after, old_token)["preferred_username"] == "bob"
    again = _rewrap(settings, new_kek)  # harmless to repeat
    assert again.exit_code == 0, again.output
    assert again.output.startswith("0 key(s) re-encrypted")


def test_after_a_rewrap_an_issuer_with_only_the_old_kek_stops_at_start_naming_the_setting(
    make_app: Callable[[IssuerSettings], Flask],
    settings: IssuerSettings,
    new_kek: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_app(settings)
    assert _rewrap(settings, f"{new_kek} {settings.key_encryption_key}").exit_code == 0

    with pytest.raises(SystemExit) as stopped:
        check_start(settings)  # what gunicorn's master runs before any worker
    assert stopped.value.code == CANNOT_START
    (line,) = [event for event in log_events(capsys.readouterr().err) if event["msg"] == "cannot start"]
    assert "ISSUER_KEY_ENCRYPTION_KEY" in line["reason"]
    check_start(_with_kek(settings, new_kek))  # the new KEK passes


def test_a_replica_still_running_with_the_old_kek_keeps_signing_then_answers_503_never_500(
    make_app: Callable[[IssuerSettings], Flask], settings: IssuerSettings, new_kek: str
) -> None:
    old_replica = make_app(settings)
    active = _kid(_login(old_replica))
    assert _rewrap(settings, f"{new_kek} {settings.key_encryption_key}").exit_code == 0

    assert _kid(_login(old_replica)) == active  # the key it has opened goes on signing
    rotated = CliRunner(env={**_env(settings), "ISSUER_KEY_ENCRYPTION_KEY": new_kek}).invoke(
        main, ["keys", "rotate", "--now"]
    )
    assert rotated.exit_code == 0, rotated.output
    response = _login(old_replica)  # the new key is sealed under a KEK it lacks
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.get_json()["error"] == "temporarily_unavailable"


def test_replicas_listing_the_old_kek_after_the_new_one_share_keys_and_refresh_grace(
    make_app: Callable[[IssuerSettings], Flask], settings: IssuerSettings, new_kek: str
) -> None:
    old_kek = settings.key_encryption_key
    old_replica = make_app(settings)
    new_replica = make_app(_with_kek(settings, f"{new_kek} {old_kek}"))
    first = _login(old_replica).get_json()["refresh_token"]
    successor = _refresh(old_replica, first).get_json()["refresh_token"]

    retried = _refresh(new_replica, first)  # a retry after a lost response, on another replica

    assert retried.status_code == 200, retried.get_data(as_text=True)
    assert retried.get_json()["refresh_token"] == successor
    assert _kid(_login(new_replica)) == _kid(_login(old_replica))


def test_a_retried_refresh_on_a_replica_that_lacks_the_old_kek_loses_its_grace_not_a_500(
    make_app: Callable[[IssuerSettings], Flask], settings: IssuerSettings, new_kek: str
) -> None:
    old_kek = settings.key_encryption_key
    old_replica = make_app(settings)
    first = _login(old_replica).get_json()["refresh_token"]
    assert _refresh(old_replica, first).status_code == 200
    assert _rewrap(settings, f"{new_kek} {old_kek}").exit_code == 0
    new_replica = make_app(_with_kek(settings, new_kek))

    retried = _refresh(new_replica, first)

    assert retried.status_code == 400
    assert retried.get_json()["error"] == "invalid_grant"


def test_rewrap_with_a_kek_that_opens_no_key_is_a_message_and_changes_nothing(
    make_app: Callable[[IssuerSettings], Flask], settings: IssuerSettings, new_kek: str
) -> None:
    make_app(settings)
    result = _rewrap(settings, new_kek)  # the old key forgotten
    assert result.exit_code == 1
    assert "ISSUER_KEY_ENCRYPTION_KEY" in result.output
    assert "Traceback" not in result.output
    assert _kid(_login(make_app(settings))) is not None  # still sealed under the old KEK


def test_rewrap_of_the_generated_kek_file_listing_the_new_key_first(
    make_app: Callable[[IssuerSettings], Flask], tmp_path: Path, new_kek: str
) -> None:
    data_dir = tmp_path / "issuer"
    settings = IssuerSettings(data_dir=data_dir, demo_users=DEMO_USERS, argon2_time_cost=1, argon2_memory_kib=8192)
    active = _kid(_login(make_app(settings)))
    kek_file = data_dir / KEK_FILE_NAME
    kek_file.write_text(f"{new_kek}\n{kek_file.read_text()}")

    result = CliRunner(env={"ISSUER_DATA_DIR": str(data_dir)}).invoke(main, ["keys", "rewrap"])

    assert result.exit_code == 0, result.output
    kek_file.write_text(new_kek + "\n")
    assert _kid(_login(make_app(settings))) == active
