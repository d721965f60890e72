"""The token endpoint (RFC 6749) and the revocation endpoint (RFC 7009)."""

from __future__ import annotations

import dataclasses
import logging
import time

from flask import Blueprint, Response, jsonify, request

from issuer import assurance, dpop, extensions, oidc, statuslist
from issuer.apis import Api, InvalidTarget
from issuer.client_auth import InvalidClient, authenticate_client
from issuer.clients import DEFAULT_CLIENT_ID, DEVICE_CODE, Client
from issuer.codes import CodeError, CodeMismatch, CodeReused
from issuer.protocol import InvalidDPoPProof, OAuthError, not_a_form
from issuer.ratelimit import note_failed_password, password_limits
from issuer.second_factor import has_second_factor
from issuer.tokens import Grant, Login, RefreshError, RefreshKeyMismatch, mint_access_token
from issuer.users import UserError, parse_scope
from shared import audit, metrics

log = logging.getLogger(__name__)

bp = Blueprint("oauth", __name__)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
SECOND_FACTOR_REQUIRED = (
    "this user logs in with a second factor (a one-time code or a passkey), which the password grant cannot carry: "
    "use the authorization code flow or the device flow"
)


def _form() -> dict[str, str]:
    """Return the form parameters, refusing other bodies and repeated parameters (RFC 6749 3.2)."""
    if request.mimetype != "application/x-www-form-urlencoded":
        raise not_a_form(request.mimetype)
    params: dict[str, str] = {}
    for name, values in request.form.lists():
        if len(values) > 1:
            raise OAuthError(f"parameter {name!r} was sent more than once")
        params[name] = values[0]
    return params


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name, "")
    if not value:
        raise OAuthError(f"the {name!r} parameter is required")
    return value


def _client(params: dict[str, str]) -> Client:
    """Return the client a public request names (confidential clients authenticate instead)."""
    client_id = params.get("client_id") or DEFAULT_CLIENT_ID
    client = extensions.current().clients.get(client_id)
    if client is None or client.auth_method != "none":
        # A confidential client sending no credentials, or an id no client has (never written).
        reason = "unknown_client" if client is None else "no_credentials"
        audit.emit("client.auth_failed", client=client.client_id if client else None, reason=reason)
        raise InvalidClient()
    return client


def _scope(requested: str | None, allowed: frozenset[str]) -> str:
    """Narrow the requested scope to what is allowed; no request means everything allowed."""
    if requested is None:
        return " ".join(sorted(allowed))
    try:
        wanted = parse_scope(requested)
    except UserError as exc:
        raise OAuthError(str(exc), error="invalid_scope") from exc
    granted = wanted & allowed
    if not granted:
        raise OAuthError("none of the requested scopes can be granted", error="invalid_scope")
    return " ".join(sorted(granted))


def _for_api(scope: str, api: Api, *, error: str = "invalid_scope") -> str:
    """Return a granted scope once it gives something of the API: never a token for an API with no scope of it.

    RFC 6749 section 3.3: what cannot be granted is refused (`invalid_scope`), not issued
    empty; RFC 9700 section 2.3: a token carries the least privilege, and none is not a
    privilege. An OpenID Connect grant of identity scopes alone (`openid`) stays: its token is
    for `/userinfo`, and the APIs refuse a token that carries none of their scopes.
    """
    if not parse_scope(scope) & api.scopes and not oidc.is_openid(scope):
        raise OAuthError(
            f"none of the scopes of API {api.audience!r} can be granted here: no token for it",
            error=error,
        )
    return scope


def _api(params: dict[str, str], client: Client) -> Api:
    """Return the API the token request asks a token for, refused unbound when that API requires DPoP."""
    api = _requested_api(params, client)
    dpop.check_api(api)
    return api


