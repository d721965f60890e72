"""The resource's web page and its side of the browser login: an OpenID Connect relying party.

The login is the authorization code flow with PKCE and a nonce; `/callback` checks the ID
token by OpenID Connect Core's rules (`resource_server.oidc`, built on Authlib) and the access
token by the API's, and the page shows who logged in (the ID token, with the name and e-mail
address read from the issuer's `/userinfo` with the access token: the ID token carries neither)
beside the access token's claims. No access or refresh token ever appears in a URL or where JavaScript could read it:
the tokens live in HttpOnly, SameSite=Lax cookies of the resource's own (Secure over HTTPS),
the ID token in one of its own too. The resource holds no secret, so the login cookie carries
the `state`, nonce and PKCE verifier as random values only this browser has seen; `/callback`
requires the `state` to match and the ID token to carry the nonce.

The tokens are DPoP-bound (RFC 9449) to a key made for this browser session at `/login`
(`resource_server.session_key`), kept in a cookie of its own beside them: the login cookie
carries it to `/callback`, which sends a proof with the code, as every refresh does, and the
access token is accepted here only with that key (`cnf.jkt`). A token copied from anywhere
else is useless alone.

Log out is RP-Initiated Logout 1.0: the cookies are cleared and the browser goes to the
issuer's end-session endpoint with the ID token as `id_token_hint` (the specification's GET
binding puts it in the URL; an ID token grants nothing, and the APIs refuse it for its `typ`),
which ends the issuer session, revokes its refresh tokens and sends the browser back to
`/logged-out` with the `state` kept in a short-lived cookie.

`/admin` shows what the profile API's `/api/admin` answers this session's token, checked by
the same rules (the `admin` scope and a multi-factor login). When the login falls short
(RFC 9470 `insufficient_user_authentication`) the browser goes to the issuer's `/authorize`
with the challenge's `acr_values` (and `max_age`), through the same login and callback as
`/login` (state, PKCE, nonce, DPoP binding), and comes back to `/admin?stepped_up=1`. A login
that still falls short (the user has no second factor) is told to set one up at the issuer's
`/account`: one step-up per visit, never a loop.

Cookies belong to a host name, and the issuer sends the browser back to the registered
redirect URI on `RESOURCE_PUBLIC_URL`. So the page and `/login` first move a browser that
arrived by another name (127.0.0.1, say) to the public URL, and only ever there: the Host
header is the client's to choose, the target is our configuration.
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, redirect, render_template, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from werkzeug.wrappers import Response

from jwt_verifier import (
    InsufficientUserAuthentication,
    InvalidToken,
    ResourceProtector,
    StepUp,
    TokenExpired,
    VerificationUnavailable,
)
from jwt_verifier.errors import InsufficientScope
from jwt_verifier.flask import protection
from resource_server.api import ACCESS_COOKIE, ADMIN_ACR_VALUES, ADMIN_SCOPE, admin_answer
from resource_server.oauth_client import IssuerClient
from resource_server.oidc import IdTokenRefused, RelyingParty
from resource_server.session_key import KEY_COOKIE, check_binding, decode, encode, new_key
from resource_server.settings import ResourceSettings
from shared.dpop_client import DPoPKey
from shared.oauth_client import InvalidGrant, IssuerError
from shared.web import content_security_policy

log = logging.getLogger(__name__)

bp = Blueprint("pages", __name__)

REFRESH_COOKIE = "rs_refresh"
ID_COOKIE = "rs_id"
LOGIN_COOKIE = "rs_login"
LOGOUT_COOKIE = "rs_logout"
RETURN_COOKIE = "rs_return"  # a step-up's login: /callback goes back to /admin, not /
STEPPED_UP = "stepped_up"  # /admin's query after a step-up: do not ask again
LOGIN_LIFETIME = 600  # seconds a started login (or logout) may take to come back
MAX_SPENT_STATES = 100_000

UNAVAILABLE = "Your login cannot be checked right now. Please try again shortly."
# What the page shows of the issuer's /userinfo answer: the claims of `profile` and `email` it names.
USERINFO_SHOWN = ("name", "email", "preferred_username")
MAX_SHOWN_LENGTH = 320


class SpentStates:
    """The login `state` values this worker has already seen at `/callback`.

    A state is good for one callback only, whatever the outcome. The resource keeps no
    server-side store and runs several workers, so two measures make that so:

    - every callback deletes the login cookie, so an honest browser never presents a state
      twice, and a login that failed must start again at `/login` (a fresh state);
    - each worker remembers the states it has seen for as long as a login cookie lives, and
      refuses one it has seen, so a replayed cookie (a script can resend it at will) reaches
      the issuer at most once per worker.

    A shared store would make "once" exact across workers; the remaining few replays cost
    little, because `/callback` is also rate-limited per client address (and a fresh state
    is only a `/login` away anyway: the rate limit is what bounds the junk).
    """

    def __init__(self, lifetime: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime = lifetime
        self.max_entries = max_entries
        self.clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def spend(self, state: str) -> bool:
        """Mark a state used; return False when it had been used already."""
        now = self.clock()
        with self._lock:
            # Insertion order is expiry order: drop the expired from the front.
            while self._seen and next(iter(self._seen.values())) <= now:
                self._seen.popitem(last=False)
            if state in self._seen:
                return False
            if len(self._seen) >= self.max_entries:
                self._seen.popitem(last=False)
            self._seen[state] = now + self.lifetime
            return True


def init_app(app: Flask, settings: ResourceSettings) -> None:
    """Register the pages, with `/callback` rate-limited per client address."""
    app.extensions["resource.spent_states"] = SpentStates(LOGIN_LIFETIME, MAX_SPENT_STATES)
    # The Log out form ends at the issuer's end-session endpoint (a redirect browsers check against form-action).
    issuer = urlsplit(settings.issuer)
    app.config["CONTENT_SECURITY_POLICY"] = content_security_policy((f"{issuer.scheme}://{issuer.netloc}",))
    app.extensions["resource.relying_party"] = RelyingParty(
        issuer=settings.issuer,
        client_id=settings.client_id,
        keys=protection(app).jwks,
        leeway=settings.verifier.leeway,
        max_token_bytes=settings.verifier.max_token_bytes,
    )
    limiter = Limiter(get_remote_address, app=app, storage_uri="memory://")
    app.extensions["resource.limiter"] = limiter
    app.register_blueprint(bp)
    # Each callback costs a code exchange at the issuer: junk ones must not add up.
    app.view_functions["pages.callback"] = limiter.limit(settings.callback_rate_limit)(callback)


def _protector() -> ResourceProtector:
    """Return the verifier library's protector of this app: the pages check tokens where the API does."""
    return protection().protector


