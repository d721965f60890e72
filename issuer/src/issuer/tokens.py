"""Tokens: RFC 9068 JWT access tokens, and opaque refresh tokens rotated on every use.

A refresh token is 256 random bits; only its SHA-256 is stored. Each use marks it used and
issues a successor in the same family. Presenting a used token again, after a short grace
for concurrent tabs and retries, means it was copied, so the whole family is revoked (OAuth
2.0 Security BCP, RFC 9700 section 4.14.2). A family ends at an absolute lifetime however
often it is refreshed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sqlalchemy import Connection, bindparam, insert, select, update

from issuer import assurance
from issuer.db import Database, delete_in_batches, refresh_tokens, stamp, status_grants, users, with_username
from issuer.jose import ACCESS_TOKEN, ID_TOKEN, sign
from issuer.keys import SigningKey
from issuer.opaque import derived_secret, new_secret, secret_hash
from issuer.statuslist import hold_new_grants, of_families, revoke_grants
from issuer.users import parse_scope
from jwt_verifier.jose import b64url_encode
from shared import audit, metrics

log = logging.getLogger(__name__)


# The rotation's statements, built once: a statement object built once keeps its cache key, and
# SQLAlchemy finds its compiled form without building and walking it again per request.
_PRESENTED = with_username(refresh_tokens, refresh_tokens.c.token_hash, bindparam("token_hash"))
_SPEND = (
    update(refresh_tokens)
    .where(refresh_tokens.c.token_hash == bindparam("spent_hash"), refresh_tokens.c.used_at.is_(None))
    .values(used_at=bindparam("spent_at"))
)
_INSERT = insert(refresh_tokens)


@dataclass(frozen=True)
class Grant:
    """Who a token is for, through which client, with which scope."""

    user_id: str  # empty for a client's own grant (client_credentials)
    username: str  # the user's name (`preferred_username`), or the client id
    client_id: str
    scope: str
    audience: str | None = None  # the API it is for; None: the default API (grants made before APIs existed)
    session_hash: str | None = None  # the browser login it came from (refresh grants only; for `sid`)
    login: Login | None = None  # what that login proved and when, as the refresh family recorded it
    # The user's scopes as the grant's own transaction read them, with its row locked (a refresh
    # token or a code read joined to its user): narrowing it needs no second read. None: not read.
    user_scopes: frozenset[str] | None = field(default=None, compare=False)

    @property
    def subject(self) -> str:
        """Return the tokens' `sub`: the user's stable id, never their name (reassigned once they are deleted).

        OpenID Connect Core 1.0 section 2 and RFC 9068 section 2.2; a client's own grant has the
        client id, which can never be a user's id (issuer.clients refuses that form).
        """
        return self.user_id or self.client_id


class RefreshError(Exception):
    """A refresh token cannot be used; the message is safe to show the client."""


class RefreshReused(RefreshError):
    """A used refresh token came back after the reuse grace: its family has been revoked."""


class RefreshKeyMismatch(RefreshError):
    """The refresh token is DPoP-bound (RFC 9449 section 5) and the request proved no key, or another one."""


@dataclass(frozen=True)
class Login:
    """What the user proved and when: the `amr`, `acr` and `auth_time` of the tokens a login gives.

    RFC 8176 section 2 (`amr`), OpenID Connect Core 1.0 section 2 (`acr`, `auth_time`), which
    RFC 9068 section 2.2.1 lets access tokens carry too; `acr` follows from `amr` (issuer.assurance).
    """

    amr: tuple[str, ...]
    auth_time: int

    @property
    def acr(self) -> str:
        """Return the level of assurance the login reached."""
        return assurance.acr_for(self.amr)

    def claims(self) -> dict[str, Any]:
        """Return the login's claims as tokens carry them."""
        return {"auth_time": self.auth_time, "acr": self.acr, "amr": list(self.amr)}


