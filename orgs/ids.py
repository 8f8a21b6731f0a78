"""Opaque public identifiers: a type prefix and 24 random base62 characters.

Database integers never leave the service; every resource the API or a URL names carries
one of these (`org_…`, `mem_…`, `evt_…`, `key_…`, `kyc_…`).
"""

from __future__ import annotations

import secrets
import string

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
PUBLIC_ID_LENGTH = 24


def new_public_id(prefix: str) -> str:
    return f"{prefix}_" + "".join(secrets.choice(BASE62) for _ in range(PUBLIC_ID_LENGTH))


# Model field defaults: plain module-level functions, so migrations can reference them.
def new_org_id() -> str:
    return new_public_id("org")


def new_membership_id() -> str:
    return new_public_id("mem")


def new_event_id() -> str:
    return new_public_id("evt")


def new_invitation_id() -> str:
    return new_public_id("inv")
