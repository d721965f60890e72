"""The JWKS client: fetches the issuer's public keys over HTTP and keeps them in memory.

- Keys are parsed once per key (a refetch reuses the key object of an unchanged JWK) and looked
  up in a plain dict by `kid`; `subscribe` callbacks hear of every change of the key set.
- Freshness follows the response's `Cache-Control: max-age`, clamped to [min_ttl, max_ttl].
  A stale set keeps serving while one background thread refetches, so no request waits.
- An unknown `kid` triggers a refetch at most once per `cooldown` (a failed fetch also
  starts the cooldown while keys are held; a scheduled refresh does not), one fetch at a time
  (concurrent requests wait for it); unknown kids are remembered for a cooldown, so a flood
  of them neither reaches the issuer nor queues behind a fetch in progress.
- A request that waited for a fetch reuses its answer only if that fetch began after the
  request started waiting: an answer taken before a new key was published (a scheduled
  refresh, or a junk kid's fetch, in flight during an emergency rotation) must not turn the
  new key away. Those waiters share one follow-up fetch, even inside the cooldown, at most
  one per cooldown window; and a kid is remembered as unknown only on the strength of a
  fetch that began after the request for it arrived.
- Any failure (issuer down, slow, redirecting, oversized, garbage, JSON nested past the
  parser's depth) is a failed fetch and keeps the keys it has; the background threads log
  anything unexpected and carry on.
- While no keys are held, a client that prefetches (an API's verifier) retries a failed fetch
  soon: after 0.1 s, doubling up to `jwks_retry_max` (0.5 s), so keys arrive within about that
  long of the issuer answering. One without prefetch keeps the cooldown.
- `prefetch()` loads keys at start-up in the background, retrying until the issuer answers.
- `close()` stops those threads (`jwks-prefetch`, `jwks-refresh`) and starts no more; the
  client is also a context manager. A process that simply exits need not call it (the threads
  are daemons); an app that is torn down while its process lives on (tests, reloads) should.
- `trace_fetches()` lets an application wrap each fetch (shared.tracing does: a client span,
  and the `traceparent` header it yields); the library adds no dependency for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager

import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from jwt_verifier import observe
from jwt_verifier.cache_control import parse_cache_control
from jwt_verifier.config import VerifierConfig
from jwt_verifier.deadline import deadline, watch
from jwt_verifier.errors import JwkError, JwksFetchError, KeysUnavailable, UnknownKey
from jwt_verifier.jose import load_verification_key

__all__ = ["JwksClient", "JwksFetchError", "KeysUnavailable", "UnknownKey"]

log = logging.getLogger(__name__)

MAX_UNKNOWN_KIDS = 1024
FIRST_RETRY = 0.1  # seconds before a client holding no keys retries a failed fetch (then doubling)

# Wraps each fetch of `url` and yields extra request headers; by default, none.
FetchTracer = Callable[[str], AbstractContextManager[Mapping[str, str]]]
_trace_fetch: FetchTracer = lambda url: contextlib.nullcontext({})  # noqa: E731


def trace_fetches(tracer: FetchTracer) -> None:
    """Run every JWKS fetch inside `tracer(url)` and send the headers it yields (one per process)."""
    global _trace_fetch
    _trace_fetch = tracer


class JwksClient:
    """A cache of the issuer's RS256 verification keys."""

    def __init__(
        self,
        config: VerifierConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        session: requests.Session | None = None,
    ) -> None:
        self.url = config.jwks_url
        self.timeout = config.jwks_timeout
        self.max_bytes = config.jwks_max_bytes
        self.default_ttl = config.jwks_default_ttl
        self.min_ttl = config.jwks_min_ttl
        self.max_ttl = max(config.jwks_min_ttl, config.jwks_max_ttl)
        self.cooldown = config.jwks_cooldown
        # Only a verifier that loads its keys at start (an API's) retries soon: a key set fetched
        # on demand for whoever asks (the issuer's for a client's jwks_uri) keeps the cooldown.
        self.retry_soon = config.jwks_prefetch
        self.retry_max = min(config.jwks_retry_max, config.jwks_cooldown)
        self._retry = 0.0  # the wait after the last failed fetch while no keys are held
        self.clock = clock
        self.session = watch(session or requests.Session())
        self.fetch_count = 0
        self._keys: Mapping[str, rsa.RSAPublicKey] = {}
        self._fresh_until = float("-inf")
        self._fetched_at = time.monotonic()  # of the keys held (for the age metric; none are yet)
        self._next_fetch_at = float("-inf")
        self._fetches_begun = 0
        self._fetches_finished = 0
        self._last_fetch_failed = False
        self._followup_at = float("-inf")
        self._fetch_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._background = False
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._unknown: dict[str, float] = {}
        self._parsed: dict[str, tuple[str, rsa.RSAPublicKey]] = {}
        self._subscribers: list[Callable[[frozenset[str]], None]] = []

    @property
    def kids(self) -> list[str]:
        """Return the kids currently held."""
        return list(self._keys)

    def subscribe(self, callback: Callable[[frozenset[str]], None]) -> None:
        """Call `callback` with the kids held whenever a fetch changes the set of keys."""
        self._subscribers.append(callback)

    def held(self, kid: str) -> rsa.RSAPublicKey | None:
        """Return the key for `kid` if it is held, never fetching in the caller's thread.

        A stale set is refreshed in the background, as `get` does. An ASGI integration asks
        this on its event loop and calls `get` (which may fetch) in a worker thread only when
        it answers None.
        """
        keys = self._keys
        if keys:
            observe.current().jwks_age(time.monotonic() - self._fetched_at)
            if self.clock() >= self._fresh_until:
                self._refresh_in_background()
        return keys.get(kid)

    def get(self, kid: str) -> rsa.RSAPublicKey:
        """Return the key for `kid`, fetching the JWKS when the kid is new (within limits)."""
        now = self.clock()
        keys = self._keys
        if keys:
            observe.current().jwks_age(time.monotonic() - self._fetched_at)
        if keys and now >= self._fresh_until:
            self._refresh_in_background()
        key = keys.get(kid)
        if key is not None:
            return key
        if keys and self._recently_unknown(kid, now):
            raise UnknownKey(kid)
        answered = self._fetch_if_allowed(wanted_kid=kid)
        key = self._keys.get(kid)
        if key is not None:
            return key
        if not self._keys:
            raise KeysUnavailable("no verification keys have been loaded from the issuer yet")
        if answered:
            self._remember_unknown(kid, now)
        raise UnknownKey(kid)

    def prefetch(self) -> None:
        """Load the keys in a background thread now, retrying each cooldown until some arrive.

        Each worker process calls this at start, so every worker holds keys before the issuer
        can go away, not just the one that happened to answer the first request.
        """
        self._start(self._prefetch_until_loaded, "jwks-prefetch")

    def _prefetch_until_loaded(self) -> None:
        while not self._closed.is_set():
            try:
                self._fetch_if_allowed()
            except Exception:  # the loop's outermost guard: it must outlive any bug
                log.exception("jwks prefetch failed; retrying")
            if self._keys:
                return
            self._closed.wait(max(0.05, min(self._next_fetch_at - self.clock(), self.cooldown)))

    def close(self) -> None:
        """Stop this client's background threads and start no more; idempotent.

        Waits for a fetch in flight (at most `jwks_timeout`). The keys held stay usable, and
        `get` still fetches in the caller's thread; only the background work ends.
        """
        self._closed.set()
        with self._state_lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=self.timeout + 5)

    def __enter__(self) -> JwksClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start(self, target: Callable[[], None], name: str) -> bool:
        """Start a daemon thread unless the client is closed; return whether one started."""
        with self._state_lock:
            if self._closed.is_set():
                return False
            self._threads = [t for t in self._threads if t.is_alive()]
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()
            return True

    def ensure_loaded(self) -> bool:
        """Return whether keys are held, trying a fetch (within limits) when none are."""
        if not self._keys:
            self._fetch_if_allowed()
        return bool(self._keys)

    # -- fetching ---------------------------------------------------------------------------

    def _fetch_if_allowed(self, *, wanted_kid: str | None = None) -> bool:
        """Fetch unless a fetch that began while we waited has answered, or it is too soon.

        Return whether a fetch that began after this call arrived has finished: only such an
        answer may say that a kid is unknown.

        Only a fetch that began after this call started waiting is reused: one in flight when
        we arrived may hold an answer from before the key we want was published. Waiters that
        arrive together share the one fetch the first of them begins.

        The cooldown starts after a fetch caused by an unknown kid, and after a failed fetch;
        a scheduled refresh does not start it, so a key that begins signing right after one
        (an emergency rotation) is still fetched on its first token.

        A request for a kid that waited on a fetch in flight (which may have begun before the
        kid was published) gets a follow-up fetch even inside the cooldown: the first such
        waiter begins it and the others share it. The bound: at most one follow-up per cooldown
        window, and none after a failed fetch (the issuer is down; asking again at once only
        makes the waiters wait twice). So a flood of unknown kids costs the issuer at most two
        fetches per cooldown, the kid's fetch and one follow-up, never fetches back to back.
        """
        finished = self._fetches_finished
        arrived = self._fetches_begun
        waited_on_a_fetch = arrived != finished
        with self._fetch_lock:
            if self._fetches_begun != arrived:
                return True  # a fetch began after we arrived and has finished
            if wanted_kid is not None and wanted_kid in self._keys:
                return True  # a fetch in flight when we arrived brought it after all
            now = self.clock()
            if now >= self._next_fetch_at:
                self._fetch(for_unknown_kid=wanted_kid is not None)
                return True
            if (
                wanted_kid is not None
                and waited_on_a_fetch
                and not self._last_fetch_failed
                and now >= self._followup_at + self.cooldown
            ):
                self._followup_at = now
                self._fetch(for_unknown_kid=True)
                return True
            return False

    def _refresh_in_background(self) -> None:
        with self._state_lock:
            if self._background or self.clock() < self._next_fetch_at:
                return
            self._background = True
        if not self._start(self._background_fetch, "jwks-refresh"):
            with self._state_lock:
                self._background = False

    def _background_fetch(self) -> None:
        try:
            self._fetch_if_allowed()
        except Exception:  # the thread's outermost guard: log the bug, keep the keys
            log.exception("jwks background refresh failed")
        finally:
            with self._state_lock:
                self._background = False

    def _fetch(self, *, for_unknown_kid: bool) -> None:
        """Fetch the JWKS now; the caller holds the fetch lock."""
        self._fetches_begun += 1
        try:
            self._fetch_and_store(for_unknown_kid=for_unknown_kid)
        finally:
            # Counted once the answer is stored: an arrival before this waited on the fetch.
            self._fetches_finished += 1

    def _fetch_and_store(self, *, for_unknown_kid: bool) -> None:
        started = self.clock()
        if for_unknown_kid:
            self._next_fetch_at = started + self.cooldown
        self.fetch_count += 1
        cause = "unknown_kid" if for_unknown_kid else ("refresh" if self._keys else "initial")
        with _trace_fetch(self.url) as headers:
            self._store(cause, started, headers)

    def _store(self, cause: str, started: float, headers: Mapping[str, str]) -> None:
        try:
            keys, ttl = self._download(headers)
        except JwksFetchError as exc:
            if self._keys or not self.retry_soon:
                self._next_fetch_at = started + self.cooldown
            else:  # every token waits on these keys: try again soon, a little later each time
                self._retry = min(self.retry_max, 2 * self._retry or FIRST_RETRY)
                self._next_fetch_at = started + self._retry
            self._last_fetch_failed = True
            observe.current().jwks_fetch("error", cause, len(self._keys))
            log.warning(
                "jwks fetch failed; keeping the keys held",
                extra={"fields": {"reason": str(exc), "kids_held": len(self._keys)}},
            )
            return
        self._last_fetch_failed = False
        self._retry = 0.0
        changed = keys != self._keys
        self._keys = keys
        self._fresh_until = self.clock() + ttl
        self._fetched_at = time.monotonic()
        observe.current().jwks_fetch("ok", cause, len(keys))
        with self._state_lock:
            self._unknown.clear()
        log.info("jwks loaded", extra={"fields": {"kids": sorted(keys), "ttl": ttl}})
        if changed:
            kids = frozenset(keys)
            for callback in self._subscribers:
                callback(kids)

    def _download(self, headers: Mapping[str, str]) -> tuple[dict[str, rsa.RSAPublicKey], float]:
        """Fetch the JWKS: the whole answer, headers and body, within `timeout` (`deadline.py`)."""
        with deadline(self.timeout) as bound:
            try:
                with self.session.get(
                    self.url,
                    timeout=self.timeout,
                    stream=True,
                    allow_redirects=False,
                    headers={**headers, "Accept": "application/json"},
                ) as response:
                    if response.status_code != 200:
                        raise JwksFetchError(f"the issuer answered HTTP {response.status_code}")
                    body = bytearray()
                    for chunk in response.iter_content(chunk_size=16384):
                        body += chunk
                        if len(body) > self.max_bytes:
                            raise JwksFetchError(f"the JWKS is larger than {self.max_bytes} bytes")
                        if time.monotonic() > bound.at:
                            raise JwksFetchError("the JWKS took too long to arrive")
                    cache_control = response.headers.get("Cache-Control")
            except requests.RequestException as exc:
                # A read timeout and the deadline are the same length now: either may fire first.
                if bound.expired or isinstance(exc, requests.Timeout):
                    raise JwksFetchError("the JWKS took too long to arrive") from exc
                raise JwksFetchError(f"cannot fetch the JWKS: {type(exc).__name__}") from exc
            if bound.expired:  # the sockets were shut down: the body may be cut short
                raise JwksFetchError("the JWKS took too long to arrive")
        return self._parse(bytes(body)), self._ttl(cache_control)

    def _parse(self, body: bytes) -> dict[str, rsa.RSAPublicKey]:
        try:
            return self._parse_document(json.loads(body))
        except (ValueError, RecursionError) as exc:
            # RecursionError: JSON nested deeper than the parser (or re-encoder) will go.
            raise JwksFetchError("the JWKS is not JSON this client can read") from exc

    def _parse_document(self, document: object) -> dict[str, rsa.RSAPublicKey]:
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise JwksFetchError("the JWKS is not an object with a 'keys' list")
        keys: dict[str, rsa.RSAPublicKey] = {}
        parsed: dict[str, tuple[str, rsa.RSAPublicKey]] = {}
        for jwk in document["keys"]:
            # The same JWK as last time keeps its key object: parsed once, and still the
            # object the verified-token cache recorded.
            canonical = json.dumps(jwk, sort_keys=True)
            known = self._parsed.get(canonical)
            if known is None:
                try:
                    known = load_verification_key(jwk)
                except JwkError as exc:
                    log.warning("ignoring a JWKS key", extra={"fields": {"reason": str(exc)}})
                    continue
            kid, key = known
            parsed[canonical] = known
            keys[kid] = key
        if not keys:
            raise JwksFetchError("the JWKS holds no usable RS256 key")
        self._parsed = parsed
        return keys

    def _ttl(self, header: str | None) -> float:
        control = parse_cache_control(header)
        if control.no_store or control.no_cache:
            ttl: float = self.min_ttl
        elif control.max_age is not None:
            ttl = control.max_age
        else:
            ttl = self.default_ttl
        return min(max(ttl, self.min_ttl), self.max_ttl)

    # -- unknown kids -----------------------------------------------------------------------

    def _recently_unknown(self, kid: str, now: float) -> bool:
        with self._state_lock:
            until = self._unknown.get(kid)
            return until is not None and now < until

    def _remember_unknown(self, kid: str, now: float) -> None:
        with self._state_lock:
            if len(self._unknown) >= MAX_UNKNOWN_KIDS:
                self._unknown = {k: t for k, t in self._unknown.items() if t > now}
                while len(self._unknown) >= MAX_UNKNOWN_KIDS:
                    del self._unknown[next(iter(self._unknown))]
            self._unknown[kid] = now + self.cooldown
