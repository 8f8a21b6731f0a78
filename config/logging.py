"""Log output never carries a sign-in or invitation token (SPEC 15).

Their links are `/login/magic/<token>/` and `/invitations/<token>/`; a request line, an
error line (`Forbidden (CSRF token missing.): /login/magic/…/`) or a traceback could carry
one. `ScrubbingFormatter` formats a record as usual, then replaces every such token.
"""

from __future__ import annotations

import logging
import re

_TOKEN_PATHS = re.compile(r"(/login/magic/|/invitations/)(?!id/)[A-Za-z0-9_-]{16,}")
REDACTED = "[redacted]"


def scrub(text: str) -> str:
    """`text` with every sign-in and invitation token replaced by `[redacted]`."""
    return _TOKEN_PATHS.sub(r"\1" + REDACTED, text)


class ScrubbingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))