def mint_access_token(
    key: SigningKey,
    grant: Grant,
    *,
    issuer: str,
    audience: str | list[str],
    ttl: int,
    now: int | None = None,
    status: dict[str, Any] | None = None,
    jkt: str | None = None,
    login: Login | None = None,
) -> tuple[str, dict[str, Any]]:
    """Sign an RFC 9068 access token, bound to the DPoP key `jkt` if given (RFC 9449 `cnf.jkt`); return it with its claims.

    `issuer.jose` signs, with header `typ` `at+jwt` (RFC 9068 section 2.1). A token born of a
    user's login carries that login's `amr`, `acr` and `auth_time` (`login`, RFC 9068 section
    2.2.1), so that an API can demand a stronger or more recent one (RFC 9470); a client's own
    token has none.
    """
    issued_at = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": grant.subject,
        "aud": audience,
        "exp": issued_at + ttl,
        "iat": issued_at,
        "jti": uuid.uuid4().hex,
        "client_id": grant.client_id,
        "scope": grant.scope,
    }
    if grant.user_id:
        claims["preferred_username"] = grant.username  # what an API shows; RFC 9068 section 2.2.3.1 allows it
    if status is not None:
        claims["status"] = status  # draft-ietf-oauth-status-list-21 section 6.1 (issuer.statuslist)
    if jkt is not None:
        claims["cnf"] = {"jkt": jkt}  # RFC 9449 section 6.1
    if login is not None:
        claims.update(login.claims())
    return sign(key, ACCESS_TOKEN, claims), claims


@dataclass(frozen=True)
class Authentication:
    """The browser login an ID token speaks of (OpenID Connect Core 1.0 section 2)."""

    auth_time: int  # when the user proved who they are
    sid: str  # the login session's public identifier (issuer.sessions.public_id)
    nonce: str | None = None  # from the authorization request; never on a refresh's ID token
    amr: tuple[str, ...] = assurance.PASSWORD  # what the login proved (RFC 8176); `acr` follows from it


