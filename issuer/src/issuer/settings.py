"""Issuer settings: one frozen object built once from `ISSUER_*` environment variables."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from argon2 import PasswordHasher
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from issuer.clients import insecure_redirect
from issuer.db import Database
from issuer.kek import load_key_encryption_keys
from issuer.keys import KeyPolicy, KeyStore
from shared.settings import Environ, SettingsError, env_bool, env_float, env_int, env_rate_limit, env_str, env_url

MIN_INTROSPECTION_SECRET_CHARS = 32

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# The URL schemes of the drivers the issuer ships: `postgresql://` means psycopg 3 (issuer.db).
DATABASE_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg"})


@dataclass(frozen=True)
class IntrospectionSettings:
    """Who may introspect; an empty secret turns the endpoint off."""

    client_id: str = "resource-api"
    secret: str = ""
    leeway: int = 0

    @property
    def enabled(self) -> bool:
        """Return whether the endpoint is on."""
        return bool(self.secret)

    @classmethod
    def from_env(cls, env: Environ) -> IntrospectionSettings:
        """Build settings from `ISSUER_INTROSPECTION_*`, naming the variable of any bad value."""
        secret = env.get("ISSUER_INTROSPECTION_SECRET", "")
        if secret and len(secret) < MIN_INTROSPECTION_SECRET_CHARS:
            raise SettingsError(
                f"ISSUER_INTROSPECTION_SECRET must be at least {MIN_INTROSPECTION_SECRET_CHARS} characters"
            )
        return cls(
            client_id=env_str(env, "ISSUER_INTROSPECTION_CLIENT_ID", cls.client_id),
            secret=secret,
            leeway=env_int(env, "ISSUER_INTROSPECTION_LEEWAY", cls.leeway, minimum=0, maximum=300),
        )


@dataclass(frozen=True)
class IssuerSettings:
    """Everything the issuer is configured with; see docs/configuration.md."""

    url: str = "http://localhost:8000"
    data_dir: Path = Path("var/issuer")
    database_url: str = ""
    key_encryption_key: str = field(default="", repr=False)
    key_encryption_key_file: str = ""
    audience: str = "jwt-split-api"
    audience_scope: str = "profile admin"
    audience_resource_uris: tuple[str, ...] = ()
    access_token_ttl: int = 600
    refresh_token_ttl: int = 14 * 24 * 3600
    refresh_family_ttl: int = 30 * 24 * 3600
    refresh_reuse_grace: int = 30
    jwks_max_age: int = 300
    key_activation_delay: int = 600
    key_retire_grace: int = 60
    key_rotation_days: float = 0
    rsa_key_bits: int = 2048
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19456
    key_reload_interval: float = 1.0
    web_redirect_uris: tuple[str, ...] = ("http://localhost:8001/callback",)
    web_post_logout_redirect_uris: tuple[str, ...] = ("http://localhost:8001/logged-out",)
    login_session_ttl: int = 8 * 3600
    login_rate_limit: str = "5 per minute"
    address_rate_limit: str = "30 per minute"
    rate_limit_storage: str = "memory://"
    trusted_proxies: tuple[Network, ...] = ()
    session_secret: str = field(default="", repr=False)
    demo_users: str = ""
    introspection: IntrospectionSettings = IntrospectionSettings()
    log_level: str = "INFO"
    max_body_bytes: int = 16 * 1024
    prune_interval: int = 3600  # seconds between prunings of expired rows (issuer.prune); 0: never
    dpop_nonce: bool = False  # DPoP proofs at the token endpoint must carry a server nonce (RFC 9449 section 8)
    dpop_nonce_lifetime: int = 300  # seconds a nonce is good for at least

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
        return cls(
            url=env_url(env, "ISSUER_URL", cls.url),
            data_dir=Path(env_str(env, "ISSUER_DATA_DIR", str(cls.data_dir))),
            database_url=_database_url(env),
            key_encryption_key=env.get("ISSUER_KEY_ENCRYPTION_KEY", ""),
            key_encryption_key_file=env.get("ISSUER_KEY_ENCRYPTION_KEY_FILE", ""),
            audience=env_str(env, "ISSUER_AUDIENCE", cls.audience),
            audience_scope=env_str(env, "ISSUER_AUDIENCE_SCOPE", cls.audience_scope),
            audience_resource_uris=_urls(env, "ISSUER_AUDIENCE_RESOURCE_URIS", cls.audience_resource_uris),
            access_token_ttl=env_int(env, "ISSUER_ACCESS_TOKEN_TTL", cls.access_token_ttl, minimum=30, maximum=3600),
            refresh_token_ttl=env_int(env, "ISSUER_REFRESH_TOKEN_TTL", cls.refresh_token_ttl, minimum=60),
            refresh_family_ttl=env_int(env, "ISSUER_REFRESH_FAMILY_TTL", cls.refresh_family_ttl, minimum=60),
            refresh_reuse_grace=env_int(
                env, "ISSUER_REFRESH_REUSE_GRACE", cls.refresh_reuse_grace, minimum=0, maximum=300
            ),
            jwks_max_age=env_int(env, "ISSUER_JWKS_MAX_AGE", cls.jwks_max_age, minimum=0, maximum=86400),
            key_activation_delay=env_int(env, "ISSUER_KEY_ACTIVATION_DELAY", cls.key_activation_delay, minimum=0),
            key_retire_grace=env_int(env, "ISSUER_KEY_RETIRE_GRACE", cls.key_retire_grace, minimum=0),
            key_rotation_days=env_float(env, "ISSUER_KEY_ROTATION_DAYS", cls.key_rotation_days),
            rsa_key_bits=env_int(env, "ISSUER_RSA_KEY_BITS", cls.rsa_key_bits, minimum=2048, maximum=8192),
            argon2_time_cost=env_int(env, "ISSUER_ARGON2_TIME_COST", cls.argon2_time_cost, minimum=1, maximum=20),
            argon2_memory_kib=env_int(
                env, "ISSUER_ARGON2_MEMORY_KIB", cls.argon2_memory_kib, minimum=8192, maximum=1024 * 1024
            ),
            web_redirect_uris=_redirect_uris(env, "ISSUER_WEB_REDIRECT_URIS", cls.web_redirect_uris),
            web_post_logout_redirect_uris=_urls(
                env, "ISSUER_WEB_POST_LOGOUT_REDIRECT_URIS", cls.web_post_logout_redirect_uris
            ),
            login_session_ttl=env_int(env, "ISSUER_LOGIN_SESSION_TTL", cls.login_session_ttl, minimum=60),
            login_rate_limit=env_rate_limit(env, "ISSUER_LOGIN_RATE_LIMIT", cls.login_rate_limit),
            address_rate_limit=env_rate_limit(env, "ISSUER_ADDRESS_RATE_LIMIT", cls.address_rate_limit),
            rate_limit_storage=env_str(env, "ISSUER_RATE_LIMIT_STORAGE", cls.rate_limit_storage),
            trusted_proxies=_networks(env, "ISSUER_TRUSTED_PROXIES"),
            session_secret=_secret(env, "ISSUER_SESSION_SECRET"),
            demo_users=env.get("ISSUER_DEMO_USERS", ""),
            introspection=IntrospectionSettings.from_env(env),
            log_level=env_str(env, "ISSUER_LOG_LEVEL", cls.log_level).upper(),
            prune_interval=env_int(env, "ISSUER_PRUNE_INTERVAL", cls.prune_interval, minimum=0),
            dpop_nonce=env_bool(env, "ISSUER_DPOP_NONCE", cls.dpop_nonce),
            dpop_nonce_lifetime=env_int(
                env, "ISSUER_DPOP_NONCE_LIFETIME", cls.dpop_nonce_lifetime, minimum=10, maximum=3600
            ),
        )


def _urls(env: Environ, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name, "").split()
    if not raw:
        return default
    return tuple(env_url({name: url}, name) for url in raw)


def _redirect_uris(env: Environ, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Return redirect URIs: plain http only on loopback unless ISSUER_ALLOW_INSECURE_REDIRECTS (RFC 9700 2.1)."""
    uris = _urls(env, name, default)
    if not env_bool(env, "ISSUER_ALLOW_INSECURE_REDIRECTS", False):
        for uri in uris:
            if insecure_redirect(uri):
                raise SettingsError(
                    f"{name} must use https off loopback (localhost, 127.0.0.0/8, [::1]), got {uri!r}; "
                    "or set ISSUER_ALLOW_INSECURE_REDIRECTS=true"
                )
    return uris