def _settings() -> ResourceSettings:
    return cast(ResourceSettings, current_app.extensions["resource.settings"])


def _issuer() -> IssuerClient:
    return cast(IssuerClient, current_app.extensions["resource.issuer_client"])


def _relying_party() -> RelyingParty:
    return cast(RelyingParty, current_app.extensions["resource.relying_party"])


def _set_cookie(response: Response, name: str, value: str, max_age: int | None, path: str = "/") -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite="Lax",
        secure=_settings().secure_cookies,
    )


def _session_key() -> DPoPKey | None:
    """Return the DPoP key of this browser session, from its cookie; None when it has none."""
    return decode(request.cookies.get(KEY_COOKIE), _issuer().nonces)


def _verified(token: str, key: DPoPKey | None) -> dict[str, Any]:
    """Return the claims of an access token this session holds: valid, and bound to its key if bound at all."""
    return _protector().validate(token, lambda claims: check_binding(claims, key))


def _store_tokens(
    response: Response, tokens: dict[str, Any], id_token: str | None = None, key: DPoPKey | None = None
) -> None:
    """Keep the tokens in cookies; the ID token only when it has been validated (else the old one stays).

    `key`, the session's DPoP key, is kept beside them for as long as the refresh token.
    """
    expires_in = tokens.get("expires_in")
    _set_cookie(response, ACCESS_COOKIE, tokens["access_token"], expires_in if isinstance(expires_in, int) else None)
    if isinstance(tokens.get("refresh_token"), str):
        _set_cookie(response, REFRESH_COOKIE, tokens["refresh_token"], None)
    if id_token is not None:
        _set_cookie(response, ID_COOKIE, id_token, None)  # kept past its exp: logout's id_token_hint
    if key is not None:
        _set_cookie(response, KEY_COOKIE, encode(key), None)


