"""The API key format (docs/api.md, "Keys"): `<prefix>_<word>_<random><checksum>`.

- `prefix`: `settings.API_KEY_PREFIX` if set, else the catalogue's `[wire] prefix`, else `lk`;
- `word`: the environment's word, `live`, `test` or `sys` unless the catalogue's
  `[wire] environments` says otherwise (`rk_sandbox_...`);
- `random`: 32 base62 characters from `secrets`;
- `checksum`: `zlib.crc32` of the UTF-8 bytes of `<prefix>_<word>_<random>`, in base62
  (`0-9A-Za-z`, most significant digit first), left-padded with `0` to 6 characters.

`parse_key` rejects anything of the wrong shape or checksum without any I/O, so a typo or a
scanner's noise never reaches the cache or the database. It accepts any prefix and word of
the format's shape, not only today's: keys issued before the operator changed the words
keep working (ADR 0071). A key's environment is read from its stored row, never from the
word. Only `key_digest` (HMAC-SHA256 with `settings.API_KEY_PEPPER`) is ever stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from apikeys.catalogue import KEY_ENVIRONMENTS, current
from orgs.ids import BASE62

RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
ENVIRONMENTS = KEY_ENVIRONMENTS
# Longest key any configuration can produce is far below this; anything longer is noise.
MAX_KEY_LENGTH = 200
ELLIPSIS = "\u2026"


@dataclass(frozen=True)
class ParsedKey:
    prefix: str
    word: str  # the environment's word in the key (`live`, `test`, `sandbox` ...)
    body: str  # the 32 random characters
    checksum: str

    @property
    def raw(self) -> str:
        return f"{self.prefix}_{self.word}_{self.body}{self.checksum}"

    @property
    def environment(self) -> str | None:
        """The environment today's words give the key's word (None for a retired word;
        the stored row is the authority)."""
        return current().wire.environment_of_word.get(self.word)


# Every pair of base62 digits, by value (0 to 62**2 - 1): a checksum is three lookups.
_PAIRS = [a + b for a in BASE62 for b in BASE62]
_PAIR = 62 * 62


def _checksum_of(text: str) -> str:
    """The 6-character base62 CRC32 of `text` (a CRC32 is below 62**6: six digits)."""
    crc = zlib.crc32(text.encode())
    high, low = divmod(crc, _PAIR)
    top, middle = divmod(high, _PAIR)
    return _PAIRS[top] + _PAIRS[middle] + _PAIRS[low]


def checksum(prefix: str, word: str, body: str) -> str:
    """The 6-character base62 CRC32 of `<prefix>_<word>_<random>`."""
    return _checksum_of(f"{prefix}_{word}_{body}")


# Any prefix and word of the format's shape (catalogue.PREFIX_RE, catalogue.WORD_RE), in
# explicit ASCII classes: `\w` or str.isalnum() would accept non-ASCII digits/letters.
_PATTERN = re.compile(
    r"([A-Za-z][A-Za-z0-9]{0,15}(?:_[A-Za-z0-9]{1,16}){0,2})_([a-z0-9]{1,16})_"
    rf"([0-9A-Za-z]{{{RANDOM_LENGTH}}})([0-9A-Za-z]{{{CHECKSUM_LENGTH}}})"
)


def generate_secret(environment: str) -> str:
    """A new key for `environment` (`live`, `test` or `sys`), random from `secrets`,
    written with today's prefix and environment word."""
    if environment not in ENVIRONMENTS:
        raise ValueError(f"Unknown key environment {environment!r}.")
    catalogue = current()
    prefix = catalogue.prefix
    word = catalogue.wire.word(environment)
    body = "".join(secrets.choice(BASE62) for _ in range(RANDOM_LENGTH))
    return f"{prefix}_{word}_{body}{checksum(prefix, word, body)}"


def parse_key(raw: object) -> ParsedKey | None:
    """The parts of a well-formed key, or None for anything else. Never raises, no I/O."""
    if not well_formed(raw):
        return None
    assert isinstance(raw, str)
    match = _PATTERN.fullmatch(raw)
    assert match is not None
    prefix, word, body, given = match.groups()
    return ParsedKey(prefix=prefix, word=word, body=body, checksum=given)


def well_formed(raw: object) -> bool:
    """`parse_key(raw) is not None`, without building the parts (the guard's check on
    every request). Never raises, no I/O."""
    if not isinstance(raw, str) or len(raw) > MAX_KEY_LENGTH:
        return False
    if _PATTERN.fullmatch(raw) is None:
        return False
    return hmac.compare_digest(raw[-CHECKSUM_LENGTH:], _checksum_of(raw[:-CHECKSUM_LENGTH]))


try:  # CPython's own SHA-256 (3.11: `_sha256`, 3.12 on: `_sha2`); else OpenSSL's
    from _sha256 import sha256 as _sha256  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - Python 3.12 and later, or a build without it
    try:
        from _sha2 import sha256 as _sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
    except ImportError:
        _sha256 = hashlib.sha256  # type: ignore[assignment,unused-ignore]

_BLOCK = 64  # SHA-256's block size in bytes (RFC 2104's B)


def _keyed(pepper: bytes) -> tuple[Any, Any]:
    """RFC 2104's two hashes keyed with `pepper`: H(K xor ipad) and H(K xor opad), each
    fed its block and copied per key (a key longer than a block is hashed first)."""
    if len(pepper) > _BLOCK:
        pepper = _sha256(pepper).digest()
    padded = pepper.ljust(_BLOCK, b"\0")
    return (
        _sha256(bytes(byte ^ 0x36 for byte in padded)),
        _sha256(bytes(byte ^ 0x5C for byte in padded)),
    )


class _Pepper:
    """(pepper, its inner and outer hashes): made once per pepper, copied per key."""

    keyed: tuple[str, Any, Any] = ("", None, None)


_pepper = _Pepper()


def key_digest(raw: str) -> str:
    """HMAC-SHA256(API_KEY_PEPPER, key) in hex: the only form of a key that is stored.

    The HMAC is built from its definition (RFC 2104) over CPython's own SHA-256, the same
    digest as `hmac.new(pepper, key, "sha256")` (tested): copying two small hash states
    costs a guarded request less than half of what copying OpenSSL's HMAC context did
    (ADR 0098).
    """
    pepper = str(settings.API_KEY_PEPPER)
    made, inner, outer = _pepper.keyed
    if inner is None or made != pepper:
        inner, outer = _keyed(pepper.encode())
        _pepper.keyed = (pepper, inner, outer)
    inner = inner.copy()
    inner.update(raw.encode("utf-8", "surrogatepass"))
    outer = outer.copy()
    outer.update(inner.digest())
    return str(outer.hexdigest())


def display_form(raw: str) -> str:
    """`lk_live_AbCd…WxYz`: prefix, environment, first and last 4 of the random body."""
    parsed = parse_key(raw)
    if parsed is None:
        raise ValueError("Not a well-formed API key.")
    return f"{parsed.prefix}_{parsed.word}_{parsed.body[:4]}{ELLIPSIS}{parsed.body[-4:]}"
