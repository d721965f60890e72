"""Pruning: delete the codes, refresh tokens and login sessions the issuer no longer needs.

Each table's owner says what of its own can go (`AuthorizationCodes.prune`,
`RefreshTokens.prune`, `LoginSessions.prune`, ...); this module runs them together, from
`python -m issuer db prune` and from a daemon thread in each worker (`start`). Every delete
is idempotent and done in short batches, so workers and replicas pruning at once are harmless.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import asdict, dataclass

from issuer.codes import AuthorizationCodes
from issuer.credentials import Passkeys
from issuer.db import Database
from issuer.device_codes import DeviceCodes
from issuer.sessions import LoginSessions
from issuer.statuslist import StatusLists
from issuer.tokens import RefreshTokens

log = logging.getLogger(__name__)

# Rows per delete statement and transaction: the write lock is held for a moment, never minutes.
BATCH = 1000


@dataclass(frozen=True)
class Pruned:
    """How many rows of each kind one pruning deleted."""

    authorization_codes: int
    refresh_tokens: int
    login_sessions: int
    status_lists: int = 0
    device_codes: int = 0
    passkey_challenges: int = 0

    def as_dict(self) -> dict[str, int]:
        """Return the counts by table name."""
        return asdict(self)


def prune(database: Database, now: int | None = None, *, batch: int = BATCH) -> Pruned:
    """Delete what expired before `now` (default: the present) and is no longer needed; return the counts."""
    now = int(time.time()) if now is None else now
    codes = AuthorizationCodes.prune(database, now, batch=batch)
    tokens = RefreshTokens.prune(database, now, batch=batch)
    # After the tokens: a session whose last family just went can go in the same run.
    sessions = LoginSessions.prune(database, now, batch=batch)
    lists = StatusLists.prune(database, now, batch=batch)
    devices = DeviceCodes.prune(database, now, batch=batch)
    challenges = Passkeys.prune(database, now, batch=batch)
    return Pruned(codes, tokens, sessions, lists, devices, challenges)


def start(database: Database, interval: float, *, stop: threading.Event | None = None) -> threading.Thread:
    """Prune about every `interval` seconds in a daemon thread of this process, until `stop` is set.

    Each wait is drawn between half and one and a half intervals, so that workers started
    together spread out. A failure (the database down, say) is logged on one line and the
    loop goes on.
    """
    stop = stop or threading.Event()
    jitter = random.Random()  # spreads timings, guards nothing

    def run() -> None:
        while not stop.wait(interval * jitter.uniform(0.5, 1.5)):
            try:
                pruned = prune(database)
            # The outermost guard of a background loop: one line (no traceback every hour while
            # the database is down), and the next pruning tries again.
            except Exception as exc:  # noqa: BLE001
                log.error("pruning failed; trying again later", extra={"fields": {"error": type(exc).__name__}})  # noqa: TRY400
                continue
            if any(pruned.as_dict().values()):
                log.info("pruned the database", extra={"fields": pruned.as_dict()})

    thread = threading.Thread(target=run, name="issuer-prune", daemon=True)
    thread.start()
    return thread
