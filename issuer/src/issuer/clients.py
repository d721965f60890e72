"""OAuth clients registered with the issuer."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_CLIENT_ID = "cli"


@dataclass(frozen=True)
class Client:
    """A public client (no secret) and the grants it may use."""

    client_id: str
    grant_types: frozenset[str]


def registered_clients() -> dict[str, Client]:
    """Return the clients the issuer knows, by id."""
    cli = Client(DEFAULT_CLIENT_ID, frozenset({"password", "refresh_token"}))
    return {cli.client_id: cli}
