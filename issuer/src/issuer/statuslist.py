"""Token Status Lists (draft-ietf-oauth-status-list-21): revocation that reaches the APIs within seconds.

Every access token carries a `status` claim naming a list and an index in it:
`{"status_list": {"idx": 17, "uri": "{issuer}/statuslists/{id}"}}`. The issuer serves each
list as a signed JWT (`typ` `statuslist+jwt`) whose `status_list.lst` is the list's bits,
DEFLATE-compressed (zlib) and base64url-encoded: index i is bit i % 8 of byte i // 8, least
significant bit first; 1 means INVALID. An API that refetches the list every `ttl` seconds
refuses a revoked token that long after its revocation.

Index allocation keeps lists small: one index per grant. Every access token of a refresh
family (a password login, or a browser login's authorization code) shares its family's index
while its list is open; a client-credentials token gets one of its own. Indexes are handed
out from the newest list until it is full (`capacity`) or older than its `validity`; then a
new list is opened. Tokens are issued from a list only while it is open, so a list lives
(`expires_at`, what the aggregation names and issuer.prune deletes after) until it closes
plus an access token's lifetime: with a `validity` of at least an access token's lifetime,
live tokens name at most two lists, the open one and the one before it, and an API that
re-reads one list a second re-reads each about every two seconds (issue 22).

A family's next token after its list has closed moves it to a new index in the open list;
its previous (list, index) is kept beside the new one (`previous_*` in `status_grants`) until
the access tokens issued under it have expired, and whatever ends the family sets both. A
family whose previous slot still lives when its list closes (a list that closed within an
access token's lifetime of the move) stays on its closed list, which then lives that much
longer: a family never has more than two live slots.

On SQLite, allocation is one UPDATE ... RETURNING on the list's row in the grant's transaction
(SQLite has one writer at a time anyway). On PostgreSQL, where grants run concurrently, a
worker takes a block of `BLOCK` indexes in a short transaction of its own and hands them out
itself: one grant in `BLOCK` touches the list's row, instead of every grant holding it locked
until it commits (after its token is signed), which queued every grant of every replica on
that one row. A block is committed before any index of it is used, so a grant that rolls back
loses its index but never hands it to another; a block is used at most `BLOCK_HOLD` seconds,
and never past its list's `open_until`, so a list that fills up stays open `BLOCK_HOLD`
seconds more, for the blocks still out. Setting bits rewrites the list's row under its row
lock (PostgreSQL) or the write lock (SQLite's BEGIN IMMEDIATE).

Whatever ends a grant sets its bit in the same transaction: the revocation of its refresh
token or of one of its access tokens, reuse of a refresh token or of a code, a logout, the
deletion of its user or client, and a change of the client's, the user's or the API's
registration that no longer permits the grant's scopes or API (issuer.narrowing).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import threading
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from sqlalchemy import Connection, and_, bindparam, case, delete, exists, insert, or_, select, text, update
from sqlalchemy.sql.expression import ColumnElement

from issuer import jose
from issuer.db import Database, apis, clients, delete_in_batches, refresh_tokens, status_grants, status_lists
from issuer.keys import KeyStore
from issuer.opaque import secret_hash
from jwt_verifier.jose import b64url_encode
from shared.errors import error_response

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/statuslist+jwt"
LIST_ID = re.compile(r"[0-9a-f]{32}")
# A signed list is valid this long (`exp` - `iat`) and signed again after half of it, or at once
# when its bits change. `iat` is a whole multiple of RESIGN_AFTER (or the time of the last change),
# so that workers and replicas sign the same bytes: one ETag across the fleet.
TOKEN_LIFETIME = 600
RESIGN_AFTER = TOKEN_LIFETIME // 2
MAX_CACHED = 1024


def encode(bits: bytes) -> str:
    """Return the `lst` of a list's bytes: DEFLATE with the zlib format (RFC 1950), base64url without padding."""
    return b64url_encode(zlib.compress(bits, 9))