def _requested_api(params: dict[str, str], client: Client) -> Api:
    """Return the API the request names (RFC 8707 `resource`), or the default API."""
    try:
        return extensions.current().apis.choose(
            params.get("resource"), default=extensions.current().settings.audience, allowed=client.may_ask_for
        )
    except InvalidTarget as exc:
        raise OAuthError(str(exc), error="invalid_target") from exc


def _audience(api: str, scope: str) -> str | list[str]:
    """Return the `aud` of a grant's access token: its API, and `/userinfo` when `openid` was granted.

    A grant of identity scopes alone (`openid`, no scope of the API) is for `/userinfo` only:
    its token names no API the caller has nothing at (RFC 9700 section 2.3).
    """
    if not oidc.is_openid(scope):
        return api
    registered = extensions.current().apis.get(api)
    if registered is None or not parse_scope(scope) & registered.scopes:
        return oidc.userinfo_audience()
    return [api, oidc.userinfo_audience()]


def _token_response(
    grant: Grant,
    refresh_token: str | None,
    *,
    session_hash: str | None = None,
    nonce: str | None = None,
    login: Login | None = None,
    held: str | None = None,
) -> Response:
    """Answer with an access token, the refresh token if any, and an ID token for a browser login's `openid` grant.

    Both tokens speak of the login (`amr`, `acr`, `auth_time`): `login` when the grant itself
    was one (the password grant), else the one the grant recorded (`Grant.login`: a browser
    login's, through a code or a device approval, kept by their refresh family). A grant that
    recorded none (a client's own; a family from before logins were recorded) says nothing of a
    login rather than guess. `held` is what the refresh family holds when the token asked for
    less (a refresh with `scope`): what its status-list row records, for a narrowing to compare.
    """
    settings = extensions.current().settings
    login = login or grant.login
    audience = _audience(grant.audience or settings.audience, grant.scope)
    # Its refresh family's index in a status list, or one of its own (issuer.statuslist).
    api = grant.audience or settings.audience
    try:
        slot = statuslist.slot_for(
            grant.client_id, grant.user_id, api, held or grant.scope, refresh_token, _registered(grant.client_id, api)
        )
    except statuslist.ClientGone:
        log.info("client deleted during its grant", extra={"fields": {"client_id": grant.client_id}})
        raise InvalidClient() from None
    except statuslist.RegistrationChanged:
        # Made from this worker's older copy of a registration: what it granted may be no longer
        # permitted. Nothing was written; asked again, the grant reads the registration anew.
        extensions.current().clients.forget_cached()
        extensions.current().apis.forget_cached()
        log.info("registration changed during its grant", extra={"fields": {"client_id": grant.client_id}})
        raise OAuthError(
            "the client's or the API's registration changed while this request ran; send it again",
            error="temporarily_unavailable",
            status=503,
            headers={"Retry-After": "1"},
        ) from None
    access_token, claims = mint_access_token(
        extensions.current().keys.signing_key(),
        grant,
        issuer=settings.url,
        audience=audience,
        ttl=settings.access_token_ttl,
        status=slot.claim(settings.url) if slot is not None else None,
        jkt=dpop.presented(),
        login=login,
    )
    metrics.TOKENS_ISSUED.labels(request.form.get("grant_type", ""), grant.client_id).inc()
    log.info(
        "issued access token",
        extra={
            "fields": {"sub": grant.subject, "client_id": grant.client_id, "jti": claims["jti"], "scope": grant.scope}
        },
    )
    token_type = "DPoP" if "cnf" in claims else "Bearer"  # RFC 9449 section 5
    body = {"access_token": access_token, "token_type": token_type, "expires_in": settings.access_token_ttl}
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    id_token = oidc.id_token(grant, access_token, session_hash, nonce, login)
    if id_token is not None:
        body["id_token"] = id_token
    response = jsonify(**body, scope=grant.scope)
    response.headers.update(NO_STORE)
    response.headers.update(dpop.nonce_headers())
    return response


