"""Token Status List checking: refuse a revoked token within about a second, without a fetch per request.

`StatusLists` holds, per process, the lists tokens point at (`statuslist.py` reads the format)
and `StatusChecked` wraps a `TokenVerifier` so that every use of a token, a verified-token
cache hit included, looks its entry up (a dict lookup and a shift). The rules:

- Only URIs under `status_uri_prefixes` (by default the issuer's `/statuslists/`) are fetched:
  a token cannot make the API fetch anything else. An issuer's list is fetched from
  `status_base_url` (the address the API reaches the issuer by, the base of `jwks_url` by
  default); its `sub` must still be the URI the token names. At most `status_max_lists` lists are held
  (least recently used dropped first), each at most `status_max_bytes` as fetched and
  `status_max_list_bytes` inflated.
- The first sight of a list fetches it in the caller's thread, the whole answer within
  `status_timeout` (`deadline.py`); concurrent first sights share that fetch. Inside
  `loop_thread()` (the FastAPI integration's check on its event loop) it raises
  `StatusFetchNeeded` instead, and the integration verifies in a worker thread.
- One background thread per process (`status-refresh`; `close()` stops it) re-fetches every held list every `status_refresh_seconds`
  (at least 1 s; sooner if the list's `ttl` or `max-age` says so, never sooner than 1 s) with
  `If-None-Match`; a 304 keeps the list. It also reads the issuer's index of current lists,
  `GET {status_index_url}` answering `{"status_lists": [uri, ...]}`, every
  `status_index_seconds` (60 s by default). Those re-reads share a strict budget of one request
  per second (`refresh_due()`: the most overdue first, a list before the index on a tie), so a
  process never asks the issuer more often, however many lists it holds. It holds those lists before any token names them: an API keeps
  working when the issuer stops, for every list current before it did. Until the issuer first
  answers, the index is asked again after 0.1 s, doubling up to 1 s, and at once when the JWKS
  client first loads keys; `settled()` says when it has answered and its lists were fetched.
  An issuer without an index is asked again only every minute.
- A list is signed with a key from the API's JWKS client; a list that fails any check (another
  key or issuer, `sub` not its URI, malformed, bad `bits`) is never used. On first sight the
  token is refused (`StatusListInvalid`, reason `status_invalid`); on a refresh the list held
  before is kept and the failure counts as an outage.
- Outages: a held list is used for `status_stale_seconds` after its last successful refresh
  (and after its `exp`); after that, and for a list never fetched, tokens naming it get
  `StatusUnavailable` (503, reason `status_unavailable`, `Retry-After`), unless the token's
  own `iat` is within that window: the issuer vouched for it then, status as fresh as a list
  fetched at that moment (so a token minted just before the issuer stopped is served). A bit
  a list set is always refused. Never a fail-open past that window, never a 500. Each list's failure is logged once per outage, and its
  recovery once.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from jwt_verifier.cache_control import parse_cache_control
from jwt_verifier.config import VerifierConfig
from jwt_verifier.deadline import deadline, watch
from jwt_verifier.errors import (
    JwtVerifierError,
    StatusListInvalid,
    StatusUnavailable,
    TokenRevoked,
    VerificationUnavailable,
)
from jwt_verifier.loop import loop_thread, on_the_loop
from jwt_verifier.statuslist import MEDIA_TYPE, StatusList, parse_list_token, status_ref
from jwt_verifier.verifier import KeySource, TokenVerifier, WatchedKeySource

__all__ = ["StatusChecked", "StatusFetchNeeded", "StatusLists", "loop_thread", "with_status_lists"]

log = logging.getLogger(__name__)

MIN_INTERVAL = 1.0  # never more than one fetch of a list per second per process
INDEX_RETRY_UNSUPPORTED = 60.0  # an issuer that serves no index is asked again this rarely
FAILED_FIRST_SIGHT_RETRY = 1.0  # a list never fetched is tried again at most this often
FIRST_INDEX_RETRY = 0.1  # until the issuer first answers, its index is asked again after this, doubling
LEEWAY = 10.0


class StatusFetchNeeded(JwtVerifierError):
    """The token's list is not held and the caller runs an event loop: check in a worker thread."""


class _FetchFailed(JwtVerifierError):
    """One fetch failed; the message is for the log and holds no response content."""


class _TooLarge(_FetchFailed):
    """The answer was larger than a list may be: the list, not the network, is at fault."""