def decode(lst: str) -> bytes:
    """Return the bytes of a list's `lst` (the inverse of `encode`)."""
    padded = lst + "=" * (-len(lst) % 4)
    return zlib.decompress(base64.urlsafe_b64decode(padded))


def set_bit(buffer: bytearray, index: int) -> bool:
    """Set index `index` to INVALID (1); return whether it was VALID before."""
    mask = 1 << (index % 8)
    if buffer[index // 8] & mask:
        return False
    buffer[index // 8] |= mask
    return True


def bit(bits: bytes, index: int) -> int:
    """Return the status of index `index`: 0 VALID, 1 INVALID."""
    return (bits[index // 8] >> (index % 8)) & 1


# The statements of every grant, built once: a statement object built once keeps its cache key,
# and SQLAlchemy finds its compiled form without building and walking it again per request.
# The slot of the family a refresh token belongs to, and whether its list is still open.
_FAMILY_SLOT = (
    select(status_grants.c.list_id, status_grants.c.idx, status_grants.c.previous_expires_at, status_lists.c.open_until)
    .join(refresh_tokens, refresh_tokens.c.family_id == status_grants.c.grant_id)
    .outerjoin(status_lists, status_lists.c.id == status_grants.c.list_id)
    .where(refresh_tokens.c.token_hash == bindparam("token_hash"))
)
# The next index of the newest list open at `now` that has one left.
_NEWEST_OPEN = (
    select(status_lists.c.id)
    .where(status_lists.c.open_until > bindparam("now"), status_lists.c.allocated < status_lists.c.capacity)
    .order_by(status_lists.c.created_at.desc(), status_lists.c.id)
    .limit(1)
    .scalar_subquery()
)
_TAKE_INDEX = (
    update(status_lists)
    .where(status_lists.c.id == _NEWEST_OPEN, status_lists.c.allocated < status_lists.c.capacity)
    .values(allocated=status_lists.c.allocated + 1)
    .returning(status_lists.c.id, status_lists.c.allocated)
)
# A grant's row, written only while the client and the API it was made by are at the revision
# it read (`Registered`: a worker reads them through a cache, issuer.cache), so that a grant
# made from an older copy of a registration just changed writes nothing and issues nothing. A
# change that ends grants (`clients delete`, a narrowing `clients add --replace` or `apis add
# --replace`) bumps the revision, then waits for the grants writing rows and holds new ones
# until it commits (`hold_new_grants`) before it reads the grants it ends: a grant that wrote
# its row first is among them; one that writes it later waited for that lock, and on
# PostgreSQL a statement's snapshot is taken once its locks are held, so it sees the new
# revision. SQLite's one writer orders the two anyway.
_GRANT = {name: bindparam(name, type_=status_grants.c[name].type) for name in (
    "grant_id", "list_id", "idx", "client_id", "user_id", "audience", "scope", "expires_at",
)}  # fmt: skip
_INSERT_GRANT = (
    insert(status_grants)
    .from_select(
        list(_GRANT),
        select(*_GRANT.values()).where(
            exists().where(
                clients.c.client_id == _GRANT["client_id"], clients.c.revision == bindparam("client_revision")
            ),
            exists().where(apis.c.audience == _GRANT["audience"], apis.c.revision == bindparam("api_revision")),
        ),
    )
    .returning(status_grants.c.grant_id)
)  # what was written (the row count of an INSERT ... SELECT read -1 on PostgreSQL)
# The grant id of a token of its own (a client's, client_credentials): the prefix, then random.
_OWN_TOKEN = "token:"
_CLIENT_KNOWN = select(clients.c.client_id).where(clients.c.client_id == bindparam("client_id"))


@dataclass(frozen=True)
class Registered:
    """The revisions of the client and the API a grant was made by, as its request read them."""

    client: int
    api: int


def registered(database: Database, client_id: str, audience: str) -> Registered:
    """Return the current revisions of a client and an API: what a grant made now would read (the bench, tests)."""
    with database.reading() as conn:
        client = conn.execute(select(clients.c.revision).where(clients.c.client_id == client_id)).scalar_one()
        api = conn.execute(select(apis.c.revision).where(apis.c.audience == audience)).scalar_one()
    return Registered(client, api)


class RegistrationChanged(Exception):
    """The grant's client or API changed while the grant was made: no token (the endpoint answers 503, retry)."""


class ClientGone(RegistrationChanged):
    """The grant's client was deleted while the grant was made: no token (the endpoint answers invalid_client)."""


# A block's list: the newest open one with an index left, locked until the block is taken.
# FOR NO KEY UPDATE, as an UPDATE of its counters locks it: the grants inserting rows that refer
# to the list hold a KEY SHARE lock on it until they commit, which FOR UPDATE would wait for.
_OPEN_FOR_BLOCK = (
    select(status_lists.c.id, status_lists.c.allocated, status_lists.c.capacity, status_lists.c.open_until)
    .where(status_lists.c.open_until > bindparam("now"), status_lists.c.allocated < status_lists.c.capacity)
    .order_by(status_lists.c.created_at.desc(), status_lists.c.id)
    .limit(1)
    .with_for_update(key_share=True)
)

_LOCK_TIMEOUT = text("SET LOCAL lock_timeout = '5s'")
# Taken by a worker about to open a list, until its block's transaction ends (PostgreSQL's
# advisory locks: a key of this module's own, 0x7374617475736c69, "statusli" in ASCII).
_ONE_OPENER = text("SELECT pg_advisory_xact_lock(8319381564474748009)")

# On PostgreSQL a worker takes this many indexes of the open list at once (see the module's doc).
BLOCK = 64
# ... and hands them out for at most this many seconds (a full list stays open that much longer).
BLOCK_HOLD = 10


@dataclass
class _Block:
    """Indexes `next` to `end` (excluded) of a list, this worker's to hand out until `until`."""

    list_id: str
    next: int
    end: int
    until: int
    pid: int = field(default_factory=os.getpid)  # a process forked since takes a block of its own


@dataclass(frozen=True)
class Slot:
    """A list and an index in it: what a `status` claim names."""

    list_id: str
    idx: int

    def claim(self, issuer: str) -> dict[str, Any]:
        """Return the `status` claim of a token carrying this slot."""
        return {"status_list": {"idx": self.idx, "uri": list_uri(issuer, self.list_id)}}


def list_uri(issuer: str, list_id: str) -> str:
    """Return the URI of a list: its `sub`, and the `uri` tokens refer to it by."""
    return f"{issuer}/statuslists/{list_id}"


@dataclass(frozen=True)
class SignedList:
    """A list token as served, with what it was signed from."""

    revision: int
    iat: int
    kid: str
    token: str
    etag: str


@dataclass
class StatusLists:
    """Allocate indexes, set bits, and sign lists (owner of `status_lists` and `status_grants`)."""

    database: Database
    keys: KeyStore
    issuer: str
    capacity: int
    validity: int
    ttl: int
    access_token_ttl: int
    enabled: bool = True  # ISSUER_STATUS_LISTS: off, tokens name no list and none is served
    _signed: dict[str, SignedList] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # This worker's block of indexes (PostgreSQL), taken and handed out under its own lock.
    _block: _Block | None = field(default=None, init=False, repr=False)
    _block_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    # -- allocation -----------------------------------------------------------------------------

    def for_family(
        self, refresh_token: str, *, client_id: str, user_id: str, audience: str, scope: str, registered: Registered
    ) -> Slot:
        """Return the slot of the refresh family `refresh_token` belongs to, allocating it at the family's first token.

        A family revoked meanwhile gets its slot set INVALID at once: the revocation found no
        slot to set. The family's rows are locked first, as a revocation locks them.
        """
        token_hash = secret_hash(refresh_token)
        known = {"token_hash": token_hash}
        now = int(time.time())
        with self.database.reading() as conn:
            row = conn.execute(_FAMILY_SLOT, known).first()
        if row is not None and row.open_until is not None and row.open_until > now:
            return Slot(row.list_id, row.idx)
        with self.database.transaction() as conn:
            family = conn.execute(
                select(refresh_tokens.c.family_id, refresh_tokens.c.family_expires_at).where(
                    refresh_tokens.c.token_hash == token_hash
                )
            ).first()
            if family is None:  # deleted since it was issued (its user or client deleted): born INVALID
                slot = self._allocate(conn)
                set_bits(conn, [slot], now)
                return slot
            revoked = conn.execute(
                select(refresh_tokens.c.revoked_at)
                .where(refresh_tokens.c.family_id == family.family_id)
                .with_for_update()
            ).all()
            row = conn.execute(_FAMILY_SLOT, known).first()
            if row is not None and row.open_until is not None and row.open_until > now:
                return Slot(row.list_id, row.idx)
            if row is not None:
                return self._move(
                    conn, family.family_id, row, now, revoked=any(r.revoked_at is not None for r in revoked)
                )
            expires_at = family.family_expires_at + self.access_token_ttl
            slot = self._allocate(conn)
            _insert_grant(
                conn,
                registered,
                grant_id=family.family_id,
                list_id=slot.list_id,
                idx=slot.idx,
                client_id=client_id,
                user_id=user_id or None,
                audience=audience,
                scope=scope,
                expires_at=expires_at,
            )
            if any(r.revoked_at is not None for r in revoked):
                set_bits(conn, [slot], now)
        return slot

    def _move(self, conn: Connection, family_id: str, row: Any, now: int, *, revoked: bool) -> Slot:
        """Give a family whose list has closed (or been pruned) an index in the open list, keeping the old one as previous.

        Every token issued under the old slot was issued before now: it expires within an
        access token's lifetime, and the previous slot is kept that long.
        """
        old = Slot(row.list_id, row.idx)
        if row.open_until is not None and row.previous_expires_at is not None and row.previous_expires_at > now:
            # its previous slot still lives: it stays on its closed list, which lives as long as this token
            until = now + self.access_token_ttl
            conn.execute(
                update(status_lists)
                .where(status_lists.c.id == old.list_id)
                .values(expires_at=case((status_lists.c.expires_at < until, until), else_=status_lists.c.expires_at))
            )
            return old
        slot = self._allocate(conn)
        live = row.open_until is not None  # a pruned list: every token naming it has expired
        moved = conn.execute(
            update(status_grants)
            .where(status_grants.c.grant_id == family_id)
            .values(
                list_id=slot.list_id,
                idx=slot.idx,
                previous_list_id=old.list_id if live else None,
                previous_idx=old.idx if live else None,
                previous_expires_at=now + self.access_token_ttl if live else None,
            )
        ).rowcount
        if not moved:  # ended since it was read (a narrowing forgets the grants it ends): its token would escape
            raise RegistrationChanged(family_id)
        if revoked:
            set_bits(conn, [slot, old] if live else [slot], now)
        return slot

    def for_token(self, *, client_id: str, audience: str, scope: str, registered: Registered) -> Slot:
        """Allocate the slot of one access token of its own (a client's own token, client_credentials)."""
        expires_at = int(time.time()) + self.access_token_ttl
        with self.database.transaction() as conn:
            slot = self._allocate(conn)
            _insert_grant(
                conn,
                registered,
                grant_id=f"{_OWN_TOKEN}{uuid.uuid4().hex}",
                list_id=slot.list_id,
                idx=slot.idx,
                client_id=client_id,
                user_id=None,
                audience=audience,
                scope=scope,
                expires_at=expires_at,
            )
        return slot

    def _allocate(self, conn: Connection) -> Slot:
        """Take an index: in the grant's transaction `conn` on SQLite, from this worker's block on PostgreSQL."""
        if self.database.is_sqlite:
            return self._take_one(conn)
        with self._block_lock:
            now = int(time.time())
            block = self._block
            if block is None or block.next >= block.end or now >= block.until or block.pid != os.getpid():
                block = self._block = self._take_block(now)
            slot = Slot(block.list_id, block.next)
            block.next += 1
        return slot

    def _take_one(self, conn: Connection) -> Slot:
        """Take the next index of the newest open list, or open a new list living until it closes plus a token's lifetime."""
        now = int(time.time())
        taken = conn.execute(_TAKE_INDEX, {"now": now}).first()
        if taken is not None:
            return Slot(taken.id, taken.allocated - 1)
        self._close_full_lists(conn, now, hold=0)
        return Slot(self._open_list(conn, now, allocated=1), 0)

    def _take_block(self, now: int) -> _Block:
        """Take up to `BLOCK` indexes of the newest open list (or of a new one) in a transaction of its own."""
        with self.database.own_transaction() as conn:
            # The list's row is only ever held briefly (a block taken, bits set): waiting longer
            # than this is a bug to fail on (a 503), not a thread to hang.
            conn.execute(_LOCK_TIMEOUT)
            row = conn.execute(_OPEN_FOR_BLOCK, {"now": now}).first()
            if row is None:
                # No list to take from: one worker opens the next, and the others, having waited
                # for it here, take from that one (each opening its own, live tokens named three).
                conn.execute(_ONE_OPENER)
                row = conn.execute(_OPEN_FOR_BLOCK, {"now": now}).first()
            if row is not None:
                end = min(row.allocated + BLOCK, row.capacity)
                conn.execute(update(status_lists).where(status_lists.c.id == row.id).values(allocated=end))
                return _Block(row.id, row.allocated, end, min(row.open_until, now + BLOCK_HOLD))
            self._close_full_lists(conn, now, hold=BLOCK_HOLD)
            end = min(BLOCK, self.capacity)
            list_id = self._open_list(conn, now, allocated=end)
        return _Block(list_id, 0, end, min(now + self.validity, now + BLOCK_HOLD))

    def _close_full_lists(self, conn: Connection, now: int, *, hold: int) -> None:
        """Close the open lists that are full, `hold` seconds from now (the blocks still out of them).

        A list that filled up closes then, not at the end of its validity: its families move at
        their next token, and it lives only as long as the tokens issued from it, so a client
        minting tokens fast cannot keep many lists live (each a verifier must re-read).
        """
        conn.execute(
            update(status_lists)
            .where(status_lists.c.open_until > now + hold, status_lists.c.allocated >= status_lists.c.capacity)
            .values(open_until=now + hold, expires_at=now + hold + self.access_token_ttl)
        )

    def _open_list(self, conn: Connection, now: int, *, allocated: int) -> str:
        """Open a new list with its first `allocated` indexes taken; return its id."""
        list_id = uuid.uuid4().hex
        conn.execute(
            insert(status_lists).values(
                id=list_id,
                created_at=now,
                open_until=now + self.validity,
                expires_at=now + self.validity + self.access_token_ttl,
                capacity=self.capacity,
                allocated=allocated,
                bits=bytes(self.capacity // 8),
                revision=0,
                changed_at=now,
            )
        )
        return list_id

    # -- revocation -----------------------------------------------------------------------------

    def revoke_slot(self, slot: Slot) -> str | None:
        """Set an access token's slot INVALID; return its refresh family's id when it has one (to revoke it too)."""
        with self.database.transaction() as conn:
            grant_id = conn.execute(
                select(status_grants.c.grant_id).where(
                    or_(
                        and_(status_grants.c.list_id == slot.list_id, status_grants.c.idx == slot.idx),
                        and_(
                            status_grants.c.previous_list_id == slot.list_id, status_grants.c.previous_idx == slot.idx
                        ),
                    )
                )
            ).scalar()
            set_bits(conn, [slot], int(time.time()))
        if grant_id is None or grant_id.startswith("token:"):
            return None
        return str(grant_id)

    def revoked(self, claims: dict[str, Any]) -> bool:
        """Return whether a verified token's `status` names an INVALID index of one of this issuer's lists (read fresh)."""
        slot = _slot(self.issuer, claims)
        if slot is None:
            return False
        with self.database.reading() as conn:
            bits = conn.execute(select(status_lists.c.bits).where(status_lists.c.id == slot.list_id)).scalar()
        return bits is not None and 0 <= slot.idx < len(bits) * 8 and bit(bits, slot.idx) == 1

    # -- serving --------------------------------------------------------------------------------

    def current(self) -> list[str]:
        """Return the URIs of every list a live token may refer to (Status List Aggregation)."""
        query = (
            select(status_lists.c.id)
            .where(status_lists.c.expires_at > int(time.time()))
            .order_by(status_lists.c.created_at, status_lists.c.id)
        )
        with self.database.reading() as conn:
            return [list_uri(self.issuer, list_id) for list_id in conn.execute(query).scalars()]

    def signed(self, list_id: str) -> SignedList | None:
        """Return the signed list `list_id`, signing it only when its bits, the key or the time call for it; None if unknown."""
        if not LIST_ID.fullmatch(list_id):
            return None  # never sent to the database
        now = int(time.time())
        head = select(status_lists.c.revision, status_lists.c.changed_at).where(
            status_lists.c.id == list_id, status_lists.c.expires_at > now
        )
        with self.database.reading() as conn:
            row = conn.execute(head).first()
        if row is None:
            return None
        key = self.keys.signing_key()  # the active key: the JWKS carries it
        iat = max(now - now % RESIGN_AFTER, row.changed_at)
        cached = self._signed.get(list_id)
        if cached is not None and (cached.revision, cached.iat, cached.kid) == (row.revision, iat, key.kid):
            return cached
        with self.database.reading() as conn:
            full = conn.execute(
                select(status_lists.c.bits, status_lists.c.revision, status_lists.c.changed_at).where(
                    status_lists.c.id == list_id
                )
            ).first()
        if full is None:
            return None
        iat = max(now - now % RESIGN_AFTER, full.changed_at)
        claims = {
            "sub": list_uri(self.issuer, list_id),
            "iss": self.issuer,
            "iat": iat,
            "exp": iat + TOKEN_LIFETIME,
            "ttl": self.ttl,
            "status_list": {"bits": 1, "lst": encode(bytes(full.bits))},
        }
        token = jose.sign(key, jose.STATUS_LIST, claims)
        signed = SignedList(full.revision, iat, key.kid, token, f'"{hashlib.sha256(token.encode()).hexdigest()[:32]}"')
        with self._lock:
            if len(self._signed) >= MAX_CACHED:
                self._signed.clear()  # bounded: the lists still asked for are signed again once
            self._signed[list_id] = signed
        return signed

    # -- pruning --------------------------------------------------------------------------------

    @staticmethod
    def prune(database: Database, now: int, *, batch: int) -> int:
        """Delete the grants whose tokens have all expired, then the lists no token refers to; return the lists deleted."""
        delete_in_batches(database, status_grants.c.grant_id, status_grants.c.expires_at < now, batch=batch)
        return delete_in_batches(database, status_lists.c.id, status_lists.c.expires_at < now, batch=batch)


def _insert_grant(conn: Connection, registered: Registered, **row: Any) -> None:
    """Write a grant's row if its client and API are still at the revisions it read, else raise (see `_INSERT_GRANT`)."""
    params = {**row, "client_revision": registered.client, "api_revision": registered.api}
    if conn.execute(_INSERT_GRANT, params).first() is not None:
        return
    if conn.execute(_CLIENT_KNOWN, {"client_id": row["client_id"]}).first() is None:
        raise ClientGone(row["client_id"])
    raise RegistrationChanged(row["client_id"])


def hold_new_grants(conn: Connection) -> None:
    """Wait for the grants writing their rows now, and hold new ones until the open transaction ends.

    For a change that ends grants, after it changed the registration and before it reads the
    grants (see `_INSERT_GRANT`). SQLite's one writer needs nothing.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE status_grants IN SHARE MODE")


def set_bits(conn: Connection, slots: Iterable[Slot], now: int) -> int:
    """Set the slots INVALID in the open transaction; return how many changed."""
    by_list: dict[str, list[int]] = defaultdict(list)
    for slot in slots:
        by_list[slot.list_id].append(slot.idx)
    changed = 0
    for list_id in sorted(by_list):  # one order for every writer: no deadlock between two revocations
        row = conn.execute(select(status_lists.c.bits).where(status_lists.c.id == list_id).with_for_update()).first()
        if row is None:
            continue  # pruned: every token referring to it has expired
        buffer = bytearray(row.bits)
        flipped = sum(set_bit(buffer, idx) for idx in by_list[list_id] if 0 <= idx < len(buffer) * 8)
        if flipped:
            conn.execute(
                update(status_lists)
                .where(status_lists.c.id == list_id)
                .values(bits=bytes(buffer), revision=status_lists.c.revision + 1, changed_at=now)
            )
            changed += flipped
    return changed


_GRANT_SLOTS = (
    status_grants.c.grant_id,
    status_grants.c.list_id,
    status_grants.c.idx,
    status_grants.c.previous_list_id,
    status_grants.c.previous_idx,
    status_grants.c.previous_expires_at,
)


def revoke_grants(conn: Connection, *where: ColumnElement[bool], forget: bool = False) -> int:
    """Set INVALID the slots of the grants matching `where` (a moved family's previous one too while its tokens live).

    In the open transaction; return how many changed.

    With `forget`, the grants lose their slot too: the next token of such a grant (a family
    refreshed after its client was narrowed) gets a new, valid one.
    """
    rows = conn.execute(select(*_GRANT_SLOTS).where(*where)).all()
    changed = set_bits(conn, _live_slots(rows, int(time.time())), int(time.time()))
    if forget and rows:
        conn.execute(delete(status_grants).where(*where))
    return changed


def end_unpermitted(conn: Connection, where: ColumnElement[bool], permitted: Callable[[str, str], bool]) -> int:
    """End the tokens of the grants matching `where` whose API or scope (`permitted(audience, scope)`) is no longer permitted.

    Their slots are set INVALID, each list's bits rewritten once however many grants end, and
    the refresh families among them forget their slot: one the change still lets refresh,
    narrowed, gets a new slot at its next token (a client's own tokens have no next token, and
    keep their rows until they expire). Return how many slots changed.
    """
    rows = conn.execute(select(*_GRANT_SLOTS, status_grants.c.audience, status_grants.c.scope).where(where)).all()
    ended = [row for row in rows if not permitted(row.audience, row.scope)]
    now = int(time.time())
    changed = set_bits(conn, _live_slots(ended, now), now)
    families = [row.grant_id for row in ended if not row.grant_id.startswith(_OWN_TOKEN)]
    for start in range(0, len(families), 500):  # bounded statements, however many families end
        conn.execute(delete(status_grants).where(status_grants.c.grant_id.in_(families[start : start + 500])))
    return changed


def _live_slots(rows: Iterable[Any], now: int) -> list[Slot]:
    """Return the slots of grant rows: each one's current slot, and its previous one while tokens issued under it live."""
    slots = []
    for row in rows:
        slots.append(Slot(row.list_id, row.idx))
        if row.previous_list_id is not None and row.previous_expires_at is not None and row.previous_expires_at > now:
            slots.append(Slot(row.previous_list_id, row.previous_idx))
    return slots


def of_families(*where: ColumnElement[bool]) -> ColumnElement[bool]:
    """Return the condition on `status_grants` that selects the refresh families of the refresh tokens matching `where`."""
    return status_grants.c.grant_id.in_(select(refresh_tokens.c.family_id).where(*where))


bp = Blueprint("statuslist", __name__)
EXTENSION = "issuer.status_lists"


def init_app(app: Flask, lists: StatusLists) -> None:
    """Serve the lists (`/statuslists/<id>`) and their aggregation (`/statuslists`), unless they are off."""
    app.extensions[EXTENSION] = lists
    if lists.enabled:
        app.register_blueprint(bp)


def current() -> StatusLists:
    """Return the status lists of the app handling this request."""
    return cast(StatusLists, current_app.extensions[EXTENSION])


def slot_for(
    grant_client_id: str,
    user_id: str,
    audience: str,
    scope: str,
    refresh_token: str | None,
    registered: Registered,
) -> Slot | None:
    """Return the slot of a new access token: its refresh family's, or a slot of its own without one; None when off.

    `registered` says what the grant read of its client and API (a new grant row checks them).
    """
    lists = current()
    if not lists.enabled:
        return None
    if refresh_token is None:
        return lists.for_token(client_id=grant_client_id, audience=audience, scope=scope, registered=registered)
    return lists.for_family(
        refresh_token,
        client_id=grant_client_id,
        user_id=user_id,
        audience=audience,
        scope=scope,
        registered=registered,
    )


@bp.get("/statuslists/<list_id>")
def status_list(list_id: str) -> Response:
    """Serve a signed list; 304 when the caller's copy (`If-None-Match`) is this one."""
    lists = current()
    signed = lists.signed(list_id)
    if signed is None:
        return error_response(404, "not_found", "no such status list (unknown, or every token on it has expired)")
    headers = {"ETag": signed.etag, "Cache-Control": f"public, max-age={lists.ttl}"}
    if _matches(request.headers.get("If-None-Match", ""), signed.etag):
        return Response(status=304, headers=headers)
    return Response(signed.token, status=200, mimetype=MEDIA_TYPE, headers=headers)


@bp.get("/statuslists")
def aggregation() -> Response:
    """List the URIs of every list a live token may refer to (draft-ietf-oauth-status-list-21 Status List Aggregation)."""
    lists = current()
    response = jsonify(status_lists=lists.current())
    response.headers["Cache-Control"] = f"public, max-age={lists.ttl}"
    return response


def _matches(if_none_match: str, etag: str) -> bool:
    """Return whether an If-None-Match header names `etag` (RFC 9110 section 13.1.2: weak comparison, or `*`)."""
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def revoke_unpermitted(conn: Connection, client_id: str, permitted: Callable[[str, str], bool]) -> int:
    """End the tokens of a client's grants whose API or scope (`permitted(audience, scope)`) it may no longer have.

    After the client's registration changed, in its transaction: the grants being made wait
    for it or are read (`hold_new_grants`). Return how many slots changed.
    """
    hold_new_grants(conn)
    return end_unpermitted(conn, status_grants.c.client_id == client_id, permitted)


def access_token_slot(token: str, client_id: str) -> Slot | None:
    """Return the slot of a live access token this issuer signed for `client_id`, or None (nothing to revoke).

    RFC 7009 section 2.2: a token that is invalid, expired or another client's is answered
    like a revoked one; only the log says which (never the token).
    """
    lists = current()
    keys = current_app.extensions["issuer.published_keys"]
    try:
        claims = jose.read(token, jose.ACCESS_TOKEN, keys.get, issuer=lists.issuer, audience=None)
    except jose.JwtRefused as exc:
        log.info("revocation of an unusable access token ignored", extra={"fields": {"reason": exc.reason.value}})
        return None
    if claims.get("client_id") != client_id:
        log.info("revocation of another client's token ignored", extra={"fields": {"client_id": client_id}})
        return None
    return _slot(lists.issuer, claims)


def _slot(issuer: str, claims: dict[str, Any]) -> Slot | None:
    """Return the slot a token's `status` claim names in one of `issuer`'s lists, or None."""
    status = claims.get("status")
    reference = status.get("status_list") if isinstance(status, dict) else None
    if not isinstance(reference, dict):
        return None  # issued before status lists: it expires within an access token's lifetime
    prefix = list_uri(issuer, "")
    uri, idx = reference.get("uri"), reference.get("idx")
    if not isinstance(uri, str) or not uri.startswith(prefix) or not isinstance(idx, int) or isinstance(idx, bool):
        return None
    return Slot(uri.removeprefix(prefix), idx)
