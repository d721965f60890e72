"""DPoP (RFC 9449) at the token endpoint: proofs checked, tokens bound to the client's key.

A token request may carry one `DPoP` header (section 5). Its proof is checked by the verifier
library's `jwt_verifier.dpop.verify_proof` (section 4.3: `typ`, an asymmetric algorithm, a
public key only, the signature, `htm` POST, `htu` the token endpoint's public URL, a fresh
`iat`) and remembered in `dpop_proofs`, a table every worker and replica of one database shares,
so that no proof is accepted twice (section 11.1). The request then gets a DPoP-bound access
token: `cnf.jkt`, the key's RFC 7638 thumbprint, and `token_type` `DPoP`.

Server nonces (section 8; `ISSUER_DPOP_NONCE` for every client, `--require-dpop-nonce` for
one) are stateless: a time period and its HMAC under a key derived from the key-encryption
key, which every replica shares; a nonce is good in its period and the next, so every worker
accepts what any other handed out.

A client registered with `--require-dpop` gets no token without a proof, nor does any client
asking for a token for an API registered with `apis add --require-dpop` (`check_api`).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from flask import Flask, current_app, g, request
from sqlalchemy import delete

from issuer.apis import Api
from issuer.clients import Client
from issuer.db import Database, dpop_proofs, insert_missing
from issuer.protocol import InvalidDPoPProof, UseDPoPNonce
from jwt_verifier.dpop import SUPPORTED_ALGORITHMS, Nonces, verify_proof
from jwt_verifier.errors import InvalidDPoPProof as ProofRefused
from jwt_verifier.errors import UseDPoPNonce as NonceMissing

MAX_AGE = 60  # seconds a proof's `iat` may be old
LEEWAY = 5  # seconds of clock difference allowed either way
NONCE = "dpop-nonce"  # the purpose the nonce key is derived for
# A `dpop_jkt` (section 10): a base64url SHA-256 thumbprint, 43 characters.
JKT = re.compile(r"[A-Za-z0-9_-]{43}")


class DPoPProofs:
    """The proofs accepted at the token endpoint, in the issuer's database (owner of `dpop_proofs`).

    A `jwt_verifier.replay.ReplayStore`: the table's key makes the second insert of a proof
    fail, on SQLite and PostgreSQL, whichever worker or replica makes it.
    """

    def __init__(self, database: Database) -> None:
        self.database = database

    def add(self, key: str, expires: float, now: float) -> bool:
        """Remember a proof until `expires`; return False if it was accepted before and is not expired."""
        values = {"key_hash": key, "expires_at": math.ceil(expires)}
        # In the token request's transaction, and spent even when the request then fails.
        with self.database.transaction() as conn:
            conn.execute(delete(dpop_proofs).where(dpop_proofs.c.expires_at < math.floor(now)))
            if not insert_missing(conn, dpop_proofs, values):
                return False
        self.database.redo_on_rollback(lambda conn: insert_missing(conn, dpop_proofs, values))
        return True


@dataclass(frozen=True)
class TokenEndpointDPoP:
    """How the token endpoint checks proofs: where they are remembered, its nonces, and whether every client needs one."""

    proofs: DPoPProofs
    nonces: Nonces
    nonce_required: bool = False
    algorithms: tuple[str, ...] = SUPPORTED_ALGORITHMS

    def check(self, headers: list[str], url: str, client: Client) -> str | None:
        """Return the thumbprint of the key the request's proof is signed with; None without a proof.

        Raise `InvalidDPoPProof` for a refused proof, several `DPoP` headers, or no proof from
        a client that requires DPoP; `UseDPoPNonce` when the proof lacks a current nonce and
        nonces are required (of every client, or of this one).
        """
        if not headers:
            if client.require_dpop:
                raise InvalidDPoPProof("this client's tokens are DPoP-bound: send a DPoP proof (RFC 9449)")
            return None
        # Section 4.3 check 1. Two header lines reach the app joined by a comma (RFC 9110 section
        # 5.3), and no compact JWS holds one: either way it is not exactly one proof.
        if len(headers) != 1 or "," in headers[0]:
            raise InvalidDPoPProof("send exactly one DPoP header")
        try:
            proof = verify_proof(
                headers[0].strip(),
                method="POST",
                url=url,
                access_token=None,
                jkt=None,
                now=time.time(),
                algs=self.algorithms,
                max_age=MAX_AGE,
                leeway=LEEWAY,
                replay=self.proofs,
                nonces=self.nonces if self.needs_nonce(client) else None,
            )
        except NonceMissing as exc:
            raise UseDPoPNonce(self.nonces.current()) from exc
        except ProofRefused as exc:
            raise InvalidDPoPProof(exc.description) from exc
        return proof.jkt

    def needs_nonce(self, client: Client) -> bool:
        """Return whether `client`'s proofs must carry a nonce: every client's do with ISSUER_DPOP_NONCE."""
        return self.nonce_required or client.require_dpop_nonce

    def nonce_headers(self, client: Client) -> dict[str, str]:
        """Return the `DPoP-Nonce` header of a response to `client` when it needs nonces (section 8.2), else none."""
        return {"DPoP-Nonce": self.nonces.current()} if self.needs_nonce(client) else {}


def init_app(
    app: Flask, database: Database, *, nonce_secret: str, nonce_lifetime: int, nonce_required: bool = False
) -> None:
    """Keep the token endpoint's DPoP checks on the app; with `nonce_required`, every client's proofs need a nonce."""
    nonces = Nonces(nonce_secret, nonce_lifetime)
    app.extensions["issuer.dpop"] = TokenEndpointDPoP(DPoPProofs(database), nonces, nonce_required)


def current() -> TokenEndpointDPoP:
    """Return the DPoP checks of the app handling this request."""
    checks: TokenEndpointDPoP = current_app.extensions["issuer.dpop"]
    return checks


def check_token_request(client: Client, token_endpoint: str) -> str | None:
    """Check the `DPoP` header of the token request being handled; keep and return the key's thumbprint."""
    jkt = current().check(request.headers.getlist("DPoP"), token_endpoint, client)
    g.dpop_jkt = jkt
    g.dpop_nonce = current().nonce_headers(client)
    return jkt


def nonce_headers() -> dict[str, str]:
    """Return the `DPoP-Nonce` header of the token response being made, if its client needs nonces."""
    headers: dict[str, str] = g.get("dpop_nonce") or {}
    return headers


def presented() -> str | None:
    """Return the thumbprint of the DPoP key the token request being handled proved, if any."""
    jkt: str | None = g.get("dpop_jkt")
    return jkt


def bound_to(client: Client) -> str | None:
    """Return the key a public client's refresh token is bound to (section 5); confidential clients authenticate."""
    return presented() if client.auth_method == "none" else None


def check_api(api: Api) -> None:
    """Refuse a token for an API registered to require DPoP (`apis add --require-dpop`) unless the request proved a key.

    RFC 9449 section 5: the missing proof is what is wrong with the request, so the answer is
    `invalid_dpop_proof` (as for a client registered with `--require-dpop`, section 5.2), which
    a DPoP-capable client answers by sending one; `invalid_request` would not tell it that.
    """
    if api.require_dpop and presented() is None:
        raise InvalidDPoPProof(f"tokens for API {api.audience!r} are DPoP-bound only: send a DPoP proof (RFC 9449)")