@dataclass(eq=False)
class _Held:
    """One list URI: the list held (if any), its validators and its schedule."""

    uri: str
    listed: bool = False  # named by the issuer's index
    current: StatusList | None = None
    etag: str | None = None
    interval: float = MIN_INTERVAL
    valid_until: float = float("-inf")  # usable before this (stale window included)
    next_at: float = float("-inf")
    used_at: float = 0.0
    failing: bool = False
    error: JwtVerifierError | None = None  # why a list never held cannot be had (until next_at)
    lock: threading.Lock = field(default_factory=threading.Lock)


class StatusLists:
    """The status lists one process holds, kept fresh by one background thread."""

    def __init__(
        self,
        config: VerifierConfig,
        keys: KeySource,
        *,
        clock: Callable[[], float] = time.time,
        session: requests.Session | None = None,
        background: bool = True,
    ) -> None:
        self.issuer = config.issuer
        self._public_base = config.issuer.rstrip("/") + "/"
        self._fetch_base = config.status_base_url.rstrip("/") + "/"
        self.keys = keys
        self.clock = clock
        self.prefixes = config.status_uri_prefixes
        self.index_url = config.status_index_url
        self.index_interval = max(config.status_index_seconds, MIN_INTERVAL)
        self.refresh = max(config.status_refresh_seconds, MIN_INTERVAL)
        self.stale = max(config.status_stale_seconds, 0.0)
        self.timeout = config.status_timeout
        self.max_lists = max(config.status_max_lists, 1)
        self.max_bytes = config.status_max_bytes
        self.max_list_bytes = config.status_max_list_bytes
        self.session = watch(session or requests.Session())
        self.fetch_count = 0
        self._lists: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._index_etag: str | None = None
        self._index_at = float("-inf")
        self._index_failing = False
        self._index_answered = False
        self.prefetching = False
        self._index_retry = 0.0
        self._budget_at = float("-inf")  # the refresher's next re-read may not be made before this
        self.budget_spent = 0  # re-reads the budget allowed (the index's and the lists')
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        if not background:  # the caller runs refresh_due() itself (tests on a hand-moved clock)
            self._stop.set()

    # -- the request path ---------------------------------------------------------------------

    def check(self, claims: dict[str, Any]) -> None:
        """Raise TokenRevoked, StatusListInvalid or StatusUnavailable unless the token's status is valid."""
        ref = status_ref(claims)
        if ref is None:
            return
        idx, uri = ref
        now = self.clock()
        held = self._lists.get(uri)
        if held is None or held.current is None:
            try:
                held = self._first_sight(uri, now)
            except StatusUnavailable:
                if self._vouched(claims, now):
                    return
                raise
        current = held.current
        assert current is not None
        held.used_at = now
        value = current.status(idx)
        if value:  # what a list revoked stays revoked, however old the list
            raise TokenRevoked(suspended=value != 1)
        if now >= held.valid_until:
            self._ensure_refresher()
            if self._vouched(claims, now):
                return
            raise StatusUnavailable(f"the status list {uri} has not been refreshed within the stale window")
        if now >= held.next_at + self.refresh * (len(self._lists) + 1) + self.timeout:
            # Overdue: the refresher is gone (a fork) or stuck. With k lists (and the index) sharing
            # its budget of a request a second, a list is re-read up to k + 1 seconds after it is due.
            self._ensure_refresher()

    def _vouched(self, claims: dict[str, Any], now: float) -> bool:
        """Return whether the token's own `iat` is within the stale window.

        The issuer minted the token valid at `iat` (its signature says so): that is status as
        fresh as a list fetched then, so a token minted just before the issuer stopped is served
        for the stale window, like one whose list was held, and not refused with 503.
        """
        iat = claims.get("iat")
        return isinstance(iat, int | float) and not isinstance(iat, bool) and now - iat < self.stale

    def _first_sight(self, uri: str, now: float) -> _Held:
        if not self._trusted(uri):
            raise StatusListInvalid("the token's status list is not at a trusted address")
        held = self._lists.get(uri)
        if held is not None and held.current is None and held.error is not None and now < held.next_at:
            raise _copy(held.error)
        if on_the_loop():
            raise StatusFetchNeeded("the status list must be fetched first")
        held = self._entry(uri)
        with held.lock:
            if held.current is None:
                if held.error is None or self.clock() >= held.next_at:
                    self._refresh(held)
                if held.current is None:
                    assert held.error is not None
                    raise _copy(held.error)
        self._ensure_refresher()
        return held

    def _trusted(self, uri: str) -> bool:
        """Return whether `uri` is under a trusted prefix, on that prefix's origin, with no dot segment."""
        if "#" in uri or "\\" in uri or not uri.isascii():
            return False
        for prefix in self.prefixes:
            if uri.startswith(prefix):
                wanted, got = urlsplit(prefix), urlsplit(uri)
                segments = got.path.split("/")
                if (got.scheme, got.netloc) == (wanted.scheme, wanted.netloc) and not {".", ".."} & set(segments):
                    return True
        return False

    def _entry(self, uri: str, *, listed: bool = False) -> _Held:
        with self._lock:
            held = self._lists.get(uri)
            if held is None:
                if len(self._lists) >= self.max_lists:
                    unlisted = [h for h in self._lists.values() if not h.listed] or list(self._lists.values())
                    del self._lists[min(unlisted, key=lambda h: h.used_at).uri]
                held = self._lists[uri] = _Held(uri, used_at=self.clock())
            held.listed = held.listed or listed
            return held

    # -- the background refresher -------------------------------------------------------------

    def prefetch(self) -> None:
        """Start the refresher now: it reads the issuer's index and holds its lists before tokens name them."""
        self.prefetching = True
        self._ensure_refresher()

    def keys_changed(self, kids: frozenset[str]) -> None:
        """Hear that the JWKS client loaded keys: an issuer whose index was never answered is up, ask it now."""
        if not self._index_answered:
            self._index_at = float("-inf")
            self._wake.set()

    def close(self) -> None:
        """Stop the `status-refresh` thread and start no other; idempotent (a process that exits need not call it).

        Waits for a fetch in flight (at most `status_timeout`). The lists held stay usable for
        `check` until their stale window ends; a list never held is still fetched on first sight.
        """
        with self._lock:
            self._stop.set()
            self._wake.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.timeout + 5)

    stop = close  # the name tests used before close()

    def __enter__(self) -> StatusLists:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _ensure_refresher(self) -> None:
        with self._lock:
            thread = self._thread
            if thread is not None and thread.is_alive() and self._pid == os.getpid():
                return
            if self._stop.is_set():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="status-refresh", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before the pass: a wake-up during it is not lost
            try:
                wait = self.refresh_due()
            except Exception:  # the thread's outermost guard: log the bug, keep the lists
                log.exception("status list refresh failed")
                wait = MIN_INTERVAL
            self._wake.wait(min(max(wait, 0.05), MIN_INTERVAL))

    def refresh_due(self) -> float:
        """Make the requests that are due within the budget; return the seconds until the next may be made.

        The budget: at most one re-read (of the index or of a held list) per `MIN_INTERVAL`, the
        most overdue first (a list before the index on a tie). Outside it: the index until the
        issuer first answers it (no issuer is answering yet), and the first fetch of a list the
        index names (once per list, so that the lists are held before the issuer may stop).
        """
        now = self.clock()
        if not self._index_answered and now >= self._index_at:
            self._fetch_index(now)
        with self._lock:
            entries = [h for h in self._lists.values() if h.current is not None or h.listed]
        for held in entries:
            if held.current is None and held.error is None and held.listed:  # a first fetch
                with held.lock:
                    if held.current is None and held.error is None:
                        self._refresh(held)
        now = self.clock()
        if now >= self._budget_at:
            due = [h for h in entries if now >= h.next_at]
            index_due = self._index_answered and now >= self._index_at
            if due and (not index_due or min(h.next_at for h in due) <= self._index_at):
                held = min(due, key=lambda h: h.next_at)
                with held.lock:
                    if self.clock() >= held.next_at:
                        self._budget_at = now + MIN_INTERVAL
                        self.budget_spent += 1
                        self._refresh(held)
            elif index_due:
                self._budget_at = now + MIN_INTERVAL
                self.budget_spent += 1
                self._fetch_index(now)
        next_at = min([*(h.next_at for h in entries), self._index_at])
        if self._index_answered:
            next_at = max(next_at, self._budget_at)
        return next_at - self.clock()

    # -- fetching -----------------------------------------------------------------------------

    def _refresh(self, held: _Held) -> None:
        """Fetch one list (conditionally when held) and store the outcome; the caller holds `held.lock`."""
        started = self.clock()
        held.next_at = started + (held.interval if held.current is not None else FAILED_FIRST_SIGHT_RETRY)
        try:
            try:
                self._fetch_list(held, started)
            except _TooLarge as exc:
                raise StatusListInvalid(str(exc)) from exc
        except (_FetchFailed, VerificationUnavailable) as exc:
            self._failed(held, str(exc), StatusUnavailable(f"the status list {held.uri} cannot be fetched: {exc}"))
            return
        except StatusListInvalid as exc:
            error: JwtVerifierError = StatusListInvalid(exc.detail)
            if held.current is not None:  # never replace a good list with a bad one
                error = StatusUnavailable(f"the status list {held.uri} was refused: {exc.detail}")
            self._failed(held, exc.detail, error)
            return
        if held.failing:
            log.info("status list fetched again", extra={"fields": {"uri": held.uri}})
        held.failing = False
        held.error = None

    def _failed(self, held: _Held, detail: str, error: JwtVerifierError) -> None:
        if not held.failing:
            log.warning(
                "status list fetch failed; keeping the list held until its stale window ends",
                extra={"fields": {"uri": held.uri, "reason": detail, "held": held.current is not None}},
            )
        held.failing = True
        held.error = error

    def _fetch_list(self, held: _Held, started: float) -> None:
        current = held.current
        headers = {"Accept": MEDIA_TYPE}
        # A held list past its `exp` must be replaced, not confirmed by a 304.
        if held.etag and current is not None and (current.exp is None or current.exp > started):
            headers["If-None-Match"] = held.etag
        status, body, etag, max_age = self._get(self._fetch_url(held.uri), headers)
        if status == 304 and "If-None-Match" in headers and current is not None:
            self._store(held, current, etag or held.etag, max_age, started)
            return
        if status == 404:
            # The issuer answered that it serves no such list (status lists switched off, or the
            # list pruned once its tokens expired): not an outage, so nothing vouches for a token
            # naming it, and a list held before is let go (its tokens are refused, not served stale).
            held.current = None
            raise StatusListInvalid("the issuer serves no such status list (HTTP 404)")
        if status != 200:
            raise _FetchFailed(f"the issuer answered HTTP {status}")
        try:
            token = body.decode("ascii").strip()
        except UnicodeDecodeError as exc:
            raise StatusListInvalid("the list is not a JWS compact serialization") from exc
        fresh = parse_list_token(
            token,
            uri=held.uri,
            issuer=self.issuer,
            keys=self.keys,
            now=self.clock(),
            leeway=LEEWAY,
            max_bytes=self.max_list_bytes,
        )
        self._store(held, fresh, etag, max_age, started)

    def _store(self, held: _Held, current: StatusList, etag: str | None, max_age: int | None, at: float) -> None:
        wanted = min(x for x in (current.ttl, max_age, self.refresh) if x is not None)
        held.interval = max(wanted, MIN_INTERVAL)
        held.next_at = at + held.interval
        held.valid_until = (at if current.exp is None else min(at, current.exp)) + self.stale
        held.etag = etag
        held.current = current  # last: a request that sees the list sees its window too

    def _fetch_url(self, uri: str) -> str:
        """Return where to fetch `uri`: an issuer's list from `status_base_url` (its `sub` stays `uri`)."""
        if uri.startswith(self._public_base):
            return self._fetch_base + uri[len(self._public_base) :]
        return uri

    def _get(self, url: str, headers: dict[str, str]) -> tuple[int, bytes, str | None, int | None]:
        """GET `url`: status, body (at most `max_bytes`), ETag and max-age, all within `timeout`."""
        self.fetch_count += 1
        with deadline(self.timeout) as bound:
            try:
                with self.session.get(
                    url, timeout=self.timeout, stream=True, allow_redirects=False, headers=headers
                ) as response:
                    body = bytearray()
                    if response.status_code == 200:
                        for chunk in response.iter_content(chunk_size=16384):
                            body += chunk
                            if len(body) > self.max_bytes:
                                raise _TooLarge(f"the answer is larger than {self.max_bytes} bytes")
                            if time.monotonic() > bound.at:
                                raise _FetchFailed("the answer took too long to arrive")
                    etag = response.headers.get("ETag")
                    max_age = parse_cache_control(response.headers.get("Cache-Control")).max_age
                    status = response.status_code
            except requests.RequestException as exc:
                if bound.expired or isinstance(exc, requests.Timeout):
                    raise _FetchFailed("the answer took too long to arrive") from exc
                raise _FetchFailed(f"cannot fetch: {type(exc).__name__}") from exc
            if bound.expired:
                raise _FetchFailed("the answer took too long to arrive")
        return status, bytes(body), etag if etag and len(etag) <= 256 else None, max_age

    def settled(self) -> bool:
        """Return whether the issuer's index has answered and each list it names was fetched once.

        Whatever the answers (a 404, a list refused): a worker is ready to outlive the issuer once
        it holds what the issuer offered. Only an issuer not answering at all keeps this false.
        """
        if not self.prefetching:
            return True  # nothing is fetched ahead: lists come on first sight
        if not self._index_answered:
            return False
        with self._lock:
            return all(h.current is not None or h.error is not None for h in self._lists.values() if h.listed)

    def _fetch_index(self, now: float) -> None:
        self._index_at = now + self.index_interval
        headers = {"Accept": "application/json"}
        if self._index_etag:
            headers["If-None-Match"] = self._index_etag
        try:
            try:
                status, body, etag, _ = self._get(self.index_url, headers)
                if status >= 500:
                    raise _FetchFailed(f"the issuer answered HTTP {status}")
            except _FetchFailed:
                if not self._index_answered:  # starting up: ask again soon, as the JWKS client does
                    self._index_retry = min(MIN_INTERVAL, 2 * self._index_retry or FIRST_INDEX_RETRY)
                    self._index_at = now + min(self._index_retry, self.index_interval)
                raise
            self._index_answered = True  # any answer but a 5xx: what the issuer offers is known
            if status == 304 and self._index_etag:
                return
            if status == 404:
                self._index_at = now + INDEX_RETRY_UNSUPPORTED
                raise _FetchFailed("the issuer serves no index of status lists (HTTP 404)")
            if status != 200:
                raise _FetchFailed(f"the issuer answered HTTP {status}")
            uris = _index_uris(body)
        except _FetchFailed as exc:
            if not self._index_failing:
                log.info("status list index unavailable", extra={"fields": {"reason": str(exc)}})
            self._index_failing = True
            return
        self._index_failing = False
        self._index_etag = etag
        current = {uri for uri in uris[: self.max_lists] if self._trusted(uri)}
        with self._lock:
            for held in self._lists.values():
                held.listed = held.uri in current  # a list the issuer no longer names may be dropped
        for uri in current:
            self._entry(uri, listed=True)


