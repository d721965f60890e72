"""Login sessions at the issuer, kept server-side so that logging out really ends them.

The browser holds only a random session id (inside Flask's signed, HttpOnly session cookie);
the database keeps its hash with the user's stable id, the expiry and its public `sid` (the one
ID tokens carry, by which an end-session request names it). Owner of `login_sessions`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from sqlalchemy import Connection, and_, exists, insert, or_, select

from issuer import assurance
from issuer.codes import CODE_TTL
from issuer.db import Database, delete_in_batches, login_sessions, refresh_tokens, stamp, status_grants, users
from issuer.opaque import new_secret, secret_hash
from issuer.statuslist import of_families, revoke_grants
from issuer.tokens import Login
from shared import audit

SID = re.compile(r"[0-9a-f]{32}")


def public_id(session_hash: str) -> str:
    """Return the session's `sid` (OpenID Connect): derived from the stored hash, it reveals neither.

    A hash of the hash: relying parties may log it and show it, and nothing the issuer
    accepts (the session id in the cookie, or its hash) can be learnt from it.
    """
    return secret_hash(f"oidc-sid:{session_hash}")[:32]


class LoginSessions:
    """Create, look up and end login sessions."""

    def __init__(self, database: Database, ttl: int) -> None:
        self.database = database
        self.ttl = ttl

    def create(self, user_id: str, amr: Sequence[str] = assurance.PASSWORD) -> str:
        """Start a session for a user who just proved who they are by `amr` (RFC 8176); return its id."""
        methods = assurance.encode(amr)
        session_id = new_secret()
        session_hash = secret_hash(session_id)
        now = int(time.time())
        with self.database.transaction() as conn:
            conn.execute(
                insert(login_sessions).values(
                    session_hash=session_hash,
                    user_id=user_id,
                    created_at=now,
                    expires_at=now + self.ttl,
                    sid=public_id(session_hash),
                    amr=methods,
                )
            )
        return session_id

    def user_id(self, session_id: str | None) -> str | None:
        """Return the stable id of the user of a live session, or None."""
        if not session_id or not isinstance(session_id, str):
            return None
        query = select(login_sessions.c.user_id).where(
            login_sessions.c.session_hash == secret_hash(session_id),
            login_sessions.c.ended_at.is_(None),
            login_sessions.c.expires_at > int(time.time()),
        )
        with self.database.reading() as conn:
            found: str | None = conn.execute(query).scalar()
        return found

    def live_hash(self, session_id: str | None) -> str | None:
        """Return the hash of a live session known by its id (the browser's cookie), or None."""
        if self.user_id(session_id) is None:
            return None
        return secret_hash(str(session_id))

    def hash_of(self, sid: str) -> str | None:
        """Return the hash of the session whose public `sid` this is, unless it was ended; or None.

        An expired session counts: the refresh tokens it produced outlive it, and ending it revokes them.
        """
        if not SID.fullmatch(sid):
            return None  # never sent to the database
        query = select(login_sessions.c.session_hash).where(
            login_sessions.c.sid == sid, login_sessions.c.ended_at.is_(None)
        )
        with self.database.reading() as conn:
            found: str | None = conn.execute(query).scalar()
        return found

    def owner(self, session_hash: str) -> str | None:
        """Return the stable id of the user a session belongs to, live or not, or None."""
        query = select(login_sessions.c.user_id).where(login_sessions.c.session_hash == session_hash)
        with self.database.reading() as conn:
            found: str | None = conn.execute(query).scalar()
        return found

    def login(self, session_hash: str) -> Login | None:
        """Return what the login of a session proved and when (its tokens' `amr`, `acr`, `auth_time`), or None.

        None once the session has ended (a logout, a factor's removal, `users reset-factors`) or
        its row is gone (pruned, its user deleted): nothing it began may start anything new, a
        code or a device approval it gave included.
        """
        query = select(login_sessions.c.amr, login_sessions.c.created_at).where(
            login_sessions.c.session_hash == session_hash, login_sessions.c.ended_at.is_(None)
        )
        with self.database.reading() as conn:
            row = conn.execute(query).first()
        return None if row is None else Login(assurance.decode(row.amr), row.created_at)

    def end(self, session_hash: str) -> bool:
        """End a session known by its hash; return whether it was live."""
        with self.database.transaction() as conn:
            owner = conn.execute(
                select(users.c.id, users.c.username)
                .join(login_sessions, login_sessions.c.user_id == users.c.id)
                .where(login_sessions.c.session_hash == session_hash)
            ).first()
            ended = stamp(
                conn, login_sessions.c.ended_at, login_sessions.c.session_hash == session_hash, now=int(time.time())
            )
        if ended and owner is not None:
            audit.emit("session.ended", subject=owner.username, subject_id=owner.id)
        return ended > 0

    @staticmethod
    def end_all_of_user(conn: Connection, user_id: str, *, keep: str | None = None) -> tuple[int, int]:
        """End a user's login sessions and what they hold, in the open transaction; return (sessions, refresh tokens).

        After a change of the user's factors: every session but `keep` (a session's hash: the
        one that made the change) ends, every refresh family not born of `keep` is revoked
        (device and password grants' too), and the access tokens of those families lose their
        status (`issuer.statuslist`). Without `keep`, every access token of the user's grants
        does, as `users delete` ends them. Refresh tokens are stamped before the lists, as every
        revocation does.
        """
        now = int(time.time())
        sessions_where = [login_sessions.c.user_id == user_id]
        tokens_where = [refresh_tokens.c.user_id == user_id]
        if keep is not None:
            sessions_where.append(login_sessions.c.session_hash != keep)
            tokens_where.append(or_(refresh_tokens.c.session_hash.is_(None), refresh_tokens.c.session_hash != keep))
        ended = stamp(conn, login_sessions.c.ended_at, *sessions_where, now=now)
        revoked = stamp(conn, refresh_tokens.c.revoked_at, *tokens_where, now=now)
        if keep is None:
            revoke_grants(conn, status_grants.c.user_id == user_id)
        else:
            revoke_grants(conn, of_families(and_(*tokens_where)))
        return ended, revoked

    @staticmethod
    def prune(database: Database, now: int, *, batch: int) -> int:
        """Delete the sessions that expired or ended before `now` and nothing needs any more; return how many.

        A refresh token of a live family keeps its session: each refresh reads `auth_time` and
        `sid` from it for the ID token, and ending the session revokes the family. The codes a
        session issued live a minute, so it goes only once they have expired too.
        """
        before = now - CODE_TTL
        referred = exists().where(
            refresh_tokens.c.session_hash == login_sessions.c.session_hash, refresh_tokens.c.family_expires_at >= now
        )
        return delete_in_batches(
            database,
            login_sessions.c.session_hash,
            or_(login_sessions.c.expires_at < before, login_sessions.c.ended_at < before),
            ~referred,
            batch=batch,
        )
