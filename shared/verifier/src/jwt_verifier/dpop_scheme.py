"""The DPoP authentication scheme at a protected resource (RFC 9449 section 7).

`dpop_token` reads `Authorization: DPoP <token>`; `DPoPPolicy` is what a protector holds: the
API's settings, its replay store and nonces, and the rules that tie a token to how it was sent
(a DPoP-bound token, one with `cnf.jkt`, is never a bearer token; an API that requires DPoP
refuses bearer use of any token; the DPoP scheme needs a bound token and its proof, checked by
`jwt_verifier.dpop.verify_proof` against the URL the client called).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from jwt_verifier.config import VerifierConfig
from jwt_verifier.dpop import SUPPORTED_ALGORITHMS, Nonces, Proof, verify_proof
from jwt_verifier.errors import DPoPError, DPoPInvalidToken, InvalidDPoPProof, InvalidToken, Reason
from jwt_verifier.replay import ReplayStore, open_replay_store

__all__ = [
    "DPoPPolicy",
    "DPoPRequest",
    "bound_jkt",
    "dpop_request",
    "dpop_token",
    "refuse_bound_bearer",
    "request_url",
]


@dataclass(frozen=True)
class DPoPRequest:
    """What a DPoP check reads of a request: its method, external URL and `DPoP` header values."""

    method: str
    url: str
    proofs: tuple[str, ...]


_PATH_SAFE = "/!$&'()*+,;=:@~"  # RFC 3986 `pchar` and "/", left as they are


def request_url(resource: str, path: str, sent: str | None = None) -> str:
    """Return the URL a client called: the public origin of the API's `resource`, and the request's path as sent.

    `path` is the decoded one a framework gives (WSGI's and ASGI's `path`); `sent` the request
    target the server received (WSGI's `RAW_URI`, ASGI's `raw_path`), whose path is still
    percent-encoded as the client wrote it, which is what its proof's `htu` names (RFC 9449
    section 4.3: compared after RFC 3986 syntax-based normalization, which decodes unreserved
    characters only, so `a%2Fb` is one segment and `a/b` two). `sent` is used when it is that
    path, in origin or absolute form (a proxy that moved the path, or no record of the target:
    `path` encoded again).
    """
    origin = urlsplit(resource)
    return urlunsplit((origin.scheme, origin.netloc, _as_sent(path, sent), "", ""))


def _as_sent(path: str, sent: str | None) -> str:
    if sent:
        encoded = sent.partition("?")[0]
        if encoded[:8].lower().startswith(("http://", "https://")):  # absolute form (RFC 9112 section 3.2.2)
            try:
                encoded = urlsplit(encoded).path or "/"
            except ValueError:  # not a URL (`http://[::1`): the decoded path, as with no record
                encoded = ""
        if encoded.startswith("/") and unquote(encoded) == path:
            return encoded
    return quote(path, safe=_PATH_SAFE)


def dpop_request(resource: str, method: str, path: str, proofs: Sequence[str], sent: str | None = None) -> DPoPRequest:
    """Return the DPoP view of a request (its URL built only when a proof came to be checked against it).

    `path` and `sent` as `request_url` takes them.
    """
    return DPoPRequest(method, request_url(resource, path, sent) if proofs else "", tuple(proofs))


def dpop_token(authorization: Sequence[str]) -> str | None:
    """Return the token of an `Authorization: DPoP <token>` header (section 7.1), None for another scheme."""
    if len(authorization) != 1:
        return None  # none, or several (which `bearer_token` refuses)
    scheme, _, token = authorization[0].strip().partition(" ")
    if scheme.lower() != "dpop":
        return None
    token = token.strip()
    if not token:
        raise InvalidDPoPProof("the DPoP access token is empty", reason=Reason.MALFORMED)
    return token


def bound_jkt(claims: Mapping[str, Any]) -> str | None:
    """Return the `cnf.jkt` of verified token claims: the thumbprint of the key it is bound to, if any."""
    cnf = claims.get("cnf")
    if isinstance(cnf, dict):
        jkt = cnf.get("jkt")
        if isinstance(jkt, str):
            return jkt
    return None


def refuse_bound_bearer(claims: Mapping[str, Any], algs: tuple[str, ...] = SUPPORTED_ALGORITHMS) -> None:
    """Refuse the claims of a token sent as a bearer token if it is DPoP-bound (section 7.2)."""
    if bound_jkt(claims) is not None:
        raise DPoPInvalidToken(
            "this token is DPoP-bound: send it as 'Authorization: DPoP <token>' with a DPoP proof",
            algs=algs,
            reason=Reason.DPOP_REQUIRED,
        )


class DPoPPolicy:
    """An API's DPoP rules, as its protector applies them to each request (RFC 9449 section 7)."""

    def __init__(
        self,
        *,
        algorithms: Sequence[str],
        max_age: int,
        leeway: int,
        required: bool,
        replay: ReplayStore,
        nonces: Nonces | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        unknown = set(algorithms) - set(SUPPORTED_ALGORITHMS)
        if unknown or not algorithms:
            raise ValueError(f"DPoP algorithms must be some of {', '.join(SUPPORTED_ALGORITHMS)}")
        self.algs = tuple(algorithms)
        self.max_age = max_age
        self.leeway = leeway
        self.required = required
        self.replay = replay
        self.nonces = nonces
        self.clock = clock

    @classmethod
    def from_config(cls, config: VerifierConfig, *, clock: Callable[[], float] = time.time) -> DPoPPolicy:
        """Build the policy a configuration describes (its replay store is opened on first use)."""
        nonces = (
            Nonces(config.dpop_nonce_secret, config.dpop_nonce_lifetime, clock) if config.dpop_nonce_secret else None
        )
        return cls(
            algorithms=config.dpop_algorithms,
            max_age=config.dpop_max_age,
            leeway=config.leeway,
            required=config.require_dpop,
            replay=open_replay_store(config.dpop_replay_path, config.resource),
            nonces=nonces,
            clock=clock,
        )

    def check_bearer(self, claims: Mapping[str, Any]) -> None:
        """Refuse a token sent as a bearer token if it is DPoP-bound, or if this API requires DPoP."""
        refuse_bound_bearer(claims, self.algs)
        if self.required:
            raise DPoPInvalidToken(
                "this API accepts only DPoP-bound tokens, as 'Authorization: DPoP <token>' with a DPoP proof",
                algs=self.algs,
                reason=Reason.DPOP_REQUIRED,
            )

    def challenge(self, refusal: InvalidToken) -> InvalidToken:
        """Return the refusal of a DPoP request's token as a `DPoP` challenge (section 7.1), reason kept."""
        if isinstance(refusal, DPoPError):
            return refusal
        return DPoPInvalidToken(refusal.description, algs=self.algs, reason=refusal.reason)

    def check_proof(self, token: str, claims: Mapping[str, Any], request: DPoPRequest | None) -> Proof:
        """Check the DPoP proof of a request made with `Authorization: DPoP <token>`."""
        if request is None:
            raise InvalidDPoPProof("this API cannot check DPoP proofs here", algs=self.algs)
        proofs = request.proofs
        # A comma is two headers a WSGI server joined into one value (RFC 9110 section 5.3): never in a JWT.
        if len(proofs) != 1 or "," in proofs[0]:
            raise InvalidDPoPProof("send exactly one DPoP header", algs=self.algs)
        jkt = bound_jkt(claims)
        if jkt is None:
            raise DPoPInvalidToken(
                "this token is not DPoP-bound (it has no cnf.jkt)", algs=self.algs, reason=Reason.DPOP_BINDING
            )
        return verify_proof(
            proofs[0].strip(),
            method=request.method,
            url=request.url,
            access_token=token,
            jkt=jkt,
            now=self.clock(),
            algs=self.algs,
            max_age=self.max_age,
            leeway=self.leeway,
            replay=self.replay,
            nonces=self.nonces,
        )
