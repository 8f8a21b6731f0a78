"""The key format of docs/product.md#api-keys: shape, checksum, digest, display form."""

from __future__ import annotations

import hashlib
import hmac
import string
import zlib

import pytest
from django.test import override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from apikeys.keys import (
    BASE62,
    checksum,
    display_form,
    generate_secret,
    key_digest,
    parse_key,
    well_formed,
)

ENVS = st.sampled_from(["live", "test", "sys"])


def reference_checksum(text: str) -> str:
    """The definition in docs/product.md#api-keys, written independently of the implementation."""
    n = zlib.crc32(text.encode("utf-8"))
    out = ""
    while n:
        out = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"[n % 62] + out
        n //= 62
    return out.rjust(6, "0")


def test_known_checksum_vector() -> None:
    body = "0" * 32
    # crc32(b"lk_test_000...0") in base62, padded to 6.
    assert checksum("lk", "test", body) == reference_checksum(f"lk_test_{body}")
    assert parse_key(f"lk_test_{body}{reference_checksum(f'lk_test_{body}')}") is not None


@pytest.mark.parametrize("env", ["live", "test", "sys"])
def test_generated_key_shape(env: str) -> None:
    raw = generate_secret(env)
    prefix, key_env, rest = raw.split("_", 2)
    assert (prefix, key_env) == ("lk", env)
    assert len(rest) == 38 and all(c in BASE62 for c in rest)
    parsed = parse_key(raw)
    assert parsed is not None
    assert parsed.environment == env and parsed.body == rest[:32] and parsed.checksum == rest[32:]
    assert parsed.checksum == reference_checksum(f"lk_{env}_{rest[:32]}")
    assert parsed.raw == raw


def test_unknown_environment_is_refused() -> None:
    with pytest.raises(ValueError):
        generate_secret("prod")


@override_settings(API_KEY_PREFIX="acme")
def test_prefix_comes_from_settings() -> None:
    raw = generate_secret("test")
    assert raw.startswith("acme_test_") and parse_key(raw) is not None
    # A key issued under another prefix still parses (ADR 0070): its row decides.
    with override_settings(API_KEY_PREFIX="lk"):
        parsed = parse_key(raw)
        assert parsed is not None and parsed.prefix == "acme"
        assert generate_secret("test").startswith("lk_test_")


def test_a_changed_checksum_or_shape_is_refused_whatever_the_prefix() -> None:
    raw = generate_secret("test")
    _, word, rest = raw.split("_", 2)
    body = rest[:32]
    foreign = f"zz_{word}_{body}{checksum('zz', word, body)}"
    assert parse_key(foreign) is not None  # well formed under another prefix
    assert parse_key(f"zz_{word}_{body}{rest[32:]}") is None  # checksum of another prefix
    assert parse_key(f"zz_{word.upper()}_{body}{checksum('zz', word.upper(), body)}") is None
    assert parse_key(f"_{word}_{body}{checksum('', word, body)}") is None


@settings(max_examples=300)
@given(env=ENVS)
def test_generated_keys_always_parse(env: str) -> None:
    raw = generate_secret(env)
    parsed = parse_key(raw)
    assert parsed is not None and parsed.environment == env


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=60), st.none(), st.integers()))
def test_parse_never_raises_and_accepts_only_well_formed_keys(raw: object) -> None:
    parsed = parse_key(raw)
    # The guard's check without the parts says the same.
    assert well_formed(raw) == (parsed is not None)
    if parsed is not None:
        assert isinstance(raw, str)
        assert parsed.raw == raw
        assert parsed.checksum == reference_checksum(raw[:-6])