def _forget_tokens(response: Response) -> None:
    secure = _settings().secure_cookies
    for name in (ACCESS_COOKIE, REFRESH_COOKIE, ID_COOKIE, KEY_COOKIE):
        response.delete_cookie(name, path="/", httponly=True, samesite="Lax", secure=secure)


def _forget_login(response: Response) -> None:
    for name in (LOGIN_COOKIE, RETURN_COOKIE):
        response.delete_cookie(name, path="/callback", httponly=True, samesite="Lax", secure=_settings().secure_cookies)


def _page(template: str, status: int = 200, **context: Any) -> Response:
    response = current_app.make_response((render_template(template, **context), status))
    response.headers["Cache-Control"] = "no-store"
    return response


def _netloc(scheme: str, netloc: str) -> str:
    """Return a host[:port] in one spelling: lower case, without the scheme's default port."""
    netloc = netloc.lower()
    default = {"http": ":80", "https": ":443"}.get(scheme, "")
    return netloc.removesuffix(default) if default else netloc


def _on_the_public_host(view: Callable[[], Response]) -> Callable[[], Response]:
    """Send a browser that reached a page by another host name to the same page on the public URL.

    Cookies are per host: a login started on 127.0.0.1 could never finish at localhost. The
    target is the configured public URL and the route's own fixed path: never anything the
    request says.
    """

    @functools.wraps(view)
    def on_the_public_host() -> Response:
        public = urlsplit(_settings().public_url)
        if _netloc(public.scheme, request.host) == _netloc(public.scheme, public.netloc) or request.url_rule is None:
            return view()
        response = redirect(_settings().public_url + request.url_rule.rule, code=302)
        response.headers["Cache-Control"] = "no-store"
        return response

    return on_the_public_host


def _unavailable(refreshed: dict[str, Any] | None = None, key: DPoPKey | None = None) -> Response:
    """Answer 503 and keep the login: an issuer outage must not log anyone out.

    Every answer after a successful refresh passes `refreshed`: the browser's refresh token
    is spent, and presenting it again after the issuer's reuse grace revokes the whole family.
    """
    response = _page("index.html", 503, claims=None, unavailable=True, error=UNAVAILABLE)
    response.headers["Retry-After"] = "5"
    if refreshed is not None:
        _store_tokens(response, refreshed, key=key)  # the old refresh token is spent: keep its successor
    return response


@bp.get("/")
@_on_the_public_host
def index() -> Response:
    """Show who is logged in and their token's claims, or a link to log in."""
    token = request.cookies.get(ACCESS_COOKIE)
    refresh_token = request.cookies.get(REFRESH_COOKIE)
    key = _session_key()
    claims: dict[str, Any] | None = None
    refreshed: dict[str, Any] | None = None
    try:
        if token:
            claims = _verified(token, key)
    except TokenExpired:
        pass  # renewed below, if the browser has a refresh token
    except InvalidToken:
        # Tampered, or of a key no longer published: this browser is logged out.
        refresh_token = None
    except VerificationUnavailable:
        return _unavailable()
    if claims is None and refresh_token:
        # A login from before the resource used DPoP has no key: its refresh binds the new tokens to a fresh one.
        key = key or new_key(_issuer().nonces)
        try:
            refreshed = _issuer().refresh(refresh_token, key)
        except InvalidGrant:
            refreshed = None  # the grant is gone for good: log out
        except IssuerError:
            return _unavailable()
        if refreshed is not None:
            try:
                claims = _verified(refreshed["access_token"], key)
            except VerificationUnavailable:
                return _unavailable(refreshed, key)
            except InvalidToken:
                # Most likely a key we cannot fetch yet (the JWKS cooldown after an emergency
                # rotation): the old refresh token is spent, so keep its successor whatever happens.
                log.warning("the issuer's fresh token was refused")
                return _unavailable(refreshed, key)
    if claims is None:
        response = _page("index.html", claims=None)
        if any(request.cookies.get(name) for name in (ACCESS_COOKIE, REFRESH_COOKIE, ID_COOKIE, KEY_COOKIE)):
            _forget_tokens(response)
        return response
    new_id_token: str | None = None
    identity: dict[str, Any] | None
    if refreshed is not None and isinstance(refreshed.get("id_token"), str):
        try:
            identity = _relying_party().validate(
                refreshed["id_token"], access_token=refreshed["access_token"], nonce=None, subject=claims["sub"]
            )
        except VerificationUnavailable:
            return _unavailable(refreshed, key)
        except IdTokenRefused as exc:
            log.warning("the issuer's fresh id token was refused", extra={"fields": {"reason": exc.description}})
            response = _page("index.html", 502, claims=None, error=f"Your login was renewed, but {exc.description}.")
            _forget_tokens(response)
            return response
        new_id_token = refreshed["id_token"]
    else:
        identity = _stored_identity(claims["sub"])
    access_token = refreshed["access_token"] if refreshed is not None else token
    if identity is not None and access_token and "openid" in str(claims.get("scope", "")).split():
        identity = _with_userinfo(identity, access_token, key if "cnf" in claims else None)
    response = _page(
        "index.html",
        claims=claims,
        expires_at=_utc(claims["exp"]),
        expires_in=max(0, int(claims["exp"] - time.time())),
        identity=identity,
        auth_time=_utc(identity.get("auth_time")) if identity else None,
    )
    if refreshed is not None:
        _store_tokens(response, refreshed, new_id_token, key)
    return response