def _registered(client_id: str, audience: str) -> statuslist.Registered:
    """Return the revisions of the client and the API a grant was made by: what this request read of them (issuer.cache)."""
    client = extensions.current().clients.get(client_id)
    api = extensions.current().apis.get(audience)
    if client is None:
        raise InvalidClient()
    if api is None:
        raise OAuthError(f"API {audience!r} is no longer registered", error="invalid_target")
    return statuslist.Registered(client.revision, api.revision)


def _password_grant(params: dict[str, str], client: Client) -> Response:
    username = _required(params, "username")
    password = _required(params, "password")
    api = _api(params, client)
    user = extensions.current().users.authenticate(username, password)
    if user is None:
        note_failed_password()
        metrics.LOGINS.labels("failure").inc()
        audit.emit("login.failed", subject=extensions.current().users.known(username), client=client.client_id)
        log.info("login failed", extra={"fields": {"reason": "bad credentials"}})
        raise OAuthError("the username or password is incorrect", error="invalid_grant")
    if has_second_factor(extensions.current().database, user.id):
        # The grant carries a password alone; this user's logins need a one-time code or a passkey.
        audit.emit(
            "login.failed",
            subject=user.username,
            subject_id=user.id,
            client=client.client_id,
            reason="second_factor_required",
        )
        log.info("login refused", extra={"fields": {"reason": "second factor required", "sub": user.id}})
        raise OAuthError(SECOND_FACTOR_REQUIRED, error="invalid_grant")
    with extensions.current().database.transaction() as conn:
        # The password was checked outside the write lock (argon2 is slow): the user is read again
        # in the grant's transaction, so a change to them meanwhile is seen, or waits for the grant.
        current = extensions.current().users.locked(conn, user.id)
        if current is None:
            raise OAuthError("the user no longer exists", error="invalid_grant")
        metrics.LOGINS.labels("success").inc()
        audit.emit("login.succeeded", subject=current.username, subject_id=current.id, client=client.client_id)
        scope = _for_api(_scope(params.get("scope"), client.narrow(current.scopes & api.scopes)), api)
        grant = Grant(current.id, current.username, client.client_id, scope, api.audience)
        refresh_token = extensions.current().refresh_tokens.issue(grant, dpop_jkt=dpop.bound_to(client))
    # The password was just proved, alone: RFC 8176 `pwd`, single-factor, now.
    return _token_response(grant, refresh_token, login=Login(assurance.PASSWORD, int(time.time())))


def _refresh_grant(params: dict[str, str], client: Client) -> Response:
    token = _required(params, "refresh_token")
    issued: list[Grant] = []
    kept_by_family: list[Grant] = []

    def narrow(held: Grant) -> Grant:
        # Called inside the rotation's transaction: a refusal (a bad `resource` or `scope`, a
        # registration change) leaves the token unspent. Spent by a refused request, it would
        # revoke the session at the next refresh once the reuse grace is over.
        kept, granted = _narrowed(held, client, params.get("resource"), params.get("scope"), "a refresh token")
        issued.append(granted)
        kept_by_family.append(kept)
        return kept

    try:
        grant, successor = extensions.current().refresh_tokens.rotate(
            token, client.client_id, narrow, dpop_jkt=dpop.presented()
        )
    except RefreshKeyMismatch as exc:
        log.info("refresh refused", extra={"fields": {"reason": str(exc)}})
        if dpop.presented() is None:
            raise InvalidDPoPProof("this refresh token is DPoP-bound: send a DPoP proof by its key") from exc
        raise OAuthError(str(exc), error="invalid_grant") from exc
    except RefreshError as exc:
        log.info("refresh refused", extra={"fields": {"reason": str(exc)}})
        raise OAuthError(str(exc), error="invalid_grant") from exc
    # A new ID token (OpenID Connect Core 1.0 section 12.2): same subject, audience and auth_time; no nonce.
    return _token_response(issued[-1], successor, session_hash=grant.session_hash, held=kept_by_family[-1].scope)