def _networks(env: Environ, name: str) -> tuple[Network, ...]:
    """Parse networks (`10.0.0.0/8`, or one address) separated by spaces or commas."""
    networks = []
    for word in env.get(name, "").replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(word))
        except ValueError:
            raise SettingsError(
                f"{name} must list proxy networks or addresses such as 10.0.0.0/8 or 192.0.2.7, "
                f"with no host bits set in a network; {word!r} is not one"
            ) from None
    return tuple(networks)


def _database_url(env: Environ) -> str:
    url = env.get("ISSUER_DATABASE_URL", "").strip()
    if not url:
        return ""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number, an unclosed IPv6 bracket
        # Never echo the URL: it may hold the database's password.
        raise SettingsError("ISSUER_DATABASE_URL must be a database URL such as postgresql://host/db") from None
    backend = parsed.get_backend_name()
    if backend not in {"sqlite", "postgresql"}:
        raise SettingsError(f"ISSUER_DATABASE_URL must be a sqlite:// or postgresql:// URL, not {backend}://")
    if parsed.drivername not in DATABASE_DRIVERS:
        # Only these are installed: another one failed at start with an import error's traceback.
        raise SettingsError(
            f"ISSUER_DATABASE_URL must be a sqlite:// or postgresql:// URL (psycopg 3), not {parsed.drivername}://"
        )
    return url


SECRET_MIN_CHARS = 32


def _secret(env: Environ, name: str) -> str:
    """Return a secret from the variable `name` or from the file `name`_FILE names (not both), or ""."""
    value, file = env.get(name, "").strip(), env.get(f"{name}_FILE", "").strip()
    if value and file:
        raise SettingsError(f"set {name} or {name}_FILE, not both")
    if file:
        try:
            value = Path(file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{name}_FILE names {file}, which cannot be read: {type(exc).__name__}") from None
    if value and len(value) < SECRET_MIN_CHARS:
        raise SettingsError(f"{name} must be at least {SECRET_MIN_CHARS} characters")  # the value is never echoed
    return value