def _stored_identity(subject: str) -> dict[str, Any] | None:
    """Return the claims of the ID token cookie if it still checks out for `subject`, else None (nothing shown)."""
    id_token = request.cookies.get(ID_COOKIE)
    if not id_token:
        return None
    try:
        return _relying_party().read(id_token, subject)
    except IdTokenRefused as exc:
        log.info("id token cookie not shown", extra={"fields": {"reason": exc.description}})
    except VerificationUnavailable:
        pass  # the access token was just verified with the same keys: a blip; show what the access token says
    return None


def _with_userinfo(identity: dict[str, Any], access_token: str, key: DPoPKey | None) -> dict[str, Any]:
    """Return the ID token's claims with the name and address the issuer's `/userinfo` gives, if it does.

    OpenID Connect Core 1.0 section 5.3.2: an answer whose `sub` is not the ID token's is not used.
    Only short strings are taken: the answer is our peer's, and hostile input all the same.
    """
    info = _issuer().userinfo(access_token, key)
    if info is None or info.get("sub") != identity.get("sub"):
        return identity
    shown = {
        name: value
        for name in USERINFO_SHOWN
        if isinstance(value := info.get(name), str) and 0 < len(value) <= MAX_SHOWN_LENGTH
    }
    return {**identity, **shown}


def _utc(timestamp: object) -> str | None:
    """Return a NumericDate as a UTC time, or None when it is not one."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        return None
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))
    except (OverflowError, OSError, ValueError):
        return None


@bp.get("/login")
@_on_the_public_host
def login() -> Response:
    """Start the authorization code flow: send the browser to the issuer."""
    return _start_login()


def _start_login(acr_values: tuple[str, ...] = (), max_age: int | None = None, *, step_up: bool = False) -> Response:
    """Send the browser to the issuer's `/authorize`, asking for `acr_values`/`max_age`; a `step_up` comes back to /admin."""
    key = new_key(_issuer().nonces)  # this browser session's DPoP key: the code is bound to it
    flow = _issuer().authorization_request(dpop_jkt=key.jkt, acr_values=acr_values, max_age=max_age)
    response = redirect(flow.url, code=302)
    # The state, nonce and key have no dot (base64url); the verifier, last, may.
    value = f"{flow.state}.{flow.nonce}.{encode(key)}.{flow.verifier}"
    _set_cookie(response, LOGIN_COOKIE, value, LOGIN_LIFETIME, path="/callback")
    if step_up:
        _set_cookie(response, RETURN_COOKIE, "admin", LOGIN_LIFETIME, path="/callback")
    else:  # a step-up abandoned earlier must not send this login to /admin
        response.delete_cookie(
            RETURN_COOKIE, path="/callback", httponly=True, samesite="Lax", secure=_settings().secure_cookies
        )
    response.headers["Cache-Control"] = "no-store"
    return response


def _login_failed(message: str, status: int = 400) -> Response:
    return _page("index.html", status, claims=None, error=message)