def _same_api(resource: str | None, audience: str, api: Api | None, what: str) -> None:
    """Refuse a `resource` that names another API than the grant's (RFC 8707 section 2.2: `invalid_target`)."""
    # The API's audience or one of its resource URIs
    if resource not in {None, audience} and (api is None or resource not in api.resource_uris):
        raise OAuthError(f"{what} gives tokens only for the API it was granted for", error="invalid_target")


def _narrowed(
    grant: Grant, client: Client, resource: str | None, requested: str | None, what: str
) -> tuple[Grant, Grant]:
    """Return the grant held from now on and the grant issued now: at most what the client, the user and the API allow.

    The registrations may have changed since the user's consent (`clients add --replace`,
    `users update`, `apis add --replace`): a refresh and a code exchange keep the held scopes
    that all three still allow, never more (RFC 6749 section 6; RFC 9700 section 2.3: least
    privilege), and are refused (`invalid_grant`) when the client may no longer get tokens for
    the API or none of its scopes remains. The held grant is what the next refresh token
    stores, so a grant only ever shrinks; the issued one is further narrowed to `requested`.
    """
    audience = grant.audience or extensions.current().settings.audience
    api = extensions.current().apis.get(audience)
    _same_api(resource, audience, api, what)
    user_scopes, username = grant.user_scopes, grant.username  # read with the grant's row, locked, if given
    if user_scopes is None:
        user = extensions.current().users.get_by_id(grant.user_id)
        user_scopes, username = (None, grant.username) if user is None else (user.scopes, user.username)
    if user_scopes is None or api is None:
        raise OAuthError("the user or the API no longer exists", error="invalid_grant")
    dpop.check_api(api)  # registered to require DPoP since: refused, and (inside the transaction) unspent
    if not client.may_ask_for(api.audience):
        raise OAuthError(f"the client may no longer get tokens for API {api.audience!r}", error="invalid_grant")
    held = parse_scope(grant.scope)
    allowed = client.narrow((held & user_scopes & api.scopes) | oidc.kept_on_refresh(held, api.scopes))
    kept = _for_api(" ".join(sorted(allowed)), api, error="invalid_grant")
    scope = _for_api(_scope(requested, allowed), api, error="invalid_grant")
    return (
        Grant(grant.user_id, username, grant.client_id, kept, grant.audience, grant.session_hash, grant.login),
        Grant(grant.user_id, username, grant.client_id, scope, grant.audience, grant.session_hash, grant.login),
    )


def _authorization_code_grant(params: dict[str, str], client: Client) -> Response:
    code, redirect_uri = _required(params, "code"), _required(params, "redirect_uri")
    verifier = _required(params, "code_verifier")
    try:
        # One commit: the code is spent and the refresh token it grants is stored together.
        with extensions.current().database.transaction():
            redeemed = extensions.current().authorization_codes.redeem(
                code,
                client_id=client.client_id,
                redirect_uri=redirect_uri,
                verifier=verifier,
                dpop_jkt=dpop.presented(),
            )
            # Narrowed like a refresh: the registrations may have changed since the consent.
            # Refused inside the transaction: the code stays unspent (a `resource` of another
            # API is the client's mistake; a registration change refuses it again until undone).
            grant, _ = _narrowed(redeemed.grant, client, params.get("resource"), None, "this code")
            grant = with_login(grant, redeemed.session_hash)
            refresh_token = extensions.current().refresh_tokens.issue(
                grant,
                family_id=redeemed.family_id,
                session_hash=redeemed.session_hash,
                dpop_jkt=dpop.bound_to(client),
            )
    except CodeReused as exc:
        # A second use means the code leaked: revoke what its first use gave out (RFC 6749 4.1.2).
        revoked = extensions.current().refresh_tokens.revoke_family(exc.family_id) if exc.family_id else 0
        extensions.current().database.keep()  # the request fails; the revocation stands
        audit.emit("code.reuse_detected", client=client.client_id, family=exc.family_id, tokens=revoked)
        log.warning("code reused; its tokens revoked", extra={"fields": {"client_id": client.client_id}})
        raise OAuthError(str(exc), error="invalid_grant") from exc
    except CodeError as exc:
        if isinstance(exc, CodeMismatch):
            extensions.current().authorization_codes.spend(code)  # one wrong try spends it: verifiers cannot be guessed
            extensions.current().database.keep()
        log.info("code refused", extra={"fields": {"reason": str(exc), "client_id": client.client_id}})
        raise OAuthError(str(exc), error="invalid_grant") from exc
    return _token_response(grant, refresh_token, session_hash=redeemed.session_hash, nonce=redeemed.nonce)


