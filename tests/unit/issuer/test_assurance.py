"""Unit tests for issuer.assurance: RFC 8176 methods and the `acr` levels they reach."""

from __future__ import annotations

import pytest

from issuer import assurance
from issuer.assurance import MULTI_FACTOR, SINGLE_FACTOR


@pytest.mark.parametrize(
    ("amr", "acr"),
    [
        (("pwd",), SINGLE_FACTOR),
        (("pwd", "otp", "mfa"), MULTI_FACTOR),
        (("hwk", "user", "mfa"), MULTI_FACTOR),
        (("otp",), SINGLE_FACTOR),  # a code alone is one factor
    ],
)
def test_the_level_follows_from_the_methods(amr: tuple[str, ...], acr: str) -> None:
    assert assurance.acr_for(amr) == acr


@pytest.mark.parametrize(
    ("acr", "wanted", "met"),
    [
        (SINGLE_FACTOR, (), True),
        (SINGLE_FACTOR, (SINGLE_FACTOR,), True),
        (SINGLE_FACTOR, (MULTI_FACTOR,), False),
        (MULTI_FACTOR, (SINGLE_FACTOR,), True),  # the stronger login meets the weaker demand
        (MULTI_FACTOR, (MULTI_FACTOR,), True),
        (SINGLE_FACTOR, ("urn:elsewhere:gold", MULTI_FACTOR), False),
        (MULTI_FACTOR, ("urn:elsewhere:gold",), False),  # an unknown level is met by nothing
        ("urn:elsewhere:gold", (SINGLE_FACTOR,), False),
    ],
)
def test_a_level_meets_a_demand_for_itself_or_weaker(acr: str, wanted: tuple[str, ...], met: bool) -> None:
    assert assurance.satisfies(acr, wanted) is met


def test_methods_are_stored_once_each_in_order_and_read_back() -> None:
    assert assurance.encode(("pwd", "otp", "mfa", "otp")) == "pwd otp mfa"
    assert assurance.decode("pwd otp mfa") == ("pwd", "otp", "mfa")
    assert assurance.decode(None) == ("pwd",)
