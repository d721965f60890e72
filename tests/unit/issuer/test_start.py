"""Starting the real issuer under gunicorn with a configuration that cannot work: one clear line, then exit."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from issuer import CANNOT_START, check_start
from issuer.kek import KEK_FILE_NAME, new_key_encryption_key
from issuer.settings import IssuerSettings
from jwt_verifier.jose import b64url_encode
from tests.support.processes import GunicornService, issuer_process, log_events


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, issuer_settings: IssuerSettings) -> IssuerSettings:
    """A data directory whose keys are sealed under its generated KEK, on SQLite, then on PostgreSQL."""
    if request.param == "sqlite":
        return issuer_settings
    settings = dataclasses.replace(
        issuer_settings,
        database_url=request.getfixturevalue("postgres_url"),
        key_encryption_key=(issuer_settings.data_dir / KEK_FILE_NAME).read_text().strip(),
        session_secret="S" * 48,
    )
    database = settings.database()
    database.upgrade()
    settings.key_store(database, settings.load_kek()).start()
    database.dispose()
    return settings


def _run_until_exit(tmp_path: Path, settings: IssuerSettings, kek: str) -> tuple[int, str]:
    issuer: GunicornService = issuer_process(
        tmp_path,
        data_dir=settings.data_dir,
        env={
            "ISSUER_DATABASE_URL": settings.database_url,
            "ISSUER_KEY_ENCRYPTION_KEY": kek,
            "ISSUER_SESSION_SECRET": settings.session_secret,
        },
    )
    issuer.start()
    assert issuer.proc is not None
    try:
        code = issuer.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        issuer.stop()
        pytest.fail(f"the issuer did not stop:\n{issuer.log()[-2000:]}")
    return code, issuer.log()


def test_a_wrong_key_encryption_key_stops_gunicorn_with_one_line_naming_the_setting(
    tmp_path: Path, settings: IssuerSettings
) -> None:
    wrong = b64url_encode(new_key_encryption_key())

    code, output = _run_until_exit(tmp_path, settings, wrong)

    assert code == CANNOT_START
    (event,) = [e for e in log_events(output) if e["msg"] == "cannot start"]
    assert "ISSUER_KEY_ENCRYPTION_KEY" in event["reason"]
    assert "Traceback" not in output
    assert wrong not in output
    assert "Booting worker" not in output  # stopped before any worker started


def test_a_malformed_key_encryption_key_stops_gunicorn_naming_the_setting_never_echoing_it(
    tmp_path: Path, settings: IssuerSettings
) -> None:
    code, output = _run_until_exit(tmp_path, settings, "not-a-key-but-a-secret-all-the-same")

    assert code == CANNOT_START
    assert "ISSUER_KEY_ENCRYPTION_KEY must be 32 random bytes" in output
    assert "not-a-key-but-a-secret" not in output
    assert "Traceback" not in output


def test_a_data_directory_that_cannot_be_made_stops_start_up_with_one_line_naming_it(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a file where the data directory's parent should be: even root cannot make it
    settings = IssuerSettings(data_dir=blocker / "issuer")

    with pytest.raises(SystemExit) as stopped:
        check_start(settings)

    assert stopped.value.code == CANNOT_START
    output = "".join(capfd.readouterr())
    (event,) = [e for e in log_events(output) if e["msg"] == "cannot start"]
    assert str(blocker / "issuer") in event["reason"]
    assert "Traceback" not in output
