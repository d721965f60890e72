"""A client's public keys: bounds that keep an assertion check cheap, and keys fetched from JWKS URLs.

An RSA signature check costs about one modular multiplication per bit of the public exponent,
each growing with the square of the modulus: a key with a 1000-bit exponent makes every
assertion check about 50 times dearer than one with e = 65537, and a 16384-bit modulus about 60
times. Assertions come from anyone who names the client, so the key's owner would set the
price of every unauthenticated request for it. The bounds:

| part     | rule                                                                          |
| -------- | ----------------------------------------------------------------------------- |
| exponent | exactly 65537 (what every current generator makes; NIST SP 800-56B requires at least 65537) |
| modulus  | 2048 to 4096 bits (RFC 7518 section 3.3: at least 2048)                        |

Checked at registration (`clients add --jwks-file`) and for every key used, whether
registered or fetched from a client's JWKS URL.

`RemoteKeys` fetches the keys of clients registered by JWKS URL.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict

from cryptography.hazmat.primitives.asymmetric import rsa

from jwt_verifier.config import VerifierConfig
from jwt_verifier.errors import JwkError, KeysUnavailable
from jwt_verifier.jose import MIN_RSA_BITS
from jwt_verifier.jwks import JwksClient

EXPONENT = 65537
MAX_RSA_BITS = 4096


def check_client_key(key: rsa.RSAPublicKey) -> None:
    """Raise JwkError, saying which bound it breaks, for a key whose checks would cost too much."""
    numbers = key.public_numbers()
    if numbers.e != EXPONENT:
        raise JwkError(f"the RSA exponent must be {EXPONENT}")
    if not MIN_RSA_BITS <= numbers.n.bit_length() <= MAX_RSA_BITS:
        raise JwkError(f"the RSA modulus must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")


class FetchUnderWay(KeysUnavailable):
    """Another request's fetch of the JWKS URL the key would come from outlasted the wait."""


class RemoteKeys:
    """The public keys of clients registered by JWKS URL, each URL fetched by its own hardened client.

    The verifier library's JWKS client does the fetching, with the resource's hardening: size
    limits, no redirects, `Cache-Control`, a cooldown for unknown kids. It reads each answer
    whole, headers and body, within `timeout` seconds (the verifier's JWKS timeout unless
    given; `jwt_verifier.deadline`), so a URL that trickles its answer holds a request for at
    most that long. One fetch per URL at a time: a request that needs a key while another
    request fetches the same URL waits for that fetch, at most `timeout` seconds (then
    `FetchUnderWay`, so `invalid_client`), and uses what it brought. At most `MAX_URLS` are
    kept; the least recently used goes first.
    """

    MAX_URLS = 256

    def __init__(self, issuer: str, timeout: float | None = None) -> None:
        self.issuer = issuer
        self.timeout = timeout
        self._clients: OrderedDict[str, tuple[JwksClient, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, uri: str, kid: str) -> rsa.RSAPublicKey:
        """Return the key `kid` of the JWKS at `uri`, or raise UnknownKey or VerificationUnavailable."""
        with self._lock:
            entry = self._clients.pop(uri, None)
            if entry is None:
                config = VerifierConfig(
                    self.issuer, "client-assertions", self.issuer, jwks_url=uri, jwks_prefetch=False
                )
                if self.timeout is not None:
                    config = dataclasses.replace(config, jwks_timeout=self.timeout)
                entry = (JwksClient(config), threading.Lock())
            self._clients[uri] = entry
            while len(self._clients) > self.MAX_URLS:
                self._clients.popitem(last=False)
        client, fetching = entry
        if kid in client.kids:
            return client.get(kid)  # held: no fetch on this request's path
        # A fetch under way ends within `timeout`; waiting that long shares its answer (a client's
        # workers starting together all get keys), and nobody waits longer whatever happens.
        if not fetching.acquire(timeout=client.timeout):
            raise FetchUnderWay("another request is fetching this client's JWKS")
        try:
            return client.get(kid)
        finally:
            fetching.release()