@settings(max_examples=500)
@given(
    env=ENVS,
    body=st.text(alphabet=BASE62, min_size=32, max_size=32),
    tail=st.text(max_size=8),
)
def test_parse_accepts_exactly_the_right_checksum(env: str, body: str, tail: str) -> None:
    base = f"lk_{env}_{body}"
    good = base + reference_checksum(base)
    assert parse_key(good) is not None
    if tail:
        assert parse_key(good + tail) is None
    candidate = base + (tail + "000000")[:6]
    assert (parse_key(candidate) is not None) == (candidate == good)
    assert well_formed(candidate) == (candidate == good)


MUTATION_ALPHABET = BASE62 + "_-.:/ \u0660\uff10\u00e9!" + string.punctuation


@settings(max_examples=500)
@given(env=ENVS, body=st.text(alphabet=BASE62, min_size=32, max_size=32), data=st.data())
def test_every_single_character_mutation_is_rejected(
    env: str, body: str, data: st.DataObject
) -> None:
    raw = f"lk_{env}_{body}" + reference_checksum(f"lk_{env}_{body}")
    assert parse_key(raw) is not None
    position = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    replacement = data.draw(st.sampled_from(MUTATION_ALPHABET).filter(lambda c: c != raw[position]))
    mutated = raw[:position] + replacement + raw[position + 1 :]
    assert parse_key(mutated) is None
    # Dropping or doubling one character breaks the shape as well.
    assert parse_key(raw[:position] + raw[position + 1 :]) is None
    assert parse_key(raw[:position] + raw[position] + raw[position:]) is None


def test_case_and_whitespace_variants_are_rejected() -> None:
    raw = generate_secret("live")
    for variant in (raw.upper(), raw.swapcase(), f" {raw}", f"{raw}\n", raw + "\x00"):
        assert parse_key(variant) is None
    assert parse_key("LK" + raw[2:]) is None
    assert parse_key(raw.replace("_live_", "_prod_")) is None


def test_digest_is_hmac_sha256_with_the_pepper() -> None:
    raw = generate_secret("test")
    with override_settings(API_KEY_PEPPER="p" * 40):
        expected = hmac.new(b"p" * 40, raw.encode(), hashlib.sha256).hexdigest()
        assert key_digest(raw) == expected
        assert len(key_digest(raw)) == 64
        with override_settings(API_KEY_PEPPER="q" * 40):
            assert key_digest(raw) != expected
            assert key_digest(raw) == hmac.new(b"q" * 40, raw.encode(), hashlib.sha256).hexdigest()
        assert key_digest(raw) == expected  # the keyed HMAC follows the pepper back
    assert key_digest(raw) != hashlib.sha256(raw.encode()).hexdigest()


@pytest.mark.parametrize(
    "pepper",
    ["", "k", "p" * 63, "p" * 64, "p" * 65, "p" * 300, "pépper-ünïcode-🔑" * 5],
    ids=["empty", "one", "63", "64 (a block)", "65", "300 (hashed first)", "non-ascii"],
)
def test_digest_equals_the_standard_hmac_for_peppers_of_every_length(pepper: str) -> None:
    """The digest is built from RFC 2104's definition: it must be the standard library's
    HMAC-SHA256 bit for bit, below, at and above SHA-256's 64-byte block (a longer pepper
    is hashed first), for any key string a client can send."""
    raws = [
        generate_secret("live"),
        "",
        "x" * 200,
        "lk_live_é😀",
        "surrogate-\udc80",
    ]
    with override_settings(API_KEY_PEPPER=pepper):
        for raw in raws:
            data = raw.encode("utf-8", "surrogatepass")
            assert key_digest(raw) == hmac.new(pepper.encode(), data, hashlib.sha256).hexdigest()
            assert key_digest(raw) == key_digest(raw)  # copies, never the keyed state itself


def test_display_form_shows_prefix_env_and_four_plus_four() -> None:
    raw = generate_secret("live")
    body = raw[len("lk_live_") : len("lk_live_") + 32]
    assert display_form(raw) == f"lk_live_{body[:4]}\u2026{body[-4:]}"
    with pytest.raises(ValueError):
        display_form("lk_live_nope")
