"""Log output never carries a sign-in or invitation token (docs/product.md#reliability).

Their links are `/login/magic/<token>/` and `/invitations/<token>/`; a request line, an
error line (`Forbidden (CSRF token missing.): /login/magic/…/`) or a traceback could carry
one. `ScrubbingFormatter` formats a record as usual, then replaces every such token; it
formats every handler of the Django settings' LOGGING, the development server's request
lines (`django.server`) included. gunicorn's own access and error logs go through
`config.gunicorn_logging.ScrubbingLogger` (set in tools/gunicorn.conf.py).
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


class ScrubbingFilter(logging.Filter):
    """Scrubs a record's message in place, for loggers whose formatters are not ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
