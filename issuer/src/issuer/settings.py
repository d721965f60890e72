"""Issuer settings: one frozen object built once from `ISSUER_*` environment variables."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from issuer.clients import insecure_redirect
from issuer.db import Database
from issuer.kek import load_key_encryption_keys
from issuer.keys import KeyPolicy, KeyStore
from jwt_verifier.env import Invalid, Variable, boolean, integer, number, read, setting, upper, url, urls, variables
from shared.settings import Environ, SettingsError, rate_limit

PREFIX = "ISSUER_"
INTROSPECTION_PREFIX = "ISSUER_INTROSPECTION_"
DATA_DIR = Path("var/issuer")  # relative to the working directory
MIN_INTROSPECTION_SECRET_CHARS = 32
SECRET_MIN_CHARS = 32

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# The URL schemes of the drivers the issuer ships: `postgresql://` means psycopg 3 (issuer.db).
DATABASE_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg"})


def _networks(raw: str) -> tuple[Network, ...]:
    """Parse networks (`10.0.0.0/8`, or one address) separated by spaces or commas."""
    networks = []
    for word in raw.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(word))
        except ValueError:
            raise Invalid(
                "must list proxy networks or addresses such as 10.0.0.0/8 or 192.0.2.7, "
                "with no host bits set in a network",
                word,
            ) from None
    return tuple(networks)


def _database_url(raw: str) -> str:
    """Parse a database URL of a driver the issuer ships; the URL is never echoed (it may hold a password)."""
    try:
        parsed = make_url(raw)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number, an unclosed IPv6 bracket
        raise Invalid("must be a database URL such as postgresql://host/db", "") from None
    backend = parsed.get_backend_name()
    if backend not in {"sqlite", "postgresql"}:
        raise Invalid(f"must be a sqlite:// or postgresql:// URL, not {backend}://", "")
    if parsed.drivername not in DATABASE_DRIVERS:
        # Only these are installed: another one failed at start with an import error's traceback.
        raise Invalid(f"must be a sqlite:// or postgresql:// URL (psycopg 3), not {parsed.drivername}://", "")
    return raw


def _long_secret(raw: str, minimum: int) -> str:
    """Return a secret of at least `minimum` characters (its value is never echoed)."""
    if len(raw) < minimum:
        raise Invalid(f"must be at least {minimum} characters", "")
    return raw


def _capacity(raw: str) -> int:
    """Return a status list's number of indexes: whole bytes of bits, 1024 to 1048576."""
    capacity = integer(1024, 1024 * 1024)(raw)
    if capacity % 8:
        raise Invalid("must be a multiple of 8 (whole bytes of bits)", capacity)
    return capacity


@dataclass(frozen=True)
class IntrospectionSettings:
    """Who may introspect (`ISSUER_INTROSPECTION_*`); an empty secret turns the endpoint off."""

    client_id: str = setting("CLIENT_ID", "resource-api", doc="the introspecting client's id")
    secret: str = setting(
        "SECRET", "", parse=lambda raw: _long_secret(raw, MIN_INTROSPECTION_SECRET_CHARS), secret=True, doc="its secret"
    )
    leeway: int = setting("LEEWAY", 0, parse=integer(0, 300), doc="clock skew allowed when introspecting")

    @property
    def enabled(self) -> bool:
        """Return whether the endpoint is on."""
        return bool(self.secret)

    @classmethod
    def from_env(cls, env: Environ) -> IntrospectionSettings:
        """Build settings from `ISSUER_INTROSPECTION_*`, naming the variable of any bad value."""
        return read(cls, env, INTROSPECTION_PREFIX)


