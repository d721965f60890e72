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


def test_issuer_keeps_its_private_key_only_in_the_data_volume(containers: ComposeStack) -> None:
    paths = files_holding_a_private_key(containers, "issuer")
    assert paths, "the issuer should hold its key"
    assert all(path.startswith("/data/keys/") for path in paths), paths


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


def test_key_files_are_readable_only_by_the_issuer_user(containers: ComposeStack) -> None:
    modes = containers.compose("exec", "-T", "issuer", "sh", "-c", "stat -c '%a %u' /data/keys/*.pem").stdout
    for line in modes.splitlines():
        mode, _owner = line.split()
        assert mode == "600", line
