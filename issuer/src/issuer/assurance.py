"""What a login proved: RFC 8176 authentication methods (`amr`) and the levels (`acr`) they reach.

A login session records the methods its user proved (`amr`, RFC 8176 section 2); the level of
assurance (`acr`, OpenID Connect Core 1.0 section 2) follows from them, here and nowhere else:

- `single-factor`: one factor, a password (`pwd`).
- `multi-factor`: two factors (`mfa`): a password and a one-time code (`pwd otp mfa`), or a
  passkey with user verification (`hwk` or `swk`, `user`, `mfa`), which proves possession of a
  key and the user's PIN or biometric at once.

The levels are ordered: a `multi-factor` login satisfies a request for `single-factor` too
(`satisfies`), as RFC 9470 section 3's `acr_values` and an API's step-up demand expect.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

SINGLE_FACTOR = "single-factor"
MULTI_FACTOR = "multi-factor"
ACR_VALUES_SUPPORTED = (SINGLE_FACTOR, MULTI_FACTOR)  # weakest first

# RFC 8176 section 2: the values this issuer can put in `amr`.
PASSWORD = ("pwd",)
PASSWORD_AND_CODE = ("pwd", "otp", "mfa")
AMR_VALUES = frozenset({"pwd", "otp", "hwk", "swk", "user", "mfa"})


def acr_for(amr: Collection[str]) -> str:
    """Return the level of assurance a login with these methods reached."""
    return MULTI_FACTOR if "mfa" in amr else SINGLE_FACTOR


def satisfies(acr: str, wanted: Collection[str]) -> bool:
    """Return whether a login at level `acr` meets a demand for any of the `wanted` levels.

    An empty demand is met by any login; a level this issuer does not know meets nothing.
    """
    if not wanted:
        return True
    if acr not in ACR_VALUES_SUPPORTED:
        return False
    rank = ACR_VALUES_SUPPORTED.index(acr)
    return any(level in ACR_VALUES_SUPPORTED and ACR_VALUES_SUPPORTED.index(level) <= rank for level in wanted)


def encode(amr: Sequence[str]) -> str:
    """Return the methods as stored with a login session: space-separated, in the order given."""
    unknown = set(amr) - AMR_VALUES
    if not amr or unknown:
        raise ValueError(f"not RFC 8176 methods this issuer uses: {sorted(unknown) or 'none given'}")
    return " ".join(dict.fromkeys(amr))


def decode(stored: str | None) -> tuple[str, ...]:
    """Return the methods stored with a login session (`pwd` for a session older than this column)."""
    return tuple(stored.split()) if stored else PASSWORD