@dataclass(frozen=True)
class IssuerSettings:
    """Everything the issuer is configured with; see docs/configuration.md."""

    url: str = setting("URL", "http://localhost:8000", parse=url, doc="the issuer's public URL: every token's `iss`")
    data_dir: Path = setting("DATA_DIR", DATA_DIR, parse=Path, doc="where the issuer keeps its state")
    # The URL may hold the database's password: never shown.
    database_url: str = setting("DATABASE_URL", "", parse=_database_url, secret=True, doc="the issuer's database")
    key_encryption_key: str = setting("KEY_ENCRYPTION_KEY", "", secret=True, doc="the key-encryption key(s)")
    key_encryption_key_file: str = setting("KEY_ENCRYPTION_KEY_FILE", "", doc="a file holding the KEK(s)")
    audience: str = setting("AUDIENCE", "jwt-split-api", doc="the default API")
    audience_scope: str = setting("AUDIENCE_SCOPE", "profile admin", doc="the default API's scopes")
    audience_resource_uris: tuple[str, ...] = setting(
        "AUDIENCE_RESOURCE_URIS", (), parse=urls, doc="other names of the default API"
    )
    access_token_ttl: int = setting("ACCESS_TOKEN_TTL", 600, parse=integer(30, 3600), doc="access token lifetime")
    refresh_token_ttl: int = setting(
        "REFRESH_TOKEN_TTL", 14 * 24 * 3600, parse=integer(60), doc="refresh token lifetime"
    )
    refresh_family_ttl: int = setting(
        "REFRESH_FAMILY_TTL", 30 * 24 * 3600, parse=integer(60), doc="refresh token family lifetime"
    )
    refresh_reuse_grace: int = setting(
        "REFRESH_REUSE_GRACE", 30, parse=integer(0, 300), doc="seconds a used refresh token gets the same successor"
    )
    jwks_max_age: int = setting("JWKS_MAX_AGE", 300, parse=integer(0, 86400), doc="the JWKS's max-age")
    key_activation_delay: int = setting(
        "KEY_ACTIVATION_DELAY", 600, parse=integer(0), doc="how long a staged key is published before it signs"
    )
    key_retire_grace: int = setting(
        "KEY_RETIRE_GRACE", 60, parse=integer(0), doc="extra seconds a retiring key stays published"
    )
    key_rotation_days: float = setting(
        "KEY_ROTATION_DAYS", 0.0, parse=number(0.0), doc="days after which a new key is staged (0: off)"
    )
    rsa_key_bits: int = setting("RSA_KEY_BITS", 2048, parse=integer(2048, 8192), doc="size of generated RSA keys")
    argon2_time_cost: int = setting("ARGON2_TIME_COST", 2, parse=integer(1, 20), doc="argon2id passes")
    argon2_memory_kib: int = setting(
        "ARGON2_MEMORY_KIB", 19456, parse=integer(8192, 1024 * 1024), doc="argon2id memory in KiB"
    )
    key_reload_interval: float = 1.0  # fixed: every worker re-reads the key states once a second
    web_redirect_uris: tuple[str, ...] = setting(
        "WEB_REDIRECT_URIS", ("http://localhost:8001/callback",), parse=urls, doc="the browser client's redirect URIs"
    )
    web_post_logout_redirect_uris: tuple[str, ...] = setting(
        "WEB_POST_LOGOUT_REDIRECT_URIS",
        ("http://localhost:8001/logged-out",),
        parse=urls,
        doc="where the browser client may send the user back after logging out",
    )
    login_session_ttl: int = setting("LOGIN_SESSION_TTL", 8 * 3600, parse=integer(60), doc="login session lifetime")
    login_code_ttl: int = setting(
        "LOGIN_CODE_TTL", 300, parse=integer(1), doc="seconds a login waits for its one-time code after the password"
    )
    # issuer.reauth: changing a factor needs a login this recent (and multi-factor, once the user has a factor).
    factor_change_max_age: int = setting(
        "FACTOR_CHANGE_MAX_AGE",
        300,
        parse=integer(1, 86400),
        doc="seconds after a login during which its session may change the user's factors",
    )
    login_rate_limit: str = setting(
        "LOGIN_RATE_LIMIT", "5 per minute", parse=rate_limit, doc="failed password checks per account and address"
    )
    address_rate_limit: str = setting(
        "ADDRESS_RATE_LIMIT", "30 per minute", parse=rate_limit, doc="failed password checks per address"
    )
    rate_limit_storage: str = setting("RATE_LIMIT_STORAGE", "memory://", doc="where the counters live")
    trusted_proxies: tuple[Network, ...] = setting(
        "TRUSTED_PROXIES", (), parse=_networks, doc="the reverse proxies in front of the issuer"
    )
    session_secret: str = setting(
        "SESSION_SECRET",
        "",
        parse=lambda raw: _long_secret(raw, SECRET_MIN_CHARS),
        secret=True,
        file=True,
        doc="the session secret",
    )
    # Passwords: never shown.
    demo_users: str = setting("DEMO_USERS", "", secret=True, doc="users to create at start")
    introspection: IntrospectionSettings = IntrospectionSettings()
    log_level: str = setting("LOG_LEVEL", "INFO", parse=upper, doc="log level")
    max_body_bytes: int = 16 * 1024  # fixed
    prune_interval: int = setting(
        "PRUNE_INTERVAL",
        3600,
        parse=integer(0),
        doc="seconds between prunings of expired rows (issuer.prune); 0: never",
    )
    allow_insecure_redirects: bool = setting(
        "ALLOW_INSECURE_REDIRECTS", False, parse=boolean, doc="accept plain http web redirect URIs off loopback"
    )
    # Token Status Lists (issuer.statuslist): how long APIs may cache a list, indexes per list,
    # and how long a list takes new indexes.
    status_list_ttl: int = setting(
        "STATUS_LIST_TTL", 1, parse=integer(1, 300), doc="seconds an API may cache a status list"
    )
    status_list_capacity: int = setting(
        "STATUS_LIST_CAPACITY", 16384, parse=_capacity, doc="indexes per status list (a multiple of 8)"
    )
    status_list_validity: int = setting(
        "STATUS_LIST_VALIDITY", 24 * 3600, parse=integer(60, 30 * 24 * 3600), doc="seconds a list takes new indexes"
    )
    # DPoP (issuer.dpop): proofs at the token endpoint must carry a server nonce (RFC 9449 section 8).
    dpop_nonce: bool = setting("DPOP_NONCE", False, parse=boolean, doc="DPoP proofs at /token need a server nonce")
    dpop_nonce_lifetime: int = setting(
        "DPOP_NONCE_LIFETIME", 300, parse=integer(10, 3600), doc="seconds a nonce period lasts"
    )
    # Token Status Lists off: no `status` claim, no /statuslists (revocation reaches the APIs only
    # through introspection, or when the access token expires).
    status_lists: bool = setting("STATUS_LISTS", True, parse=boolean, doc="issue tokens with a status list index")
    # The password grant (RFC 6749 4.3): on for the demo; OAuth 2.1 and RFC 9700 drop it.
    password_grant: bool = setting(
        "PASSWORD_GRANT", True, parse=boolean, doc="whether /token accepts grant_type=password"
    )
    # The device authorization grant (issuer.device, RFC 8628).
    device_code_ttl: int = setting(
        "DEVICE_CODE_TTL", 600, parse=integer(5, 3600), doc="seconds a device code waits for its user"
    )
    device_poll_interval: int = setting(
        "DEVICE_POLL_INTERVAL", 5, parse=integer(1, 60), doc="seconds a device waits between polls"
    )
    device_authorization_rate_limit: str = setting(
        "DEVICE_AUTHORIZATION_RATE_LIMIT",
        "30 per minute",
        parse=rate_limit,
        doc="device authorizations started per address",
    )
    # issuer.passkeys: each options request of a passkey login keeps a challenge row (five minutes).
    passkey_options_rate_limit: str = setting(
        "PASSKEY_OPTIONS_RATE_LIMIT",
        "60 per minute",
        parse=rate_limit,
        doc="passkey login options asked for per address",
    )
    # issuer.cache: how long a worker answers from the clients and APIs it read (0: reads every time).
    registry_cache_ttl: float = setting(
        "REGISTRY_CACHE_TTL", 1.0, parse=number(0.0, 60.0), doc="seconds a registration change may take to be seen"
    )

    def password_hasher(self) -> PasswordHasher:
        """Return an argon2id hasher with the configured cost (OWASP's minimum by default)."""
        return PasswordHasher(time_cost=self.argon2_time_cost, memory_cost=self.argon2_memory_kib, parallelism=1)

    @property
    def secure_cookies(self) -> bool:
        """Return whether cookies get the Secure flag (the issuer is served over HTTPS)."""
        return self.url.startswith("https://")

    @property
    def legacy_key_dir(self) -> Path:
        """Return where releases before keys moved into the database kept key files (imported at start)."""
        return self.data_dir / "keys"

    def __post_init__(self) -> None:
        if self.database_url.startswith("postgresql") and not (self.key_encryption_key or self.key_encryption_key_file):
            raise SettingsError(
                "ISSUER_KEY_ENCRYPTION_KEY or ISSUER_KEY_ENCRYPTION_KEY_FILE is required with a PostgreSQL "
                "ISSUER_DATABASE_URL: every replica must unseal the same signing keys"
            )
        if self.database_url.startswith("postgresql") and not self.session_secret:
            raise SettingsError(
                "ISSUER_SESSION_SECRET or ISSUER_SESSION_SECRET_FILE is required with a PostgreSQL "
                "ISSUER_DATABASE_URL: every replica must accept the login forms and cookies of the others"
            )
        if self.key_activation_delay < self.jwks_max_age:
            raise SettingsError(
                "ISSUER_KEY_ACTIVATION_DELAY must be at least ISSUER_JWKS_MAX_AGE, so that every "
                "verifier has fetched a staged key before it signs"
            )

    @property
    def key_retire_after(self) -> int:
        """Return how long a retiring key stays published: every token it signed has expired."""
        return self.access_token_ttl + self.key_retire_grace

    @property
    def key_rotation_interval(self) -> float:
        """Return the automatic rotation period in seconds (0: off)."""
        return self.key_rotation_days * 86400

    def database(self) -> Database:
        """Open the issuer's database: ISSUER_DATABASE_URL, or SQLite in the data directory."""
        return Database.for_data_dir(self.database_url, self.data_dir)

    def load_kek(self) -> tuple[bytes, ...]:
        """Return the key-encryption keys (the first seals, all open): ISSUER_KEY_ENCRYPTION_KEY[_FILE], or the generated one."""
        return load_key_encryption_keys(self.key_encryption_key, self.key_encryption_key_file, self.data_dir)

    def key_store(self, database: Database, kek: bytes | Sequence[bytes]) -> KeyStore:
        """Return a key store on this issuer's database, with its lifecycle timings."""
        return KeyStore(database, kek, self.key_policy)

    @property
    def key_policy(self) -> KeyPolicy:
        """Return the key size and lifecycle timings the key store follows."""
        return KeyPolicy(
            self.rsa_key_bits,
            self.key_reload_interval,
            self.key_activation_delay,
            self.key_retire_after,
            self.key_rotation_interval,
        )

    @classmethod
    def from_env(cls, environ: Environ | None = None) -> IssuerSettings:
        """Build settings from the environment, naming the variable of any bad value."""
        env = os.environ if environ is None else environ
        settings = read(cls, env, PREFIX, given={"introspection": IntrospectionSettings.from_env(env)})
        _check_redirect_uris(settings)
        return settings

    @classmethod
    def variables(cls) -> list[Variable]:
        """List every variable the issuer reads, with its default as docs/configuration.md writes it."""
        return [*variables(cls, PREFIX), *variables(IntrospectionSettings, INTROSPECTION_PREFIX)]


def _check_redirect_uris(settings: IssuerSettings) -> None:
    """Refuse plain http redirect URIs off loopback unless ISSUER_ALLOW_INSECURE_REDIRECTS (RFC 9700 2.1)."""
    if settings.allow_insecure_redirects:
        return
    for uri in settings.web_redirect_uris:
        if insecure_redirect(uri):
            raise SettingsError(
                f"ISSUER_WEB_REDIRECT_URIS must use https off loopback (localhost, 127.0.0.0/8, [::1]), got {uri!r}; "
                "or set ISSUER_ALLOW_INSECURE_REDIRECTS=true"
            )
