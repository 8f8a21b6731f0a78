"""Invitation link tokens: random from `secrets`, only their SHA-256 is ever stored."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_BYTES = 32


def new_invitation_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def invitation_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
