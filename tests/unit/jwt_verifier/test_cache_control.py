"""Unit tests for jwt_verifier.cache_control: the JWKS response's freshness (RFC 9111 section 5.2.2)."""

from __future__ import annotations

import pytest

from jwt_verifier.cache_control import CacheControl, parse_cache_control


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, CacheControl()),
        ("", CacheControl()),
        ("max-age=300", CacheControl(max_age=300)),
        ("public, max-age=600", CacheControl(max_age=600)),
        ("MAX-AGE=60 , must-revalidate", CacheControl(max_age=60)),
        ('max-age="120"', CacheControl(max_age=120)),
        ("no-store", CacheControl(no_store=True)),
        ("no-cache", CacheControl(no_cache=True)),
        ('no-cache="set-cookie", max-age=60', CacheControl(max_age=60, no_cache=True)),
        ("private, no-store, max-age=60", CacheControl(max_age=60, no_store=True)),
        ("s-maxage=10, max-age=20", CacheControl(max_age=20)),
        ("max-age=0", CacheControl(max_age=0)),
    ],
)
def test_directives_are_read(header: str | None, expected: CacheControl) -> None:
    assert parse_cache_control(header) == expected


@pytest.mark.parametrize(
    "header",
    ["max-age=", "max-age=-5", "max-age=1e3", "max-age=12abc", "max-age= 5", "max-age=٣", "max-age=+5", "max-age"],
)
def test_an_unreadable_max_age_is_ignored(header: str) -> None:
    assert parse_cache_control(header) == CacheControl()


def test_the_first_max_age_wins_and_a_huge_one_is_capped() -> None:
    assert parse_cache_control("max-age=10, max-age=20").max_age == 10
    assert parse_cache_control("max-age=" + "9" * 40).max_age == 2**31


def test_a_long_header_does_not_take_long() -> None:
    assert parse_cache_control("x," * 50_000 + "max-age=7").max_age == 7