def _index_uris(body: bytes) -> list[str]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _FetchFailed("the index is not JSON") from exc
    uris = document.get("status_lists") if isinstance(document, dict) else None
    if not isinstance(uris, list) or not all(isinstance(uri, str) for uri in uris):
        raise _FetchFailed("the index is not an object with a 'status_lists' list of strings")
    return uris


def _copy(error: JwtVerifierError) -> JwtVerifierError:
    """Return a fresh exception like `error` (one raised object would pile up tracebacks)."""
    if isinstance(error, StatusListInvalid):
        return StatusListInvalid(error.detail)
    if isinstance(error, StatusUnavailable):
        return StatusUnavailable(error.detail)
    return error


class StatusChecked:
    """A `TokenVerifier` that also checks the status of every token `inner` accepts, on every use."""

    def __init__(self, inner: TokenVerifier, lists: StatusLists) -> None:
        self.inner = inner
        self.lists = lists

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims `inner` verified, unless the token's status list refuses them."""
        claims = self.inner.verify(token)
        self.lists.check(claims)
        return claims

    def close(self) -> None:
        """Stop the lists' refresher thread (`StatusLists.close`); idempotent."""
        self.lists.close()

    def __enter__(self) -> StatusChecked:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def with_status_lists(verifier: TokenVerifier, config: VerifierConfig, keys: KeySource) -> TokenVerifier:
    """Return `verifier` checking token status when `config.status_check`; prefetch lists when `config.jwks_prefetch`."""
    if not config.status_check:
        return verifier
    lists = StatusLists(config, keys)
    if isinstance(keys, WatchedKeySource):
        keys.subscribe(lists.keys_changed)
    if config.jwks_prefetch:
        lists.prefetch()
    return StatusChecked(verifier, lists)
