"""Bounds on a client's RSA public key, so that checking one of its assertions costs what it should.

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
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import rsa

from jwt_verifier.jose import MIN_RSA_BITS, JwkError

EXPONENT = 65537
MAX_RSA_BITS = 4096


def check_client_key(key: rsa.RSAPublicKey) -> None:
    """Raise JwkError, saying which bound it breaks, for a key whose checks would cost too much."""
    numbers = key.public_numbers()
    if numbers.e != EXPONENT:
        raise JwkError(f"the RSA exponent must be {EXPONENT}")
    if not MIN_RSA_BITS <= numbers.n.bit_length() <= MAX_RSA_BITS:
        raise JwkError(f"the RSA modulus must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")