def with_login(grant: Grant, session_hash: str | None) -> Grant:
    """Return the grant with the login of the browser session it came from, which its refresh family records.

    Recorded once, when the family starts: each refresh then says what that login proved and
    when (OpenID Connect Core 1.0 section 12.2: `auth_time` is the original authentication's),
    whatever the browser's session becomes later (a step-up in the same browser moves the family
    to the new session, and must not raise what the family's tokens say). A code or a device
    approval whose session has ended since (a logout, a factor removed, `users reset-factors`)
    gives nothing: `invalid_grant`, inside the exchange's transaction, so nothing is spent.
    """
    if session_hash is None:
        return grant
    login = extensions.current().login_sessions.login(session_hash)
    if login is None:
        raise OAuthError("the login this grant came from has ended", error="invalid_grant")
    return dataclasses.replace(grant, login=login)


def _client_credentials_grant(params: dict[str, str], client: Client) -> Response:
    """A service's own token (RFC 6749 4.4): `sub` is the client (RFC 9068 2.2), and no refresh token."""
    api = _api(params, client)
    scope = _for_api(
        _scope(params.get("scope"), client.narrow(api.scopes) if client.scopes is not None else frozenset()), api
    )
    return _token_response(Grant("", client.client_id, client.client_id, scope, api.audience), None)


def _device_code_grant(params: dict[str, str], client: Client) -> Response:
    from issuer import device

    return device.device_code_grant(params, client)


GRANTS = {
    "password": _password_grant,
    "refresh_token": _refresh_grant,
    "authorization_code": _authorization_code_grant,
    "client_credentials": _client_credentials_grant,
    DEVICE_CODE: _device_code_grant,
}


def _confidential(params: dict[str, str]) -> bool:
    """Return whether the request carries client credentials (any Authorization header counts: client_auth parses it)."""
    return "Authorization" in request.headers or "client_assertion" in params


def _authenticated_client(params: dict[str, str]) -> Client:
    """Return the client making the request: authenticated when it is confidential, named when public."""
    if not _confidential(params):
        return _client(params)
    issuer = extensions.current()
    return authenticate_client(
        request,
        params,
        clients=issuer.clients,
        assertions=issuer.client_assertions,
        issuer=issuer.settings.url,
        token_endpoint=f"{issuer.settings.url}/token",
        remote_keys=issuer.remote_keys,
    )


@bp.post("/token")
def token() -> Response:
    """Exchange a grant for an access token (and, for a user's grant, a refresh token).

    Only the password grant meets the password limits (issuer.ratelimit): the other grants'
    secrets cannot be guessed, and skip Flask-Limiter's per-request work altogether.
    """
    if request.form.get("grant_type") == "password":
        answer: Response = _password_token()  # password_limits' wrapper is untyped
        return answer
    return _token_endpoint()


@password_limits()
def _password_token() -> Response:
    """The token endpoint charged by the password limits (charged first, refunded unless a password failed)."""
    return _token_endpoint()


def _token_endpoint() -> Response:
    """Answer a token request in one transaction (`Database.unit`).

    The client's assertion `jti`, the DPoP proof, the grant's writes and its status-list index
    commit together, once.
    """
    grant_type = request.form.get("grant_type", "")
    label = grant_type if grant_type in GRANTS else "other"
    unit = None
    try:
        with extensions.current().database.unit() as unit:
            return _token()
    except OAuthError as exc:
        metrics.TOKEN_ERRORS.labels(label, exc.error).inc()
        raise
    finally:
        if unit is not None:
            metrics.TOKEN_COMMITS.labels(label).inc(unit.commits)


