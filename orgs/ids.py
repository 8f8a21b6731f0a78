"""Opaque public identifiers: a type prefix and 24 random base62 characters.

Database integers never leave the service; every resource the API or a URL names carries
one of these (`org_…`, `mem_…`, `evt_…`, `key_…`, `kyc_…`).
"""

from __future__ import annotations

import re
import secrets
import string

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
PUBLIC_ID_LENGTH = 24

# Every public id the service accepts, in a URL (the `pid` path converter, ADR 0074) or a
# query or form value: a 2-8 letter type prefix, "_", 1-40 base62 characters. Checking
# the shape first keeps NUL bytes and overlong values away from the database.
PUBLIC_ID_PATTERN = r"[a-z]{2,8}_[0-9A-Za-z]{1,40}"
_PUBLIC_ID_RE = re.compile(PUBLIC_ID_PATTERN)


def new_public_id(prefix: str) -> str:
    return f"{prefix}_" + "".join(secrets.choice(BASE62) for _ in range(PUBLIC_ID_LENGTH))


def is_public_id(value: str, *, prefix: str) -> bool:
    """Whether `value` has the shape of a public id of type `prefix` (`evt`, `mem`, ...)."""
    return value.startswith(f"{prefix}_") and _PUBLIC_ID_RE.fullmatch(value) is not None


# Model field defaults: plain module-level functions, so migrations can reference them.
def new_org_id() -> str:
    return new_public_id("org")


def new_membership_id() -> str:
    return new_public_id("mem")


def new_event_id() -> str:
    return new_public_id("evt")


def new_invitation_id() -> str:
    return new_public_id("inv")
