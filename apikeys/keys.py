"""The API key format (SPEC section 5): `<prefix>_<env>_<random><checksum>`.

- `prefix`: `settings.API_KEY_PREFIX` (default `lk`);
- `env`: `live`, `test`, or `sys` (system keys);
- `random`: 32 base62 characters from `secrets`;
- `checksum`: `zlib.crc32` of the UTF-8 bytes of `<prefix>_<env>_<random>`, in base62
  (`0-9A-Za-z`, most significant digit first), left-padded with `0` to 6 characters.

`parse_key` rejects anything of the wrong shape or checksum without any I/O, so a typo or a
scanner's noise never reaches the cache or the database. Only `key_digest` (HMAC-SHA256
with `settings.API_KEY_PEPPER`) is ever stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
ENVIRONMENTS = ("live", "test", "sys")
# Longest key any configuration can produce is far below this; anything longer is noise.
MAX_KEY_LENGTH = 200
ELLIPSIS = "\u2026"


@dataclass(frozen=True)
class ParsedKey:
    prefix: str
    environment: str
    body: str  # the 32 random characters
    checksum: str

    @property
    def raw(self) -> str:
        return f"{self.prefix}_{self.environment}_{self.body}{self.checksum}"


def _base62(number: int) -> str:
    digits = []
    while number:
        number, remainder = divmod(number, 62)
        digits.append(BASE62[remainder])
    return "".join(reversed(digits))


def checksum(prefix: str, environment: str, body: str) -> str:
    """The 6-character base62 CRC32 of `<prefix>_<env>_<random>`."""
    crc = zlib.crc32(f"{prefix}_{environment}_{body}".encode())
    return _base62(crc).rjust(CHECKSUM_LENGTH, "0")


def _prefix() -> str:
    return str(settings.API_KEY_PREFIX)


@lru_cache(maxsize=8)
def _pattern(prefix: str) -> re.Pattern[str]:
    # Explicit ASCII classes: `\w` or str.isalnum() would accept non-ASCII digits/letters.
    return re.compile(
        re.escape(prefix)
        + rf"_(live|test|sys)_([0-9A-Za-z]{{{RANDOM_LENGTH}}})([0-9A-Za-z]{{{CHECKSUM_LENGTH}}})"
    )


def generate_secret(environment: str) -> str:
    """A new key for `environment` (`live`, `test` or `sys`), random from `secrets`."""
    if environment not in ENVIRONMENTS:
        raise ValueError(f"Unknown key environment {environment!r}.")
    prefix = _prefix()
    body = "".join(secrets.choice(BASE62) for _ in range(RANDOM_LENGTH))
    return f"{prefix}_{environment}_{body}{checksum(prefix, environment, body)}"


def parse_key(raw: object) -> ParsedKey | None:
    """The parts of a well-formed key, or None for anything else. Never raises, no I/O."""
    if not isinstance(raw, str) or len(raw) > MAX_KEY_LENGTH:
        return None
    prefix = _prefix()
    match = _pattern(prefix).fullmatch(raw)
    if match is None:
        return None
    environment, body, given = match.groups()
    if not hmac.compare_digest(given, checksum(prefix, environment, body)):
        return None
    return ParsedKey(prefix=prefix, environment=environment, body=body, checksum=given)


def key_digest(raw: str) -> str:
    """HMAC-SHA256(API_KEY_PEPPER, key) in hex: the only form of a key that is stored."""
    pepper = str(settings.API_KEY_PEPPER).encode()
    return hmac.new(pepper, raw.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def display_form(raw: str) -> str:
    """`lk_live_AbCd…WxYz`: prefix, environment, first and last 4 of the random body."""
    parsed = parse_key(raw)
    if parsed is None:
        raise ValueError("Not a well-formed API key.")
    return f"{parsed.prefix}_{parsed.environment}_{parsed.body[:4]}{ELLIPSIS}{parsed.body[-4:]}"