def _matching_state() -> tuple[str, str, DPoPKey, str] | None:
    """Return (state, nonce, session key, verifier) from the login cookie when the callback's `state` matches it."""
    state, _, rest = request.cookies.get(LOGIN_COOKIE, "").partition(".")
    nonce, _, rest = rest.partition(".")
    encoded_key, _, verifier = rest.partition(".")
    given = request.args.get("state", "")
    # Our values are ASCII; anything else is not ours (and compare_digest refuses non-ASCII str).
    if not state or not nonce or not verifier or not all(v.isascii() for v in (state, nonce, verifier, given)):
        return None
    key = decode(encoded_key, _issuer().nonces)
    if key is None or not hmac.compare_digest(state, given):
        return None
    return state, nonce, key, verifier


@bp.get("/callback")
def callback() -> Response:
    """Finish the flow: check `state` (once) and `iss`, exchange the code, keep the tokens in cookies."""
    response = _finish_login()
    _forget_login(response)  # whatever the outcome: a state is good for one callback only
    return response


def _finish_login() -> Response:
    matched = _matching_state()
    spent = cast(SpentStates, current_app.extensions["resource.spent_states"])
    if matched is None or not spent.spend(matched[0]):
        log.info("login callback refused", extra={"fields": {"reason": "state mismatch or reused"}})
        return _login_failed(
            "The login could not be completed (it expired or did not start here). Please log in again."
        )
    _, nonce, key, verifier = matched
    if request.args.get("iss") != _settings().issuer:  # RFC 9207: our issuer always sends it
        return _login_failed("The login answer came from an unexpected issuer.")
    if "error" in request.args:
        log.info("login refused by the issuer", extra={"fields": {"error": request.args.get("error", "")[:64]}})
        return _login_failed("The issuer did not grant the login. Please try again.")
    code = request.args.get("code", "")
    if not code:
        return _login_failed("The login answer had no code. Please log in again.")
    try:
        tokens = _issuer().exchange(code, verifier, key)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            return _login_failed("The issuer's answer had no ID token, so the login cannot be verified.", 502)
        claims = _verified(tokens["access_token"], key)
        # The code was bound to our key (`dpop_jkt`): so must its tokens be, or they are bearer tokens.
        if str(tokens.get("token_type", "")).lower() != "dpop" or "cnf" not in claims:
            return _login_failed("The issuer's token was refused: it is not bound to this session's DPoP key.", 502)
        _relying_party().validate(id_token, access_token=tokens["access_token"], nonce=nonce, subject=claims["sub"])
    except IssuerError as exc:
        return _login_failed(f"The login could not be completed: {exc.description}.", exc.status)
    except VerificationUnavailable:
        return _login_failed(UNAVAILABLE, 503)
    except InvalidToken as exc:
        return _login_failed(f"The issuer's token was refused: {exc.description}.", 502)
    except IdTokenRefused as exc:
        log.warning("login callback refused", extra={"fields": {"reason": exc.description}})
        return _login_failed(f"The login could not be verified: {exc.description}. Please log in again.")
    log.info("browser login", extra={"fields": {"sub": claims["sub"], "jti": claims["jti"]}})
    # Fixed targets only: the cookie says which, never where.
    stepped_up = request.cookies.get(RETURN_COOKIE) == "admin"
    response = redirect(f"/admin?{STEPPED_UP}=1" if stepped_up else "/", code=303)
    _store_tokens(response, tokens, id_token, key)
    return response


@bp.get("/admin")
@_on_the_public_host
def admin() -> Response:
    """Show the profile API's admin answer for this session's token, stepping the login up once if it falls short."""
    token = request.cookies.get(ACCESS_COOKIE)
    refresh_token = request.cookies.get(REFRESH_COOKIE)
    if not token and not refresh_token:
        return _page("admin.html", 401, outcome="logged_out")
    key = _session_key()
    refreshed: dict[str, Any] | None = None
    demand = StepUp(ADMIN_ACR_VALUES)

    def checked(access_token: str, key: DPoPKey | None) -> dict[str, Any]:
        # The checks of /api/admin (resource_server.api), on this session's token and key.
        protector = _protector()
        return protector.validate(
            access_token,
            lambda claims: check_binding(claims, key),
            lambda claims: protector.authorize(claims, ADMIN_SCOPE, demand),
        )

    try:
        try:
            if not token:
                raise TokenExpired()
            claims = checked(token, key)
        except TokenExpired:
            if not refresh_token:
                raise
            key = key or new_key(_issuer().nonces)
            refreshed = _issuer().refresh(refresh_token, key)
            claims = checked(refreshed["access_token"], key)
    except InsufficientScope:
        response = _page("admin.html", 403, outcome="no_scope")
    except InsufficientUserAuthentication as exc:
        if request.args.get(STEPPED_UP):
            # The login just made still falls short: the user has no second factor to give.
            log.info(
                "step-up did not reach the level asked", extra={"fields": {"acr_values": " ".join(exc.acr_values)}}
            )
            response = _page("admin.html", 403, outcome="enroll", account_url=f"{_settings().issuer}/account")
        else:
            log.info("step-up: sending the browser for a stronger login", extra={"fields": {"reason": exc.reason}})
            response = _start_login(exc.acr_values, exc.max_age, step_up=True)
    except (InvalidGrant, InvalidToken):
        if refreshed is not None:  # a fresh token refused (a key not fetched yet): keep the spent token's successor
            return _unavailable(refreshed, key)
        response = _page("admin.html", 401, outcome="logged_out")
        _forget_tokens(response)
        return response
    except (IssuerError, VerificationUnavailable):
        return _unavailable(refreshed, key)
    else:
        response = _page("admin.html", answer=admin_answer(claims), claims=claims)
    if refreshed is not None:
        _store_tokens(response, refreshed, key=key)  # the old refresh token is spent: keep its successor
    return response