def _token() -> Response:
    params = _form()
    grant_type = _required(params, "grant_type")
    handler = GRANTS.get(grant_type)
    if grant_type == "password" and not extensions.current().settings.password_grant:
        handler = None  # ISSUER_PASSWORD_GRANT=false: a real deployment's choice (RFC 9700 section 2.4)
    if handler is None:
        raise OAuthError(f"grant type {grant_type[:40]!r} is not supported", error="unsupported_grant_type")
    if grant_type == "authorization_code" and not _confidential(params):
        _required(params, "client_id")  # public clients identify themselves; others authenticate (RFC 6749 4.1.3)
    client = _authenticated_client(params)
    if grant_type not in client.grant_types:
        raise OAuthError("the client may not use this grant type", error="unauthorized_client")
    # RFC 9449 section 5: a proof makes the access token DPoP-bound (and a public client's refresh token).
    dpop.check_token_request(client, f"{extensions.current().settings.url}/token")
    return handler(params, client)


@bp.post("/revoke")
def revoke() -> Response:
    """Revoke a refresh token: its family, and the login session it was born of with all of that session's tokens.

    An access token (a JWT this issuer signed for the client) is revoked through its status
    list: its index is set INVALID, and its refresh family, whose tokens all share that index,
    is revoked with it (issuer.statuslist.revoke_access_token).

    RFC 7009 section 2.1: the client authenticates as at the token endpoint (a public client
    names itself with `client_id`: no default client here), and only a token issued to that
    client is revoked. Section 2.2: an unknown token, or one issued to another client, gets
    200 too, so that a caller learns nothing about tokens that are not its own.
    """
    params = _form()
    token = _required(params, "token")
    if not _confidential(params) and not params.get("client_id"):
        log.info("revocation refused", extra={"fields": {"reason": "no client_id and no client credentials"}})
        raise InvalidClient()
    client = _authenticated_client(params)
    response = Response(status=200)
    response.headers.update(NO_STORE)
    # Section 2.1: the hint only says where to look first; a token it does not find is looked up
    # as the other type too (an access token sent with `token_type_hint=refresh_token`, and back).
    kinds = (_revoke_access_token, _revoke_refresh_token)
    if params.get("token_type_hint") == "refresh_token":
        kinds = (_revoke_refresh_token, _revoke_access_token)
    for revoke_kind in kinds:
        if revoke_kind(token, client):
            break
    return response


def _revoke_access_token(token: str, client: Client) -> bool:
    """Revoke an access token issued to `client` through its status list; return whether it was one."""
    if token.count(".") != 2:
        return False
    slot = statuslist.access_token_slot(token, client.client_id)
    if slot is None:
        return False
    issuer = extensions.current()
    with issuer.database.transaction():  # the index and the family it stands for end together
        family_id = statuslist.current().revoke_slot(slot)
        tokens = issuer.refresh_tokens.revoke_family(family_id) if family_id is not None else 0
    audit.emit("token.revoked", client=client.client_id, family=family_id, tokens=tokens)
    log.info("access token revoked", extra={"fields": {"client_id": client.client_id}})
    return True


def _revoke_refresh_token(token: str, client: Client) -> bool:
    """Revoke a refresh token issued to `client`; return whether it was one."""
    issuer = extensions.current()
    # One transaction: the family, the session and the session's other families end together.
    with issuer.database.transaction():
        session_hash = issuer.refresh_tokens.revoke(token, client.client_id)
        if session_hash:
            issuer.login_sessions.end(session_hash)
            issuer.refresh_tokens.revoke_session(session_hash)
    if session_hash is None:
        return False
    log.info("refresh token revoked", extra={"fields": {"client_id": client.client_id}})
    return True
