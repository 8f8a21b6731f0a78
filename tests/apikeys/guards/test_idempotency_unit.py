"""The idempotency building blocks: header forms, fingerprints, sealed bodies."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag

from apikeys import idempotency
from apikeys.idempotency import (
    INVALID,
    MISSING,
    IdempotencyError,
    fingerprint,
    parse_header,
    seal,
    unseal,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("abc", "abc"),
        ('"abc"', "abc"),
        ("  order-42  ", "order-42"),
        ('"with \\"quote\\" and \\\\"', 'with "quote" and \\'),
        ("x" * 255, "x" * 255),
        ('"' + "y" * 255 + '"', "y" * 255),
        ("a b~!", "a b~!"),
    ],
)
def test_plain_and_quoted_forms_are_accepted(raw: str, expected: str) -> None:
    assert parse_header(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        '""',
        "x" * 256,
        '"' + "y" * 256 + '"',
        "caf\u00e9",
        "tab\there",
        "nul\x00",
        '"unterminated',
        '"bad \\n escape"',
        '"inner " quote"',
    ],
)
def test_empty_overlong_or_unprintable_keys_are_invalid(raw: str) -> None:
    with pytest.raises(IdempotencyError) as caught:
        parse_header(raw)
    assert caught.value.code == INVALID and caught.value.status == 400


def test_a_missing_header_is_its_own_error() -> None:
    with pytest.raises(IdempotencyError) as caught:
        parse_header(None)
    assert caught.value.code == MISSING and caught.value.status == 400


def test_fingerprint_covers_method_path_and_canonical_body() -> None:
    base = fingerprint("POST", "/api/v1/api-keys", b'{"name": "a", "scopes": []}')
    assert base == fingerprint("post", "/api/v1/api-keys", b'{"scopes":[],"name":"a"}')
    assert base != fingerprint("PATCH", "/api/v1/api-keys", b'{"name": "a", "scopes": []}')
    assert base != fingerprint("POST", "/api/v1/members", b'{"name": "a", "scopes": []}')
    assert base != fingerprint("POST", "/api/v1/api-keys", b'{"name": "b", "scopes": []}')
    assert fingerprint("POST", "/p", b"not json") != fingerprint("POST", "/p", b"not  json")
    assert fingerprint("DELETE", "/p", b"") == fingerprint("DELETE", "/p", b"  ")


def test_sealed_bodies_open_only_with_the_same_api_key_and_idempotency_key() -> None:
    secret = "lk_test_" + "A" * 38
    sealed = seal(
        b'{"secret": "s3cr3t"}', api_key_secret=secret, idempotency_key="k1", associated=b"fp"
    )
    assert b"s3cr3t" not in sealed
    opened = unseal(sealed, api_key_secret=secret, idempotency_key="k1", associated=b"fp")
    assert opened == b'{"secret": "s3cr3t"}'
    for other in (
        {"api_key_secret": secret[:-1] + "B", "idempotency_key": "k1", "associated": b"fp"},
        {"api_key_secret": secret, "idempotency_key": "k2", "associated": b"fp"},
        {"api_key_secret": secret, "idempotency_key": "k1", "associated": b"other"},
    ):
        with pytest.raises(InvalidTag):
            unseal(sealed, **other)  # type: ignore[arg-type]


def test_only_a_hash_of_the_key_is_kept() -> None:
    assert idempotency.key_hash("order-42") != "order-42"
    assert len(idempotency.key_hash("order-42")) == 64