@bp.errorhandler(RateLimitExceeded)
def _rate_limited(exc: RateLimitExceeded) -> Response:
    limiter = cast(Limiter, current_app.extensions["resource.limiter"])
    current = limiter.current_limit
    retry_after = max(1, int(current.reset_at - time.time())) if current is not None else 60
    log.warning("login callbacks rate limited", extra={"fields": {"retry_after": retry_after}})
    response = _login_failed("Too many login attempts from your address. Please wait a minute and try again.", 429)
    response.headers["Retry-After"] = str(retry_after)
    return response


def _same_origin() -> bool:
    """Return whether a state-changing request comes from our own pages (CSRF defence)."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site in {"same-origin", "none"}
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    ours = urlsplit(_settings().public_url)
    theirs = urlsplit(origin)
    return (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc)


@bp.post("/logout")
def logout() -> Response:
    """Log out: revoke the refresh token, clear the cookies, and end the issuer session at its end-session endpoint.

    The revocation over the back channel (best effort) ends the issuer session even if the
    browser never gets there; the end-session endpoint, given the ID token as `id_token_hint`,
    ends it for this browser in any case and sends it back to `/logged-out`. An ID token this
    resource can no longer check (a login from before it spoke OpenID Connect, or one signed by
    a key the issuer has withdrawn) is not given: the issuer would refuse the whole request.
    """
    if not _same_origin():
        return _page("index.html", 403, claims=None, error="Logging out must start from this site.")
    refresh_token = request.cookies.get(REFRESH_COOKIE)
    if refresh_token:
        _issuer().revoke(refresh_token)
    hint = _usable_hint(request.cookies.get(ID_COOKIE))
    state = secrets.token_urlsafe(24)
    response = redirect(_issuer().end_session_url_for(hint, state), code=303)
    response.headers["Cache-Control"] = "no-store"
    _set_cookie(response, LOGOUT_COOKIE, state, LOGIN_LIFETIME, path="/logged-out")
    _forget_tokens(response)
    log.info("browser logout", extra={"fields": {"id_token_hint": hint is not None}})
    return response


def _usable_hint(id_token: str | None) -> str | None:
    """Return the ID token if it is one of our issuer's for this client (expired or not), else None."""
    if not id_token:
        return None
    try:
        _relying_party().read(id_token)
    except IdTokenRefused:
        return None
    except VerificationUnavailable:
        pass  # the issuer checks the hint itself
    return id_token


@bp.get("/logged-out")
def logged_out() -> Response:
    """Confirm a logout the issuer sent back; any other visit gets the same page, and changes nothing."""
    kept = request.cookies.get(LOGOUT_COOKIE, "")
    given = request.args.get("state", "")
    confirmed = bool(kept) and kept.isascii() and given.isascii() and hmac.compare_digest(kept, given)
    if not confirmed:
        log.info("logout confirmation not matched", extra={"fields": {"reason": "state mismatch or missing"}})
    response = _page("logged_out.html", confirmed=confirmed)
    if kept:
        response.delete_cookie(
            LOGOUT_COOKIE, path="/logged-out", httponly=True, samesite="Lax", secure=_settings().secure_cookies
        )
    return response
