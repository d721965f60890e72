"""OAuth clients registered with the issuer: all public (no secret), as CLIs and browsers are."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_CLIENT_ID = "cli"
WEB_CLIENT_ID = "resource-web"


@dataclass(frozen=True)
class Client:
    """A public client, the grants it may use and its exact redirect URIs."""

    client_id: str
    name: str
    grant_types: frozenset[str]
    redirect_uris: tuple[str, ...] = ()


def registered_clients(web_redirect_uris: tuple[str, ...]) -> dict[str, Client]:
    """Return the clients the issuer knows, by id."""
    clients = [
        Client(DEFAULT_CLIENT_ID, "command line", frozenset({"password", "refresh_token"})),
        Client(
            WEB_CLIENT_ID,
            "the jwt-split resource",
            frozenset({"authorization_code", "refresh_token"}),
            web_redirect_uris,
        ),
    ]
    return {client.client_id: client for client in clients}
