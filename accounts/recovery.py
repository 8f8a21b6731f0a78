"""Recovery-code format and digest.

A code is 10 characters of lower-case base32 shown as `xxxxx-xxxxx` (50 bits). Only a
keyed digest is stored: HMAC-SHA256 with a key derived from SECRET_KEY over the user's id
and the normalised code, so a database dump alone does not allow an offline guess, and
equal codes of two users do not share a digest.
"""

from __future__ import annotations

import base64
import secrets

from django.utils.crypto import salted_hmac

RECOVERY_CODE_COUNT = 10
_CODE_CHARS = 10
_KEY_SALT = "latchkey.accounts.recovery-code"


def normalize_recovery_code(code: str) -> str:
    """Lower-case, without the separator or any spacing a user may type."""
    return "".join(ch for ch in code.lower() if ch.isalnum())


def new_recovery_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(8)).decode().lower()[:_CODE_CHARS]
    return f"{raw[:5]}-{raw[5:]}"


def recovery_code_digest(*, user_id: int, code: str) -> str:
    value = f"{user_id}:{normalize_recovery_code(code)}"
    return salted_hmac(_KEY_SALT, value, algorithm="sha256").hexdigest()


def looks_like_recovery_code(token: str) -> bool:
    normalized = normalize_recovery_code(token)
    return len(normalized) == _CODE_CHARS and not normalized.isdigit()
