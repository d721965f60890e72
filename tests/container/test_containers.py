"""What only containers can show: images and processes hold no secret and run as non-root."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.compose import ComposeStack

pytestmark = pytest.mark.container

# A PEM private key block, as a line of its own (library sources only mention it in quotes).
PEM_PRIVATE_KEY = "^-----BEGIN ([A-Z]+ )?PRIVATE KEY-----$"


@pytest.fixture(scope="module")
def containers(compose_images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    running = ComposeStack(tmp_path_factory.mktemp("containers"))
    try:
        running.start()
    except BaseException:
        running.close()
        raise
    yield running
    running.close()


def files_holding_a_private_key(containers: ComposeStack, service: str) -> list[str]:
    """Return every file in the service's container that holds a PEM private key block."""
    found = containers.compose(
        "exec",
        "-T",
        service,
        "grep",
        "-rlIsE",
        "--exclude-dir=proc",
        "--exclude-dir=sys",
        "--exclude-dir=dev",
        PEM_PRIVATE_KEY,
        "/",
        check=False,
    )
    # grep exits 2 for files the unprivileged user cannot read (/etc/shadow): judge by output.
    return found.stdout.split()


def test_resource_container_holds_no_private_key(containers: ComposeStack) -> None:
    found = files_holding_a_private_key(containers, "resource")
    assert found == [], f"private key material found in the resource container: {found}"


def test_issuer_keeps_its_private_keys_only_sealed_in_its_data_volume(containers: ComposeStack) -> None:
    """No readable private key anywhere in the container: the keys are sealed in the database."""
    assert files_holding_a_private_key(containers, "issuer") == []
    listing = containers.compose("exec", "-T", "issuer", "ls", "-A", "/data").stdout.split()
    assert {"issuer.sqlite3", "key-encryption-key", "session-secret"} <= set(listing), listing
    _, key = containers.active_private_key()  # and they do unseal, with the key-encryption key
    assert key.key_size == 2048


def test_resource_environment_holds_no_secret(containers: ComposeStack) -> None:
    env = containers.compose("exec", "-T", "resource", "env").stdout
    names = {line.split("=", 1)[0] for line in env.splitlines()}
    assert not any(word in name for name in names for word in ("SECRET", "PASSWORD", "KEY", "DEMO_USERS")), names
    assert "wonderland" not in env


def test_resource_image_does_not_contain_the_issuer(containers: ComposeStack) -> None:
    probe = containers.compose("exec", "-T", "resource", "python3", "-c", "import issuer", check=False)
    assert probe.returncode != 0
    assert "ModuleNotFoundError" in probe.stderr


@pytest.mark.parametrize("service", ["issuer", "resource"])
def test_service_runs_as_non_root(containers: ComposeStack, service: str) -> None:
    uid = containers.compose("exec", "-T", service, "id", "-u").stdout.strip()
    assert uid.isdigit()
    assert int(uid) != 0
    # Not just the shell we exec: gunicorn's master (pid 1 is the init) runs as that user too.
    owners = containers.compose("exec", "-T", service, "sh", "-c", "stat -c %u /proc/[0-9]*").stdout.split()
    assert "0" not in owners, owners


def test_the_issuer_data_volume_is_readable_only_by_the_issuer_user(containers: ComposeStack) -> None:
    uid = containers.compose("exec", "-T", "issuer", "id", "-u").stdout.strip()
    listing = containers.compose(
        "exec", "-T", "issuer", "find", "/data", "-exec", "stat", "-c", "%a %u %F %n", "{}", "+"
    )
    lines = listing.stdout.splitlines()
    assert len(lines) >= 4, lines
    for line in lines:
        mode, owner, kind = line.split()[:3]
        assert (mode, owner) == ("700" if kind == "directory" else "600", uid), line
