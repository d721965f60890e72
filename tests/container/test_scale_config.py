"""The scale-out overlay as `docker compose config` resolves it: checked without starting anything."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.compose import REPO

pytestmark = pytest.mark.container

BALANCER = "balancer"


def _config(tmp_path: Path) -> dict[str, Any]:
    for name in ("issuer.env", "postgres.env"):
        (tmp_path / name).touch()  # compose reads the secrets files even to print the config
    command = ["docker", "compose", "-f", "compose.yaml", "-f", "compose.scale.yaml", "config", "--format", "json"]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "SCALE_SECRETS_DIR": str(tmp_path)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True)
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_the_replicas_trust_forwarded_for_from_the_balancer_alone(tmp_path: Path) -> None:
    config = _config(tmp_path)
    services, networks = config["services"], config["networks"]
    issuer = services["issuer"]
    trusted = [ipaddress.ip_network(word) for word in issuer["environment"]["ISSUER_TRUSTED_PROXIES"].split()]
    balancer_addresses = {
        ipaddress.ip_address(attachment["ipv4_address"])
        for attachment in (services[BALANCER]["networks"] or {}).values()
        if attachment and attachment.get("ipv4_address")
    }
    # Each trusted entry is one of the balancer's fixed addresses...
    assert all(network.num_addresses == 1 and network[0] in balancer_addresses for network in trusted), trusted
    # ...and no other container on the replicas' networks can be given one of them: Docker hands
    # out addresses from each network's ip_range (or its whole subnet when it has none).
    for name in issuer["networks"]:
        for pool in networks[name].get("ipam", {}).get("config", []):
            dynamic = ipaddress.ip_network(pool.get("ip_range") or pool["subnet"])
            assert not [network for network in trusted if network.overlaps(dynamic)], (name, dynamic)