def mint_id_token(
    key: SigningKey,
    grant: Grant,
    authentication: Authentication,
    *,
    issuer: str,
    access_token: str,
    ttl: int,
    now: int | None = None,
    claims: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Sign an OpenID Connect ID token for the client of `grant`; return it with its claims.

    Header `typ` is `JWT`, not `at+jwt`: the APIs, which demand `at+jwt`, refuse an ID token
    presented as an access token (RFC 8725 section 3.11's explicit typing). `at_hash` binds the
    access token issued with it (OpenID Connect Core 1.0 section 3.1.3.6).
    """
    issued_at = int(time.time()) if now is None else now
    registered: dict[str, Any] = {
        "iss": issuer,
        "sub": grant.subject,
        "aud": grant.client_id,
        "exp": issued_at + ttl,
        "iat": issued_at,
        "auth_time": authentication.auth_time,
        "acr": assurance.acr_for(authentication.amr),
        "amr": list(authentication.amr),
        "azp": grant.client_id,
        "sid": authentication.sid,
        "at_hash": at_hash(access_token),
    }
    if authentication.nonce is not None:
        registered["nonce"] = authentication.nonce
    signed = {**(claims or {}), **registered}  # the user's claims never override the registered ones
    return sign(key, ID_TOKEN, signed), signed


def at_hash(access_token: str) -> str:
    """Return the `at_hash` of an access token for RS256: the left half of its SHA-256, base64url."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return b64url_encode(digest[: len(digest) // 2])


@dataclass(frozen=True)
class RefreshTokens:
    """Refresh tokens in the issuer's database (owner of `refresh_tokens`).

    Reuse grace: a token presented again within `reuse_grace` seconds of its first use, by
    the same client (two tabs refreshing at once, a retry after a lost response), gets the
    same successor again instead of revoking the family, as long as that successor is unused.
    The successor is derived from the token under `successor_key` (HMAC), so it can be handed
    out again without being stored; every replica derives the same one. After the grace, or
    once the successor has been used, presenting the token again means it was copied: the
    whole family is revoked.

    `successor_key` comes from the key-encryption key. While the KEK changes, the keys from
    the old KEKs (`previous_successor_keys`) still find successors derived before the change;
    a retry that reaches a replica knowing none of the keys its successor came from loses
    the grace, as a retry after the grace does.
    """

    SUCCESSOR: ClassVar[str] = "refresh-successor"

    database: Database
    ttl: int
    family_ttl: int
    reuse_grace: int
    successor_key: bytes = field(repr=False)
    previous_successor_keys: tuple[bytes, ...] = field(default=(), repr=False)

    def issue(
        self,
        grant: Grant,
        *,
        session_hash: str | None = None,
        family_id: str | None = None,
        dpop_jkt: str | None = None,
    ) -> str:
        """Start a new family with a first refresh token; return the token.

        A token born of a browser login records that login session: revoking the token
        (the resource's "Log out") ends the session at the issuer too, and ending the
        session (the issuer's own logout) revokes the token. A family bound to a DPoP key
        (`dpop_jkt`) is refreshed only with a proof by that key (RFC 9449 section 5).
        """
        token = new_secret()
        now = int(time.time())
        with self.database.transaction() as conn:
            self._insert(
                conn, token, grant, family_id or uuid.uuid4().hex, now, now + self.family_ttl, session_hash, dpop_jkt
            )
        return token

    def _insert(
        self,
        conn: Connection,
        token: str,
        grant: Grant,
        family_id: str,
        now: int,
        family_expires_at: int,
        session_hash: str | None,
        dpop_jkt: str | None = None,
    ) -> None:
        conn.execute(
            _INSERT,
            {
                "token_hash": secret_hash(token),
                "family_id": family_id,
                "user_id": grant.user_id,
                "client_id": grant.client_id,
                "scope": grant.scope,
                "issued_at": now,
                "expires_at": min(now + self.ttl, family_expires_at),
                "family_expires_at": family_expires_at,
                "session_hash": session_hash,
                "audience": grant.audience,
                "dpop_jkt": dpop_jkt,
                "amr": assurance.encode(grant.login.amr) if grant.login else None,
                "auth_time": grant.login.auth_time if grant.login else None,
            },
        )

    def rotate(
        self,
        token: str,
        client_id: str,
        narrow: Callable[[Grant], Grant] = lambda grant: grant,
        *,
        dpop_jkt: str | None = None,
    ) -> tuple[Grant, str]:
        """Spend a refresh token and return its grant, as `narrow` leaves it, with the successor token.

        `narrow` runs inside the transaction: what it raises leaves the token unspent. The
        successor holds the narrowed grant, so a grant narrowed once stays narrowed (RFC 6749
        section 6: never more than originally granted). A token bound to a DPoP key needs
        `dpop_jkt`, the key the request proved, to be that key; its successor is bound to it too.
        """
        now = int(time.time())
        successor = derived_secret(self.successor_key, self.SUCCESSOR, token)
        with self.database.transaction() as conn:
            row = conn.execute(_PRESENTED, {"token_hash": secret_hash(token)}).first()
            if row is None:
                raise RefreshError("the refresh token is not known")
            if row.client_id != client_id:
                raise RefreshError("the refresh token was issued to another client")
            if row.dpop_jkt is not None and (dpop_jkt is None or not hmac.compare_digest(row.dpop_jkt, dpop_jkt)):
                # Before any reuse detection: a copy without the key cannot revoke the family either.
                raise RefreshKeyMismatch("the refresh token is bound to a DPoP key this request did not prove")
            if row.revoked_at is not None:
                raise RefreshError("the refresh token has been revoked")
            if row.family_expires_at <= now:
                raise RefreshError("the refresh token's session has reached its maximum lifetime")
            login = (
                None if row.amr is None or row.auth_time is None else Login(assurance.decode(row.amr), row.auth_time)
            )
            grant = Grant(
                row.user_id,
                row.username,
                row.client_id,
                row.scope,
                row.audience,
                row.session_hash,
                login,
                user_scopes=parse_scope(row.user_scope),
            )
            if row.used_at is not None:
                # Whole seconds: a grace of 0 must mean none, not "the rest of the second of first use".
                if self.reuse_grace > 0 and now - row.used_at <= self.reuse_grace:
                    for candidate in self._successors(token, successor):
                        if self._unspent(conn, candidate, now):
                            log.info(
                                "refresh token re-presented within the reuse grace",
                                extra={"fields": {"sub": row.user_id}},
                            )
                            return narrow(grant), candidate
                revoked = self._revoke_family(conn, row.family_id, now)
                self.database.keep()  # the request fails; the revocation stands
            else:
                if row.expires_at <= now:
                    raise RefreshError("the refresh token has expired")
                narrowed = narrow(grant)
                conn.execute(_SPEND, {"spent_hash": row.token_hash, "spent_at": now})
                self._insert(
                    conn, successor, narrowed, row.family_id, now, row.family_expires_at, row.session_hash, row.dpop_jkt
                )
                return narrowed, successor
        # Raised once the revocation has committed.
        metrics.REFRESH_REUSE.inc()
        audit.emit(
            "refresh.reuse_detected",
            subject=row.username,
            subject_id=row.user_id,
            client=client_id,
            family=row.family_id,
            tokens=revoked,
        )
        log.warning(
            "refresh token reused; family revoked", extra={"fields": {"sub": row.user_id, "family": row.family_id}}
        )
        raise RefreshReused("the refresh token was already used; its session has been revoked")

    def _successors(self, token: str, successor: str) -> list[str]:
        """Return the successors `token` may have had: under the current key, then the previous ones."""
        return [successor, *(derived_secret(key, self.SUCCESSOR, token) for key in self.previous_successor_keys)]

    def _unspent(self, conn: Connection, token: str, now: int) -> bool:
        """Return whether a token is known, unused, unrevoked and unexpired.

        The grace hands out a successor only while nobody has used it: once the rightful
        client has moved on, the old token leads nowhere, and presenting it is reuse.
        """
        query = select(refresh_tokens.c.token_hash).where(
            refresh_tokens.c.token_hash == secret_hash(token),
            refresh_tokens.c.used_at.is_(None),
            refresh_tokens.c.revoked_at.is_(None),
            refresh_tokens.c.expires_at > now,
        )
        return conn.execute(query).first() is not None

    def revoke(self, token: str, client_id: str) -> str | None:
        """Revoke the family of a refresh token issued to `client_id`.

        Return its login session's hash ("" for none); None when the token is unknown or was
        issued to another client, which then keeps it (RFC 7009 section 2.1).
        """
        with self.database.transaction() as conn:
            row = conn.execute(
                select(refresh_tokens, users.c.username)
                .join(users, users.c.id == refresh_tokens.c.user_id)
                .where(refresh_tokens.c.token_hash == secret_hash(token))
            ).first()
            if row is None:
                return None
            if row.client_id != client_id:
                log.info(
                    "revocation of another client's token ignored",
                    extra={"fields": {"client_id": client_id, "family": row.family_id}},
                )
                return None
            revoked = self._revoke_family(conn, row.family_id, int(time.time()))
        audit.emit(
            "token.revoked",
            subject=row.username,
            subject_id=row.user_id,
            client=row.client_id,
            family=row.family_id,
            tokens=revoked,
        )
        return row.session_hash or ""

    def revoke_family(self, family_id: str) -> int:
        """Revoke every token of a family (a leaked authorization code's); return how many were live."""
        with self.database.transaction() as conn:
            return self._revoke_family(conn, family_id, int(time.time()))

    def revoke_session(self, session_hash: str) -> int:
        """Revoke every token born of a login session (the issuer's logout); return how many."""
        with self.database.transaction() as conn:
            revoked = stamp(
                conn, refresh_tokens.c.revoked_at, refresh_tokens.c.session_hash == session_hash, now=int(time.time())
            )
            revoke_grants(conn, of_families(refresh_tokens.c.session_hash == session_hash))
        if revoked:
            audit.emit("token.revoked", tokens=revoked)
        return revoked

    @staticmethod
    def revoke_client(database: Database, client_id: str) -> int:
        """Revoke every token issued to a client (`clients delete`); return how many were live.

        Static: the CLI has no successor keys, and needs none to revoke.
        """
        with database.transaction() as conn:
            revoked = stamp(
                conn, refresh_tokens.c.revoked_at, refresh_tokens.c.client_id == client_id, now=int(time.time())
            )
            hold_new_grants(conn)  # each grant being made then finds its client gone, or is read below
            revoke_grants(conn, status_grants.c.client_id == client_id)  # its own tokens' too (client_credentials)
            return revoked

    @staticmethod
    def revoke_api(conn: Connection, audience: str) -> int:
        """Revoke every token issued for an API, in the open transaction of its deletion; return how many were live.

        Its refresh families end, and its access tokens' status is set: an API registered again
        under the name (or the default API, put back at the next start) opens to none of them.
        """
        revoked = stamp(conn, refresh_tokens.c.revoked_at, refresh_tokens.c.audience == audience, now=int(time.time()))
        hold_new_grants(conn)  # a grant made for it meanwhile finds it gone, or is read below
        revoke_grants(conn, status_grants.c.audience == audience)
        return revoked

    def move_session(self, old_hash: str, new_hash: str) -> int:
        """Hand the tokens born of one login session to the session that replaced it; return how many."""
        with self.database.transaction() as conn:
            moved: int = conn.execute(
                update(refresh_tokens).where(refresh_tokens.c.session_hash == old_hash).values(session_hash=new_hash)
            ).rowcount
        return moved

    @staticmethod
    def prune(database: Database, now: int, *, batch: int) -> int:
        """Delete the tokens of every family that reached its lifetime before `now`; return how many.

        Only whole families go: a live family's used tokens stay, so that their reuse is
        still caught. Static: pruning needs no keys (`python -m issuer db prune` has none).
        """
        return delete_in_batches(
            database, refresh_tokens.c.token_hash, refresh_tokens.c.family_expires_at < now, batch=batch
        )

    def _revoke_family(self, conn: Connection, family_id: str, now: int) -> int:
        revoked = stamp(conn, refresh_tokens.c.revoked_at, refresh_tokens.c.family_id == family_id, now=now)
        revoke_grants(conn, status_grants.c.grant_id == family_id)  # its access tokens too
        return revoked
